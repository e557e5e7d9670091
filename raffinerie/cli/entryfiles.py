"""The files of cache entries that `raff report` inlines, read as a shared cache may have sent them.

A cache entry may come from a shared cache: its meta.json names the files the page inlines, and
the page is shared. So a name is used only if it is a plain relative path inside the entry, and
the file a regular one (not a link, a FIFO, a device), at most MAX_FILE bytes; anything else is
left out, with one warning naming the entry and the name. Never followed, never read.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path, PurePosixPath

MAX_FILE = 64 << 20  # bytes of one file the page inlines: the limit on configuration files (README)
_IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".gif": "image/gif", ".webp": "image/webp"}


def _os_problem(exc: OSError) -> str:
    from raffinerie.analysis.runner import os_problem  # the analysis layer loads numpy: only on a failure

    return os_problem(exc)


class EntryFiles:
    """Reads the files of cache entries for the page; `warn(line)` hears of each one left out."""

    def __init__(self, warn):
        self.warn = warn

    def file(self, folder: Path, name, field: str | None = None) -> Path | None:
        """`name`, read from the `field` of the entry's meta.json (None: a file any entry may have,
        such as notes.txt), as a regular file inside the entry `folder`; or None, said unless it is
        an optional file that is absent."""
        problem = _refused(folder, name)
        if problem == "missing" and field is None:
            return None
        if problem and field is None:
            self.warn(f"{folder}/{name}: {problem.removeprefix('which ')}; left out of the report")
        elif problem:
            self.warn(f"{folder}/meta.json: {field} names {name!r}, {problem}; left out of the report")
        return None if problem else folder / name

    def text(self, path: Path) -> str:
        try:
            return _read_bytes(path).decode("utf-8", errors="replace")
        except OSError as exc:
            self.warn(f"{path}: {_os_problem(exc)}; left out of the report")
            return ""

    def json(self, folder: Path, name: str, quiet: bool = False) -> dict:
        """The entry's record `name`: {} when absent, unreadable or refused (said unless `quiet`)."""
        if quiet:
            path = None if _refused(folder, name) else folder / name
        else:
            path = self.file(folder, name)
        if path is None:
            return {}
        try:
            doc = json.loads(_read_bytes(path))
            return doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            return {}

    def data_uri(self, path: Path) -> str:
        kind = _IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
        try:
            data = _read_bytes(path)
        except OSError as exc:
            self.warn(f"{path}: {_os_problem(exc)}; left out of the report")
            data = b""
        return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _refused(folder: Path, name) -> str | None:
    """Why the entry's file `name` is not shown (None: it is fine)."""
    if not isinstance(name, str) or not name or "\0" in name:
        return "which is not a file name"
    if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts or "\\" in name:
        return "which is not a relative path inside the entry"
    path = folder / name
    try:
        root = os.path.realpath(folder)
        if os.path.commonpath([os.path.realpath(path), root]) != root:
            return "which leads out of the entry (through a link)"
        info = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as exc:
        return f"which cannot be read ({_os_problem(exc) if isinstance(exc, OSError) else exc})"
    if stat.S_ISLNK(info.st_mode):
        return "which is a link"
    if not stat.S_ISREG(info.st_mode):
        return "which is not a regular file"
    if info.st_size > MAX_FILE:
        return f"which is larger than {MAX_FILE >> 20} MiB"
    return None


def _read_bytes(path: Path) -> bytes:
    """A file `_refused` allowed, opened without following a link put there since."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_FILE + 1)[:MAX_FILE]
