"""No-op builds in constant time: a stamp of everything a build read, in the style of Make.

When a build or plan finds everything up to date, it writes a stamp: the
size and modification time of every file it read (library files, target
and daq files, power-on defaults, network file, analysis code, and
raffinerie's own code, since an editable install changes without a new
version), the cache entries of its datasets and analyses, and the cache's
removal token (bumped by every quarantine and `gc`). The next identical
command stats those files (tens, not one per point) and, if nothing moved,
knows the answer without loading the library or hashing a point.

A file changed less than 100 ms before its stamp was written could
change again within the same timestamp tick, so such a stamp is not
trusted (git's "racy" entries). Deleting a cache entry by hand, not with
`raff cache gc`, is not seen here for measurements; `raff plan` without
`--check` always plans in full.

Standard library only: this runs before any heavy import.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import raffinerie
from raffinerie import __version__

FOLDER = ("names", "stamps")
REMOVALS = ("names", "removals")
RACY_NS = 100_000_000  # timestamps tick every few ms on Linux; 100 ms is well past one tick
CODE_SUFFIXES = (".py", ".yaml", ".csv", ".json")


def _file(root: Path, request: dict) -> Path:
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:32]
    return Path(root).joinpath(*FOLDER, f"{digest}.json")


def _stat(path: str) -> list[int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_mtime_ns, info.st_size]


def _code_files() -> list[str]:
    out = []
    for folder, _, names in os.walk(os.path.dirname(raffinerie.__file__)):
        out += [os.path.join(folder, n) for n in names if n.endswith(CODE_SUFFIXES)]
    return sorted(out)


def removals(root: Path) -> str:
    try:
        return Path(root).joinpath(*REMOVALS).read_text()
    except OSError:
        return ""


def removed(root: Path) -> None:
    """Say that entries left the cache (quarantine, gc): every stamp is out of date."""
    path = Path(root).joinpath(*REMOVALS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".removals.{os.getpid()}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(uuid.uuid4().hex)
    os.replace(tmp, path)


def fresh(root: Path, request: dict) -> bool:
    """Whether the last stamp of `request` still holds."""
    return holding(root, request) is not None


def holding(root: Path, request: dict) -> dict | None:
    """The last stamp of `request` if it still holds (its `nodes`: {node id: key}), else None."""
    try:
        stamp = json.loads(_file(root, request).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("version") != __version__ or stamp.get("removals") != removals(root):
        return None
    written = stamp.get("written", 0)
    for path, was in stamp.get("files", {}).items():
        now = _stat(path)
        if now != was or (now is not None and now[0] >= written - RACY_NS):
            return None
    if stamp.get("code") != _code_files():
        return None
    return stamp if all(os.path.isdir(p) for p in stamp.get("present", [])) else None


def write(root: Path, request: dict, files: list[str], present: list[str],
          nodes: dict[str, str] | None = None) -> None:
    """Stamp `request` as up to date: `files` it read, folders that must still be there,
    and the key of each node (so `raff show` finds the dataset without planning)."""
    code = _code_files()
    stamp = {"version": __version__, "written": time.time_ns(), "removals": removals(root),
             "files": {p: _stat(p) for p in sorted(set(files) | set(code))}, "code": code,
             "present": sorted(present), "nodes": nodes or {}}
    path = _file(root, request)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stamp))
        os.replace(tmp, path)
    except OSError:
        pass  # a stamp is an optimisation: without it, the next command plans in full
