"""Tables as Zarr v3 groups (one 1-D array per column), read and written directly.

The layout is plain Zarr v3, so zarr-python (and any v3 reader) opens what is
written here; what zarr-python writes in the same layout is read here. Each
array is one chunk with the `bytes` codec, optionally followed by `zstd`. The
group's `zarr.json` carries consolidated metadata, so a table is read with
one JSON read and one file per column.

zarr-python needs ~35 ms to write and ~19 ms to read a 21-column table, far
more than the measurement itself; these direct writes and reads take well
under a millisecond per column.
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


@lru_cache(maxsize=256)
def _metadata_json(dtype: np.dtype, n: int, compress: bool) -> str:
    return json.dumps(_array_metadata(dtype, n, compress))


def array_metadata(values: np.ndarray, compress: bool) -> dict:
    return _array_metadata(np.dtype(values.dtype), int(values.shape[0]), compress)


def _array_metadata(dtype: np.dtype, n: int, compress: bool) -> dict:
    if dtype not in _NAMES:
        raise ZarrFormatError(f"cannot store dtype {dtype}")
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if compress:
        codecs.append({"name": "zstd", "configuration": {"level": 1, "checksum": False}})
    fill = False if dtype == np.bool_ else (0.0 if dtype.kind == "f" else 0)
    return {"zarr_format": 3, "node_type": "array", "shape": [n],
            "data_type": _NAMES[dtype],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [max(n, 1)]}},
            # "v2" keys: the single chunk is the file "0" beside zarr.json (no "c/" folder)
            "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "."}},
            "fill_value": fill, "codecs": codecs, "attributes": {}, "storage_transformers": []}


def _write(path: str, data: bytes, digests: dict | None = None) -> None:
    with open(path, "wb") as f:
        f.write(data)
    if digests is not None:  # hashed from memory: no second read of the file
        digests[path] = (len(data), hashlib.sha256(data).hexdigest())


def compress(data: bytes) -> bytes:
    """The zstd codec of compressed arrays (releases the GIL: fine in a thread)."""
    return _zstd().encode(data)


def write_table(folder: Path, columns: dict[str, np.ndarray], attributes: dict | None = None,
                compress: bool | set[str] = False, digests: dict | None = None,
                encoded: dict[str, tuple[np.dtype, int, bytes]] | None = None) -> None:
    """Write `columns` (1-D arrays) as a Zarr v3 group at `folder` (created).

    `encoded` holds columns already compressed: name -> (dtype, length, bytes).
    `digests`, when given, receives {path: (size, sha256)} of every file written.
    """
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    metadata = []

    def put(name: str, dtype: np.dtype, n: int, squeeze: bool, data: bytes) -> None:
        if dtype not in _NAMES:
            raise ZarrFormatError(f"column '{name}': cannot store dtype {dtype}")
        meta = _metadata_json(dtype, n, squeeze)
        array_dir = os.path.join(folder, name)
        os.mkdir(array_dir)
        _write(os.path.join(array_dir, ZARR_JSON), meta.encode(), digests)
        if n:
            _write(os.path.join(array_dir, "0"), data, digests)
        metadata.append(f"{json.dumps(name)}: {meta}")

    for name, values in columns.items():
        values = np.ascontiguousarray(values)
        if values.dtype.byteorder == ">":
            values = values.astype(values.dtype.newbyteorder("<"))
        squeeze = bool(compress if isinstance(compress, bool) else name in compress)
        data = values.tobytes()
        put(name, np.dtype(values.dtype), int(values.shape[0]), squeeze,
            _zstd().encode(data) if squeeze and data else data)
    for name, (dtype, n, data) in (encoded or {}).items():
        put(name, np.dtype(dtype), n, True, data)
    attrs = json.dumps(attributes or {}, default=_json_default)
    group = ('{"zarr_format": 3, "node_type": "group", "attributes": ' + attrs
             + ', "consolidated_metadata": {"kind": "inline", "must_understand": false, "metadata": {'
             + ", ".join(metadata) + "}}}")
    _write(os.path.join(folder, ZARR_JSON), group.encode(), digests)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in metadata")


def read_group_metadata(folder: Path) -> dict:
    try:
        doc = json.loads((folder / ZARR_JSON).read_text())
    except FileNotFoundError:
        raise ZarrFormatError(f"no Zarr group at {folder}") from None
    except ValueError as exc:
        raise ZarrFormatError(f"{folder / ZARR_JSON}: not JSON ({exc})") from None
    if doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        raise ZarrFormatError(f"{folder}: not a Zarr v3 group")
    return doc


def column_names(folder: Path) -> list[str]:
    doc = read_group_metadata(folder)
    consolidated = (doc.get("consolidated_metadata") or {}).get("metadata")
    if consolidated is not None:
        return [name for name, meta in consolidated.items()
                if meta.get("node_type") == "array" and "/" not in name]
    return sorted(p.name for p in folder.iterdir() if (p / ZARR_JSON).is_file()
                  and json.loads((p / ZARR_JSON).read_text()).get("node_type") == "array")


def read_table(folder: Path, columns: list[str] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(columns, group attributes) of a table written by `write_table` or zarr-python."""
    doc = read_group_metadata(folder)
    consolidated = (doc.get("consolidated_metadata") or {}).get("metadata") or {}
    names = columns if columns is not None else column_names(folder)
    out = {}
    for name in names:
        meta = consolidated.get(name)
        if meta is None:
            try:
                meta = json.loads((folder / name / ZARR_JSON).read_text())
            except FileNotFoundError:
                raise ZarrFormatError(f"{folder}: no column '{name}'") from None
        out[name] = read_array(folder / name, meta)
    return out, doc.get("attributes", {})


def read_array(folder: Path, meta: dict) -> np.ndarray:
    dtype = _DTYPES.get(meta.get("data_type"))
    shape = meta.get("shape") or [0]
    if dtype is None or len(shape) != 1:
        raise ZarrFormatError(f"{folder}: unsupported array ({meta.get('data_type')}, shape {shape})")
    n = int(shape[0])
    codecs = meta.get("codecs", [])
    chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
    encoding = meta.get("chunk_key_encoding", {})
    if n == 0:
        return np.zeros(0, dtype=dtype)
    if chunk_shape[0] < n:
        raise ZarrFormatError(f"{folder}: more than one chunk is not supported")
    if encoding.get("name") == "v2":
        chunk = folder / "0"
    else:
        separator = encoding.get("configuration", {}).get("separator", "/")
        chunk = folder / "c" / "0" if separator == "/" else folder / "c.0"
    try:
        data = chunk.read_bytes()
    except FileNotFoundError:
        return np.full(n, meta.get("fill_value", 0), dtype=dtype)
    endian = "<"
    for codec in reversed(codecs):
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
    values = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder(endian), count=chunk_shape[0])
    return values[:n].astype(dtype, copy=False)


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def tree_size(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
