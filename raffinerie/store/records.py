"""Build records and the journal: what the last build of each procedure made
(`names/<kind>/<name>.json`, for plan's reasons, gc and the shared cache), the boards the
cache has points of (`names/boards/`), and `journal.jsonl`, one line per event.

A build record carries its format (`RECORD_FORMAT`); one without is of the format before
the field was added, which is read as this one. A record of a newer raffinerie is one
clear error (`checked_record`), not a guess. Imports nothing heavy: plan reads records.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

from raffinerie.records import check_format
from raffinerie.store.files import json_default, write_json

RECORD_FORMAT = 1  # of names/<kind>/<name>.json; a record without "format" is of format 1 (older raffinerie)


def records_rel(kind: str) -> str:
    """The folder of the build records of `kind` relative to a cache's root (local or shared)."""
    return f"names/{kind}"


def record_rel(kind: str, name: str) -> str:
    """The record of the last build of `name` (`names/<kind>/<name>.json`) relative to a cache's root."""
    return f"{records_rel(kind)}/{name}.json"


def checked_record(doc, where) -> dict:
    """A build record read from `where`, once its format is one this raffinerie reads."""
    return check_format(doc, where, "a build record", RECORD_FORMAT) if isinstance(doc, dict) else doc


def board_record(identity: str) -> str:
    """The name of a board's record in `names/boards/`: its identity may hold `/` (emulator/model-4/seed-0)."""
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class Records:
    """The build records and the journal of the cache at `self.root` (a room of `Store`)."""

    root: Path

    def record(self, kind: str, name: str, key: str, inputs: dict | None = None) -> None:
        """Remember what the last build of `name` made (for plan's reasons)."""
        final = self.root / record_rel(kind, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"  # threads of one process too
        write_json(tmp, {"format": RECORD_FORMAT, "name": name, "key": key, "inputs": inputs or {},
                         "time": time.time()})
        os.replace(tmp, final)

    def remember_board(self, identity: str) -> None:
        """Record that the cache holds points of board `identity` (`names/boards/`), once: `gc`
        keeps what the library needs on every board recorded, not only on the one it is given."""
        name = board_record(identity)
        if not (self.root / record_rel("boards", name)).is_file():
            self.record("boards", name, identity, {"identity": identity})

    def build_records(self, kind: str) -> Iterator[tuple[Path, dict | None]]:
        """Each build record of `kind` (`names/<kind>/*.json`) with its document, checked for its
        format; None for one that cannot be read or is no JSON object (a damaged record)."""
        for path in sorted((self.root / records_rel(kind)).glob("*.json")):
            try:
                doc = checked_record(json.loads(path.read_text()), path)
            except (OSError, ValueError):
                doc = None
            yield path, doc if isinstance(doc, dict) else None

    def boards(self) -> list[str]:
        """The identities of the boards the cache has points of (as recorded; see `remember_board`)."""
        out = []
        for _, doc in self.build_records("boards"):
            try:
                identity = doc["inputs"]["identity"]
            except (KeyError, TypeError):
                continue  # a damaged record: the boards of the build records still count (see gc)
            if isinstance(identity, str):
                out.append(identity)
        return out

    def journal(self, **event) -> None:
        """Append one line to `journal.jsonl` (one write: safe between processes).

        The first append of a process checks that the journal ends with a
        whole line; a line cut short (a crash or a full disk mid-write) is
        cut off, so the next record starts a line of its own.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        line = (json.dumps({"time": round(time.time(), 3), **event}, default=json_default) + "\n").encode()
        fd = os.open(self.root / "journal.jsonl", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if not getattr(self, "_journal_checked", False):
                _repair_journal(fd)
                self._journal_checked = True
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(28, "short write (disk full?)", str(self.root / "journal.jsonl"))
        finally:
            os.close(fd)


def _repair_journal(fd: int) -> None:
    """Cut a last line that was cut short, under a lock against other appenders."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = size - len(tail) + cut + 1 if cut >= 0 else 0
        os.ftruncate(fd, keep)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
