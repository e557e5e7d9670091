"""An entry's manifest: the size and SHA-256 of every file of a cache entry.

`manifest.json` is written last, by `write`, into the folder of an entry
being made (`Store.commit`). It is read two ways: `files_of` for an entry of
this cache (made here, trusted to be well-formed), and `parse` for one that
comes from outside (a pull, or a push of a local entry), where nothing is
trusted: every name must be a plain relative path inside the entry, and the
number of files and bytes are bounded. `problem` checks an entry's files
against it, `checked_file` one small file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from raffinerie.store.files import EntryFormatError, write_json

MANIFEST = "manifest.json"
HEX = frozenset("0123456789abcdef")

# Bounds on what one entry from outside may claim, checked before any of its files is
# read. A dataset is one file per column per block of 4,096 points (README, "How a
# dataset is stored"): a 131,072-point scan is a few thousand files, so 100,000 is a
# margin of 30 or more; its manifest is ~110 bytes a file (`write`'s JSON), about
# 11 MB, and 32 MiB allows three times that. The bytes bound is far above any entry
# raffinerie makes (that scan's dataset is under 1 GB) and stops a manifest that
# claims more than a disk holds; RAFF_REMOTE_MAX_ENTRY_BYTES raises it.
MAX_FILES = 100_000
MAX_MANIFEST_BYTES = 32 << 20
MAX_ENTRY_BYTES = int(os.environ.get("RAFF_REMOTE_MAX_ENTRY_BYTES", str(256 << 30)))
NAME_MAX = 255                # bytes in one part of a file name (Linux's NAME_MAX)
PATH_MAX = 1024               # bytes in a name inside an entry (zarr's longest are ~100)


class Damaged(Exception):
    """An entry that does not match its manifest, or whose manifest is refused; the problem."""


# -- writing ----------------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write(folder: Path, digests: dict) -> None:
    """Size and SHA-256 of every file of an entry, from what its writer recorded in `digests`
    ({path: (size, sha256)}); a file it did not record is hashed from disk."""
    prefix = str(folder) + os.sep
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            size, digest = digests.get(path) or (os.stat(path).st_size, sha256_of(Path(path)))
            files[path[len(prefix):]] = [size, digest]
    write_json(folder / MANIFEST, {"files": dict(sorted(files.items()))})


# -- reading an entry of this cache -------------------------------------------------------------------

def files_of(folder: Path) -> dict:
    """The `files` of an entry's manifest: name -> [size, SHA-256]."""
    files = json.loads((folder / MANIFEST).read_bytes())["files"]
    if not isinstance(files, dict):
        raise EntryFormatError("manifest files is not a mapping")
    return files


def problem(folder: Path) -> str | None:
    """What is wrong with an entry's files against its manifest, or None (every file hashed)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return "manifest missing or unreadable"
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST}
    missing = sorted(set(manifest) - present)
    if missing:
        return f"file missing: {missing[0]}"
    for name, (size, digest) in manifest.items():
        path = folder / name
        if path.stat().st_size != size or sha256_of(path) != digest:
            return f"content changed: {name}"
    return None


def checked_file(folder: Path, name: str) -> bytes | str:
    """The bytes of file `name` of an entry if they match its manifest, else the problem."""
    try:
        listed = files_of(folder).get(name)
    except (OSError, ValueError, KeyError, TypeError, EntryFormatError):
        return "manifest missing or unreadable"
    if not listed:
        return f"file not in the manifest: {name}"
    try:
        data = (folder / name).read_bytes()
    except OSError:
        return f"file missing: {name}"
    if not matches(data, listed[0], listed[1]):
        return f"content changed: {name}"
    return data


def matches(data: bytes, size: int, digest: str) -> bool:
    """Whether `data` is the file a manifest lists with `size` and `digest`."""
    return len(data) == size and hashlib.sha256(data).hexdigest() == digest


# -- reading an entry from outside ----------------------------------------------------------------------

def parse(data: bytes) -> dict[str, tuple[int, str]]:
    """The files of a manifest ({name: (size, sha256)}); Damaged for anything but a manifest
    of at most MAX_FILES plain names and MAX_ENTRY_BYTES bytes."""
    try:
        files = json.loads(data)["files"]
        if not isinstance(files, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise Damaged("manifest.json unreadable") from None
    if len(files) > MAX_FILES:
        raise Damaged(f"manifest.json names {len(files):,} files, more than the {MAX_FILES:,} an entry may have")
    out: dict[str, tuple[int, str]] = {}
    total = 0
    for name, value in files.items():
        _check_name(name)
        if not (isinstance(value, list) and len(value) == 2 and type(value[0]) is int and value[0] >= 0
                and isinstance(value[1], str) and len(value[1]) == 64 and HEX.issuperset(value[1])):
            raise Damaged(f"manifest.json unreadable (the size and SHA-256 of {_shown(name)})")
        out[name] = (value[0], value[1])
        total += value[0]
    if total > MAX_ENTRY_BYTES:
        raise Damaged(f"manifest.json claims {total:,} bytes, more than the {MAX_ENTRY_BYTES:,} an entry may have "
                      "(RAFF_REMOTE_MAX_ENTRY_BYTES)")
    folders = {name[:i] for name in out for i, c in enumerate(name) if c == "/"}
    clash = sorted(folders & set(out))
    if clash:
        raise Damaged(f"manifest.json names {_shown(clash[0])} as a file and as a folder")
    return out


def _check_name(name: object) -> None:
    """A plain relative path inside the entry: parts neither empty, `.` nor `..`, no NUL."""
    if not isinstance(name, str):
        raise Damaged("manifest.json unreadable")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        encoded = None
    parts = name.split("/")
    if (encoded is None or "\0" in name or len(encoded) > PATH_MAX or name == MANIFEST
            or any(p in ("", ".", "..") or len(p.encode("utf-8", "replace")) > NAME_MAX for p in parts)):
        raise Damaged(f"bad file name {_shown(name)} in manifest.json (not a plain path inside the entry)")


def _shown(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:77] + "...")
