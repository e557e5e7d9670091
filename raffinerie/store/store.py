"""The content-addressed cache: measurements, datasets and analysis outputs.

Every entry is written under `tmp/` and renamed into
`<kind>/<key[:2]>/<key>/` in one step, so a reader never sees half an entry
and a crash leaves at most a stray folder in `tmp/`. Each entry has a
`manifest.json` with the size and SHA-256 of its files, which `verify`
checks. A per-key lock (`flock`, released by the kernel when a process
dies) keeps two processes from acquiring the same point.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from raffinerie import __version__
from raffinerie.store.layout import KINDS, CacheIndex, entry_dir, iter_entries
from raffinerie.store.zarrio import (ZarrFormatError, compress, json_default, read_array, read_group,
                                     read_table, tree_size, write_array, write_file, write_group,
                                     write_table)

MANIFEST = "manifest.json"


@dataclass
class Damage:
    kind: str
    key: str
    problem: str


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- layout ---------------------------------------------------------------

    def path(self, kind: str, key: bytes | str) -> Path:
        return entry_dir(self.root, kind, key.hex() if isinstance(key, bytes) else key)

    def has(self, kind: str, key: bytes | str) -> bool:
        return self.path(kind, key).is_dir()

    def index(self) -> CacheIndex:
        """A fresh listing of what is cached (for the planner)."""
        return CacheIndex(self.root)

    def entries(self, kind: str) -> Iterator[tuple[str, Path]]:
        for key, path in iter_entries(self.root, kind):
            yield key, Path(path)

    # -- atomic commit ----------------------------------------------------------

    def commit(self, kind: str, key: bytes | str, write: Callable[[Path, dict], None]) -> bool:
        """Write an entry with `write(folder, digests)` and rename it into place.

        `write` records {path: (size, sha256)} of the files it writes in
        `digests`; files it does not record are hashed from disk.

        Returns False when the entry was already there (another process made
        the same content); the new copy is discarded.
        """
        final = self.path(kind, key)
        if final.is_dir():
            return False
        tmp = self.root / "tmp" / f"{kind}-{final.name[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            digests: dict = {}
            write(tmp, digests)
            _write_manifest(tmp, digests)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if final.is_dir():
                    return False  # committed by another process meanwhile
                raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return True

    @contextlib.contextmanager
    def lock(self, name: str, wait: bool = False):
        """An exclusive lock on `name`; yields whether it was obtained."""
        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                got = True
            except BlockingIOError:
                got = False
            yield got
        finally:
            os.close(fd)  # closing releases the lock

    # -- measurements -------------------------------------------------------------

    def put_measurement(self, key: bytes, summary: dict, raw: bytes, meta: dict,
                        events: dict | None = None, raw_compressed: bytes | None = None) -> bool:
        """Commit a measurement; `raw_compressed` is `zarrio.compress(raw)` if already done.

        Layout (a Zarr v3 group, its attributes the metadata): `summary`, one
        2-D float64 array (columns x rows; names and dtypes in the attributes,
        so a point is one file, not one per column); `raw`, the raw bytes,
        zstd-compressed; `events/` in events mode, one array per column.
        """
        packed = raw_compressed if raw_compressed is not None else compress(raw)
        names = list(summary)
        attributes = {"key": key.hex(), "raffinerie": __version__, **meta,
                      "summary_columns": names,
                      "summary_dtypes": [np.asarray(summary[n]).dtype.str for n in names]}

        def write(folder: Path, digests: dict) -> None:
            table = np.vstack([np.asarray(summary[n], dtype=np.float64) for n in names])
            members = {"summary": write_array(folder / "summary", table, digests=digests),
                       "raw": write_array(folder / "raw", digests=digests,
                                          encoded=(np.uint8, (len(raw),), packed))}
            if events is not None:
                write_table(folder / "events", events, compressed=True, digests=digests)
                _, event_members = read_group(folder / "events")
                members["events"] = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
                members.update({f"events/{n}": json.dumps(m) for n, m in event_members.items()})
            write_group(folder, attributes, members, digests)
        return self.commit("measurements", key, write)

    def read_summary(self, key: bytes | str, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        folder = self.path("measurements", key)
        attributes, members = read_group(folder)
        table = read_array(folder / "summary", members.get("summary"))
        names, dtypes = attributes["summary_columns"], attributes["summary_dtypes"]
        wanted = set(columns) if columns is not None else None
        return {n: table[i].astype(dtypes[i]) for i, n in enumerate(names)
                if wanted is None or n in wanted}

    def read_events(self, key: bytes | str) -> dict[str, np.ndarray]:
        return read_table(self.path("measurements", key) / "events")[0]

    def read_raw(self, key: bytes | str) -> bytes:
        return read_array(self.path("measurements", key) / "raw").tobytes()

    def meta(self, kind: str, key: bytes | str) -> dict:
        folder = self.path(kind, key)
        if (folder / "meta.json").is_file():
            return json.loads((folder / "meta.json").read_text())
        return read_group(folder)[0]

    # -- datasets -------------------------------------------------------------------

    def put_dataset(self, key: bytes, columns: dict[str, np.ndarray], meta: dict) -> bool:
        def write(folder: Path, digests: dict) -> None:
            write_table(folder / "table", columns, compressed=True, digests=digests)
            _write_json(folder / "meta.json", {"key": key.hex(), "raffinerie": __version__, **meta}, digests)
        return self.commit("datasets", key, write)

    def read_dataset(self, key: bytes | str, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        return read_table(self.path("datasets", key) / "table", columns)[0]

    # -- build records and the journal ----------------------------------------------

    def record(self, kind: str, name: str, key: str, inputs: dict | None = None) -> None:
        """Remember what the last build of `name` made (for plan's reasons)."""
        folder = self.root / "names" / kind
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        _write_json(tmp, {"name": name, "key": key, "inputs": inputs or {}, "time": time.time()})
        os.replace(tmp, folder / f"{name}.json")

    def journal(self, **event) -> None:
        """Append one line to `journal.jsonl` (one write: safe between processes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = (json.dumps({"time": round(time.time(), 3), **event}) + "\n").encode()
        fd = os.open(self.root / "journal.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    # -- maintenance ------------------------------------------------------------------

    def verify(self, quarantine: bool = True) -> list[Damage]:
        """Re-hash every entry; damaged ones move to `quarantine/` (never deleted)."""
        damaged = []
        for kind in KINDS:
            for key, path in self.entries(kind):
                problem = _check_manifest(path)
                if problem is None and kind == "measurements":
                    problem = _check_tables(path)
                if problem:
                    damaged.append(Damage(kind, key, problem))
                    if quarantine:
                        target = self.root / "quarantine" / kind / f"{key}.{int(time.time())}"
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.rename(path, target)
        return damaged

    def usage(self) -> dict[str, tuple[int, int]]:
        """(entries, bytes) per kind."""
        out = {}
        for kind in KINDS:
            count = size = 0
            for _, path in self.entries(kind):
                count += 1
                size += tree_size(path)
            out[kind] = (count, size)
        return out

    def remove(self, kind: str, key: str) -> None:
        path = self.path(kind, key)
        doomed = self.root / "tmp" / f"gc-{key}-{uuid.uuid4().hex[:8]}"
        doomed.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, doomed)  # out of sight in one step, then deleted
        shutil.rmtree(doomed, ignore_errors=True)

    def stale_tmp(self, older_than: float = 3600.0) -> list[Path]:
        folder = self.root / "tmp"
        if not folder.is_dir():
            return []
        now = time.time()
        return [p for p in folder.iterdir() if now - p.stat().st_mtime > older_than]


def _write_json(path: Path, doc: dict, digests: dict | None = None) -> None:
    write_file(str(path), json.dumps(doc, indent=1, sort_keys=True, default=json_default).encode(), digests)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(folder: Path, digests: dict) -> None:
    """Size and SHA-256 of every file of an entry, from what its writer recorded."""
    prefix = str(folder) + os.sep
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            size, digest = digests.get(path) or (os.stat(path).st_size, _sha256(Path(path)))
            files[path[len(prefix):]] = [size, digest]
    _write_json(folder / MANIFEST, {"files": dict(sorted(files.items()))})


def _check_manifest(folder: Path) -> str | None:
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
        if path.stat().st_size != size or _sha256(path) != digest:
            return f"content changed: {name}"
    return None


def _check_tables(folder: Path) -> str | None:
    try:
        attributes, members = read_group(folder)
        read_array(folder / "summary", members["summary"])
        read_array(folder / "raw", members["raw"])
    except (ZarrFormatError, OSError, ValueError, KeyError) as exc:
        return f"unreadable table: {exc}"
    return None
