"""Is a dataset folder of the cache the one its manifest names? Cheap checks, no chunk read.

A dataset is large and read in parts, so it is not hashed on every read as
the small files of an entry are: its files' names and sizes are checked
against the manifest, the consolidated metadata by its SHA-256, and every
array must carry a CRC-32C on its chunks, which zarr checks as it reads them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from raffinerie.store.files import EntryFormatError
from raffinerie.store.layout import MANIFEST

OUTDATED = "no chunk checksums"  # the problem of a dataset written by a raffinerie without them


class DatasetDamage(EntryFormatError):
    """A dataset of the cache whose files are not those its manifest names (or have no checksums)."""


def problem(folder: Path) -> str | None:
    """What is wrong with a dataset folder of the cache, or None; cheap (no chunk is read).

    Checked against the entry's manifest: the same files with the same sizes
    (a chunk file deleted would read as the fill value, one added as data),
    the consolidated metadata's SHA-256 (it holds the constants and the axis
    values: small, read on every open anyway), and a CRC-32C on every array's
    chunks. A folder outside the cache (an export) has no manifest: None.
    """
    folder = Path(folder)
    try:
        manifest = json.loads((folder.parent / MANIFEST).read_bytes())["files"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return "manifest missing or unreadable"
    prefix = folder.name + "/"
    listed = {name[len(prefix):]: entry for name, entry in manifest.items() if name.startswith(prefix)}
    present = _sizes(folder)
    for name in sorted(set(listed) | set(present)):
        if name not in present:
            return f"file missing: {prefix}{name}"
        if name not in listed:
            return f"file not in the manifest: {prefix}{name}"
        if present[name] != listed[name][0]:
            return f"size changed: {prefix}{name}"
    try:
        metadata = (folder / "zarr.json").read_bytes()
    except OSError:
        return f"file missing: {prefix}zarr.json"
    if hashlib.sha256(metadata).hexdigest() != listed.get("zarr.json", [0, ""])[1]:
        return f"content changed: {prefix}zarr.json"
    return _unchecked(metadata)


def _sizes(folder: Path) -> dict[str, int]:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = os.stat(path).st_size
    return out


def _unchecked(metadata: bytes) -> str | None:
    """The problem of consolidated metadata naming an array whose chunks carry no CRC-32C."""
    try:
        arrays = json.loads(metadata)["consolidated_metadata"]["metadata"]
        for name, doc in arrays.items():
            if doc.get("node_type") == "array" and not _has_crc(doc.get("codecs") or []):
                return f"{OUTDATED} in {name}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "consolidated metadata unreadable"
    return None


def _has_crc(codecs: list) -> bool:
    """Whether the chunks of an array end with a CRC-32C: in its codecs, or in its shards' chunk codecs."""
    for codec in codecs:
        if codec.get("name") == "crc32c":
            return True
        if codec.get("name") == "sharding_indexed":
            return _has_crc(codec.get("configuration", {}).get("codecs") or [])
    return False
