"""Zarr v3 groups and arrays, read and written directly.

The layout is plain Zarr v3, so zarr-python (and any v3 reader) opens what is
written here, and what zarr-python writes in the same layout is read here.
Every array is a single chunk, stored with the `bytes` codec, optionally
followed by `zstd`; its chunk is the file `0` (`0.0` in 2-D) beside its
`zarr.json` ("v2" chunk keys). A group's `zarr.json` carries consolidated metadata, so a group
is read with one JSON read and one file per array.

zarr-python needs ~35 ms to write and ~19 ms to read a 21-column table: more
than the measurement itself. These direct writes take one file per array and
no per-array Python machinery.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

ZARR_JSON = "zarr.json"
_DTYPES = {"bool": np.bool_, "int8": np.int8, "int16": np.int16, "int32": np.int32,
           "int64": np.int64, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32,
           "uint64": np.uint64, "float32": np.float32, "float64": np.float64}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class ZarrFormatError(ValueError):
    pass


@lru_cache(maxsize=4)
def _zstd(level: int = 1):
    import numcodecs

    return numcodecs.Zstd(level=level)


def compress(data: bytes) -> bytes:
    """The zstd codec of compressed arrays (releases the GIL: fine in a thread)."""
    return _zstd().encode(data)


@lru_cache(maxsize=256)
def array_metadata(dtype: np.dtype, shape: tuple[int, ...], compressed: bool) -> str:
    """The `zarr.json` of a single-chunk array, as JSON text."""
    if dtype not in _NAMES:
        raise ZarrFormatError(f"cannot store dtype {dtype}")
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if compressed:
        codecs.append({"name": "zstd", "configuration": {"level": 1, "checksum": False}})
    fill = False if dtype == np.bool_ else (0.0 if dtype.kind == "f" else 0)
    return json.dumps({
        "zarr_format": 3, "node_type": "array", "shape": list(shape), "data_type": _NAMES[dtype],
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [max(n, 1) for n in shape]}},
        "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "."}},
        "fill_value": fill, "codecs": codecs, "attributes": {}, "storage_transformers": []})


def write_file(path: str, data: bytes, digests: dict | None = None) -> None:
    """Write all of `data` (os.write may write less); an error names the file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write: {exc.strerror}", str(path)) from None
    if digests is not None:  # hashed from memory: no second read of the file
        digests[path] = (len(data), hashlib.sha256(data).hexdigest())


def write_array(folder: str | Path, values: np.ndarray | None = None, compressed: bool = False,
                digests: dict | None = None,
                encoded: tuple[np.dtype, tuple[int, ...], bytes] | None = None) -> str:
    """Write one array at `folder`; its metadata JSON. `encoded`: (dtype, shape, chunk bytes)."""
    if encoded is not None:
        dtype, shape, data = np.dtype(encoded[0]), tuple(encoded[1]), encoded[2]
        compressed = True
    else:
        values = np.ascontiguousarray(values)
        if values.dtype.byteorder == ">":
            values = values.astype(values.dtype.newbyteorder("<"))
        dtype, shape, data = np.dtype(values.dtype), tuple(values.shape), values.tobytes()
        if compressed and data:
            data = compress(data)
    meta = array_metadata(dtype, shape, compressed)
    folder = str(folder)
    os.mkdir(folder)
    write_file(os.path.join(folder, ZARR_JSON), meta.encode(), digests)
    if all(shape):  # the single chunk's "v2" key: "0", "0.0", ...
        write_file(os.path.join(folder, ".".join(["0"] * len(shape))), data, digests)
    return meta


def write_group(folder: str | Path, attributes: dict | None, members: dict[str, str],
                digests: dict | None = None) -> None:
    """A group's `zarr.json`, with the members' metadata JSON consolidated."""
    attrs = json.dumps(attributes or {}, default=json_default)
    consolidated = ", ".join(f"{json.dumps(name)}: {meta}" for name, meta in members.items())
    text = ('{"zarr_format": 3, "node_type": "group", "attributes": ' + attrs
            + ', "consolidated_metadata": {"kind": "inline", "must_understand": false, "metadata": {'
            + consolidated + "}}}")
    write_file(os.path.join(str(folder), ZARR_JSON), text.encode(), digests)


def write_table(folder: Path, columns: dict[str, np.ndarray], attributes: dict | None = None,
                compressed: bool = False, digests: dict | None = None) -> None:
    """Columns (1-D arrays) as a group with one array per column."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    members = {name: write_array(os.path.join(folder, name), values, compressed, digests)
               for name, values in columns.items()}
    write_group(folder, attributes, members, digests)


def json_default(value):
    """numpy scalars and arrays as plain JSON; anything else by its text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --- reading ---------------------------------------------------------------------

def read_group(folder: Path) -> tuple[dict, dict[str, dict]]:
    """(attributes, {member name: metadata}) of a group."""
    try:
        doc = json.loads((Path(folder) / ZARR_JSON).read_text())
    except FileNotFoundError:
        raise ZarrFormatError(f"no Zarr group at {folder}") from None
    except ValueError as exc:
        raise ZarrFormatError(f"{folder}/{ZARR_JSON}: not JSON ({exc})") from None
    if doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        raise ZarrFormatError(f"{folder}: not a Zarr v3 group")
    consolidated = (doc.get("consolidated_metadata") or {}).get("metadata")
    if consolidated is None:
        consolidated = {}
        for child in sorted(Path(folder).iterdir()):
            meta_file = child / ZARR_JSON
            if meta_file.is_file():
                consolidated[child.name] = json.loads(meta_file.read_text())
    return doc.get("attributes", {}), consolidated


def read_table(folder: Path, columns: list[str] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(columns, attributes) of a group of 1-D arrays."""
    attributes, members = read_group(folder)
    names = columns if columns is not None else [n for n, m in members.items()
                                                 if m.get("node_type") == "array" and "/" not in n]
    out = {}
    for name in names:
        if name not in members:
            raise ZarrFormatError(f"{folder}: no column '{name}'")
        out[name] = read_array(Path(folder) / name, members[name])
    return out, attributes


def read_array(folder: Path, meta: dict | None = None) -> np.ndarray:
    if meta is None:
        meta = json.loads((Path(folder) / ZARR_JSON).read_text())
    dtype = _DTYPES.get(meta.get("data_type"))
    shape = tuple(meta.get("shape") or ())
    if dtype is None:
        raise ZarrFormatError(f"{folder}: unsupported data type {meta.get('data_type')}")
    chunk_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    if not all(shape):
        return np.zeros(shape, dtype=dtype)
    if any(c < s for c, s in zip(chunk_shape, shape)):
        raise ZarrFormatError(f"{folder}: arrays of more than one chunk are not supported")
    data = _read_chunk(Path(folder), meta.get("chunk_key_encoding", {}), len(shape))
    if data is None:
        return np.full(shape, meta.get("fill_value", 0), dtype=dtype)
    endian = "<"
    for codec in reversed(meta.get("codecs", [])):
        name = codec.get("name")
        if name == "zstd":
            data = _zstd().decode(data)
        elif name == "gzip":
            import gzip

            data = gzip.decompress(data)
        elif name == "bytes":
            endian = "<" if codec.get("configuration", {}).get("endian", "little") == "little" else ">"
        else:
            raise ZarrFormatError(f"{folder}: codec '{name}' is not supported")
    values = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder(endian)).reshape(chunk_shape)
    return values[tuple(slice(0, n) for n in shape)].astype(dtype, copy=False)


def _read_chunk(folder: Path, encoding: dict, ndim: int) -> bytes | None:
    separator = encoding.get("configuration", {}).get("separator", "." if encoding.get("name") == "v2" else "/")
    index = separator.join(["0"] * ndim)
    path = folder / index if encoding.get("name") == "v2" else folder / ("c" + separator + index)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def tree_size(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
