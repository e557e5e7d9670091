"""A measurement as one file: a Zarr v3 group in a zip.

`measurement.zarr.zip` holds the group's attributes (key, coordinates,
configuration difference, decoder report), `summary` (a 2-D float64 array,
one row per summary column, one column per readout slot), `raw` (the run's
bytes, zstd) and, in events mode, `events/<column>`. Any Zarr v3 reader opens
it: `zarr.open_group(zarr.storage.ZipStore(path, mode="r"))`.

Why a zip: a measurement is then one file (with the manifest, two) instead of
six files in three folders, so a 131,072-point scan is 262,144 files, and
every member carries a CRC-32 that the reader checks, so a flipped bit is
caught on every read, not only by `raff cache verify`.

Reading the summary of every point is the hot path of dataset assembly, and
zarr-python spends ~1.4 ms of Python per small zip group there (7x the
time of the read itself; `benchmarks/bench_store.py` prints both). So
`read_member` reads a member straight from the zip for the codecs written
here (bytes + zstd), and hands any other codec chain to zarr-python.

Writing is on the acquisition path, once per point, and zarr-python's
array creation and store round trips cost ~5 ms of Python there, as much
as decoding and summarising the run. So `write` takes each array's
`zarr.json` from zarr-python (made once per shape and cached), writes the
group's (three keys) itself, encodes the chunks with the same
numcodecs zstd zarr-python uses, and zips the members as zarr-python's
ZipStore does. `write_with_zarr` makes the same file through zarr-python's
API: tests check that zarr-python reads both alike, and
`benchmarks/bench_store.py` prints both times.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

FILE = "measurement.zarr.zip"
LEVEL = 1


class PointFileError(ValueError):
    pass


@lru_cache(maxsize=1)
def _zstd():
    import numcodecs

    return numcodecs.Zstd(level=LEVEL)


def compress(data: bytes) -> bytes:
    """The raw bytes' zstd frame, as the `raw` array stores it (releases the GIL)."""
    return _zstd().encode(data)


def write(path: Path, attributes: dict, summary: np.ndarray, raw_packed: bytes, raw_size: int,
          events: dict[str, np.ndarray] | None = None, columns: tuple[list, list] = ([], []),
          default=None) -> tuple[int, str]:
    """Write the group as one zip; (size, sha256) of the file.

    `raw_packed` is `compress(raw)`, stored as `raw`'s chunk; `default`
    encodes attribute values JSON lacks. The zip is made in memory and
    written in one call, so its digest costs no second read.
    """
    table = np.ascontiguousarray(summary, dtype="<f8")
    members = [("zarr.json", _group_json(attributes, default))]
    members += _array("summary", table, {"columns": columns[0], "dtypes": columns[1]})
    members.append(("raw/zarr.json", _array_json((raw_size,), "|u1", "{}")))
    if raw_size:
        members.append(("raw/c/0", raw_packed))
    if events is not None:
        members.append(("events/zarr.json", _group_json({})))
        for name, values in events.items():
            members += _array(f"events/{name}", np.ascontiguousarray(values), {})
    data = _zip(members)
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write: {exc.strerror or exc}", str(path)) from None
    return len(data), hashlib.sha256(data).hexdigest()


def _array(name: str, values: np.ndarray, attributes: dict) -> list[tuple[str, bytes]]:
    """The metadata and single chunk (bytes + zstd) of one array; no chunk when it is empty."""
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    meta = (f"{name}/zarr.json", _array_json(values.shape, values.dtype.str, json.dumps(attributes)))
    if not values.size:
        return [meta]
    key = f"{name}/c/" + "/".join(["0"] * values.ndim)
    return [meta, (key, _zstd().encode(values.tobytes()))]


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    """A stored (uncompressed) zip of the members, each as zarr-python's ZipStore writes it."""
    buffer = io.BytesIO()
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def _group_json(attributes: dict, default=None) -> bytes:
    """A group's `zarr.json` (the v3 spec's three keys, as zarr-python orders them).

    Unindented, unlike zarr-python's: indented JSON is encoded by Python's
    pure-Python encoder, ~1 ms for a point's attributes (its whole daq
    configuration); `default` turns what JSON lacks (numpy scalars) into JSON.
    """
    doc = {"attributes": attributes, "zarr_format": 3, "node_type": "group"}
    return json.dumps(doc, allow_nan=True, default=default).encode()


@lru_cache(maxsize=64)
def _array_json(shape: tuple, dtype: str, attributes: str) -> bytes:
    """`zarr.json` of a single-chunk bytes + zstd array, as zarr-python makes it.

    zarr-python's array creation costs ~1 ms of Python; a scan's points share
    a few shapes, so each document is made once per process.
    """
    import zarr
    from zarr.codecs import ZstdCodec
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    array = zarr.create_array(MemoryStore(), shape=shape, dtype=np.dtype(dtype),
                              chunks=tuple(max(n, 1) for n in shape), compressors=ZstdCodec(level=LEVEL),
                              attributes=json.loads(attributes))
    return array.metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()


def write_with_zarr(path: Path, attributes: dict, summary: np.ndarray, raw_packed: bytes, raw_size: int,
                    events: dict[str, np.ndarray] | None = None, columns: tuple[list, list] = ([], [])) -> None:
    """The same file through zarr-python's own API: the reference `write` is tested and measured against."""
    import zarr
    from zarr.codecs import ZstdCodec
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import ZipStore

    store = ZipStore(path, mode="w")
    try:
        group = zarr.open_group(store=store, mode="w", attributes=attributes)
        codec = ZstdCodec(level=LEVEL)
        table = np.ascontiguousarray(summary, dtype="<f8")
        group.create_array("summary", data=table, chunks=table.shape, compressors=codec,
                           attributes={"columns": columns[0], "dtypes": columns[1]})
        group.create_array("raw", shape=(raw_size,), dtype="uint8", chunks=(max(raw_size, 1),),
                           compressors=codec, fill_value=0)
        if raw_size:
            sync(store.set("raw/c/0", default_buffer_prototype().buffer.from_bytes(raw_packed)))
        if events is not None:
            sub = group.create_group("events")
            for name, values in events.items():
                values = np.ascontiguousarray(values)
                sub.create_array(name, data=values, chunks=(max(len(values), 1),), compressors=codec)
    finally:
        store.close()


def open_group(path: Path):
    """The measurement as a zarr-python group (read-only); close its `.store` when done."""
    import zarr
    from zarr.storage import ZipStore

    return zarr.open_group(store=ZipStore(path, mode="r"), mode="r")


def read_attributes(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return _json(zf, "zarr.json").get("attributes", {})


def read_summary(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(column names, their dtypes, summary table) of one measurement, every member's CRC checked.

    The names are in the `summary` array's own attributes: a small read, where
    the group's attributes carry the whole configuration difference."""
    with zipfile.ZipFile(path) as zf:
        table = read_member(zf, path, "summary")
        attributes = _json(zf, "summary/zarr.json").get("attributes") or {}
        if "columns" not in attributes:  # written before the names moved to the array
            attributes = _json(zf, "zarr.json").get("attributes", {})
            return attributes["summary_columns"], attributes["summary_dtypes"], table
        return attributes["columns"], attributes["dtypes"], table


def read_events(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = [n[len("events/"):-len("/zarr.json")] for n in zf.namelist()
                 if n.startswith("events/") and n.endswith("/zarr.json") and n.count("/") == 2]
        return {name: read_member(zf, path, f"events/{name}") for name in sorted(names)}


def check(path: Path) -> None:
    """Read and decode every array of the file (each member's CRC checked); raises if one fails."""
    with zipfile.ZipFile(path) as zf:
        arrays = [n[:-len("/zarr.json")] for n in zf.namelist()
                  if n.endswith("/zarr.json") and _json(zf, n).get("node_type") == "array"]
        for name in arrays:
            read_member(zf, path, name)


def read_raw(path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return read_member(zf, path, "raw").tobytes()


def read_member(zf: zipfile.ZipFile, path: Path, name: str) -> np.ndarray:
    """One single-chunk array of the group; zipfile checks the member's CRC-32 as it reads."""
    meta = _json(zf, f"{name}/zarr.json")
    return _decode(zf, path, name, meta)


def _decode(zf: zipfile.ZipFile, path: Path, name: str, meta: dict) -> np.ndarray:
    shape = tuple(meta.get("shape") or ())
    codecs = [c.get("name") for c in meta.get("codecs", [])]
    dtype = np.dtype(meta.get("data_type", "?"))  # zarr v3 names are numpy names
    chunk = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    little = (meta.get("codecs") or [{}])[0].get("configuration", {}).get("endian", "little") == "little"
    if codecs not in (["bytes"], ["bytes", "zstd"]) or any(c < n for c, n in zip(chunk, shape)) \
            or not little:
        return _read_with_zarr(path, name)
    if not all(shape):
        return np.zeros(shape, dtype=dtype)
    key = f"{name}/c/" + "/".join(["0"] * len(shape))
    try:
        data = zf.read(key)
    except KeyError:
        return np.full(shape, meta.get("fill_value", 0), dtype=dtype)
    if codecs[-1] == "zstd":
        data = _zstd().decode(data)
    values = np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(chunk)
    return values[tuple(slice(0, n) for n in shape)].astype(dtype, copy=False)


def _read_with_zarr(path: Path, name: str) -> np.ndarray:
    group = open_group(path)
    try:
        return group[name][...]
    finally:
        group.store.close()


def _json(zf: zipfile.ZipFile, name: str) -> dict:
    try:
        doc = json.loads(zf.read(name))
    except KeyError:
        raise PointFileError(f"no {name} in the measurement file") from None
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3:
        raise PointFileError(f"{name} is not Zarr v3 metadata")
    return doc
