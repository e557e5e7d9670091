"""Small file helpers of the cache: whole writes that name the file, JSON of numpy values, sizes.

Zarr itself is read and written by zarr-python (`pointfile`, `dataset`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs on this machine (a temporary file's writer, say): one that
    exists but is not ours to signal runs too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EntryFormatError(ValueError):
    """An entry that is not laid out as raffinerie writes it."""


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`: os.write may write less than it is given."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_file(path: str, data: bytes, digests: dict | None = None) -> None:
    """Write all of `data` (os.write may write less); an error names the file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write: {exc.strerror}", str(path)) from None
    if digests is not None:  # hashed from memory: no second read of the file
        digests[path] = (len(data), hashlib.sha256(data).hexdigest())


def write_json(path: Path, doc: dict, digests: dict | None = None) -> None:
    """`doc` as indented JSON with sorted keys (numpy values as plain JSON), written whole."""
    write_file(str(path), json.dumps(doc, indent=1, sort_keys=True, default=json_default).encode(), digests)


def json_dict(data: bytes | None) -> dict | None:
    """The JSON object in `data`; None for no data, bad JSON or anything but an object."""
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def rename_into_place(tmp: Path, final: Path) -> bool:
    """The last step of making an entry: rename the complete folder `tmp` to `final`.
    False (and nothing changed) when the entry is already there, made by another process."""
    if final.is_dir():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if final.is_dir():
            return False
        raise
    return True


def json_default(value):
    """numpy scalars and arrays as plain JSON; anything else by its text."""
    import numpy as np  # here, not above: the shared cache uses this module, and plan loads no numpy
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def tree_size(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
