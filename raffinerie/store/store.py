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
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from raffinerie import __version__
from raffinerie.errors import RaffError
from raffinerie.store import dataset, manifest, pointfile, stamp
from raffinerie.store.files import (EntryFormatError, json_default, process_alive, rename_into_place, tree_size,
                                    write_file, write_json)
from raffinerie.store.layout import KINDS, MANIFEST, CacheIndex, entry_dir, iter_entries
from raffinerie.store.manifest import checked_file
from raffinerie.store.manifest import write as _write_manifest  # tests/test_hostile_damage.py imports it from here

# what reading a damaged entry can raise: bad JSON or Zarr metadata, a truncated
# or flipped zstd frame (numcodecs raises RuntimeError), a missing file, a bad CRC-32
# or a broken zip directory (BadZipFile)
READ_ERRORS = (EntryFormatError, OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError,
               zipfile.BadZipFile)
# files of a measurement in the old folder layout checked on every read (small: the
# summary and the metadata; the raw bytes are checked by `raff cache verify`)
CHECKED = ("zarr.json", "summary/")


@dataclass
class Damage:
    kind: str
    key: str
    problem: str


@dataclass
class Lock:
    """A held lock; `release()` may come from another thread than the one that took it."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)  # closing releases the lock
        self.fd = -1


class DamagedEntry(RaffError):
    """A cache entry that cannot be read as written; it has been moved to quarantine/."""

    def __init__(self, kind: str, key: str, path: Path, problem: str):
        self.kind, self.key, self.problem = kind, key, problem
        remedy = ("the next build acquires it again" if kind == "measurements"
                  else "the next build makes it again")
        what = "cache entry of an older raffinerie" if dataset.OUTDATED in problem else "damaged cache entry"
        super().__init__(f"{what} ({problem}); moved to quarantine/, {remedy}", file=path)


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

    def commit(self, kind: str, key: bytes | str, write: Callable[[Path, dict], None],
               replace: bool = False) -> bool:
        """Write an entry with `write(folder, digests)` and rename it into place.

        `write` records {path: (size, sha256)} of the files it writes in
        `digests`; files it does not record are hashed from disk.

        Returns False when the entry was already there (another process made
        the same content); the new copy is discarded. With `replace` (a
        derived entry made again, `--force`), the new copy replaces it once
        it is complete: if making it fails, the old one is still there.
        """
        final = self.path(kind, key)
        if final.is_dir() and not replace:
            return False
        tmp = self.root / "tmp" / f"{kind}-{final.name[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            digests: dict = {}
            write(tmp, digests)
            _write_manifest(tmp, digests)
            if replace and final.is_dir():
                self.remove(kind, final.name)  # out of sight in one rename, then the new one in
            return rename_into_place(tmp, final)  # False: committed by another process meanwhile
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def hold(self, name: str, wait: bool = False) -> "Lock | None":
        """An exclusive lock on `name`, or None when another process has it (and not `wait`).

        The lock file is removed by its holder when it lets go, so `locks/`
        holds only the locks in use. That is safe because a process that
        obtains the lock checks that the file it locked is still the one at
        that name; if its holder removed it meanwhile, it locks the new one.
        """
        path = _lock_folder(self.root) / f"{name}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return None
            if _same_file(fd, path):
                return Lock(path, fd)
            os.close(fd)  # removed by its last holder while we waited: take the new one

    @contextlib.contextmanager
    def lock(self, name: str, wait: bool = False):
        """`hold` as a context manager; yields whether the lock was obtained."""
        held = self.hold(name, wait)
        try:
            yield held is not None
        finally:
            if held is not None:
                held.release()

    @contextlib.contextmanager
    def cache_lock(self, exclusive: bool, waiting: Callable[[], None] | None = None):
        """The whole cache: builds share it; `gc` and `verify` take it alone.

        A build that holds it shared is never left without an entry it is
        about to use. `waiting()` is called once if the lock is not free.
        """
        fd = os.open(_lock_folder(self.root) / "cache.lock", os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if waiting is not None:
                    waiting()
                fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def clean_tmp(self) -> int:
        """Remove what dead processes left in `tmp/` (an entry being written when killed)."""
        removed = 0
        for path in self.stale_tmp(older_than=0.0):
            pid = _writer_pid(path.name)
            if pid is not None and not process_alive(pid):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    # -- reading, with damage detected ----------------------------------------------

    def quarantine(self, kind: str, key: str, problem: str) -> Path:
        """Move an entry out of the cache (never deleted), so that it is made again."""
        path = self.path(kind, key)
        target = self.root / "quarantine" / kind / f"{key}.{int(time.time())}.{uuid.uuid4().hex[:6]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, target)
        stamp.removed(self.root)
        self.journal(event="quarantined", kind=kind, key=key, problem=problem)
        return target

    @contextlib.contextmanager
    def reading(self, kind: str, key: bytes | str):
        """Read an entry; if it cannot be read, quarantine it and raise DamagedEntry."""
        key = key.hex() if isinstance(key, bytes) else key
        try:
            yield self.path(kind, key)
        except DamagedEntry:
            raise
        except READ_ERRORS as exc:
            if isinstance(exc, OSError) and not self.path(kind, key).is_dir():
                raise  # not there at all: not damage
            problem = str(exc) if isinstance(exc, dataset.DatasetDamage) else f"unreadable: {_one_line(exc)}"
            self.quarantine(kind, key, problem)
            raise DamagedEntry(kind, key, self.path(kind, key), problem) from None

    def check_entry(self, kind: str, key: str) -> str | None:
        """What is wrong with an entry's files against its manifest, or None.

        A dataset is also checked as opening it does (`dataset.problem`): no file
        beyond the manifest's, and chunk checksums (an older one has none)."""
        found = manifest.problem(self.path(kind, key))
        if found is None and kind == "datasets":
            found = dataset.problem(self.dataset_folder(key))
        return found

    def require_sound(self, kind: str, key: bytes | str) -> Path:
        """The folder of an entry whose files all match its manifest (hashed: for small entries,
        an analysis's outputs); a damaged one is quarantined (DamagedEntry), never used."""
        key = key.hex() if isinstance(key, bytes) else key
        found = self.check_entry(kind, key)
        if found:
            self.quarantine(kind, key, found)
            raise DamagedEntry(kind, key, self.path(kind, key), found)
        return self.path(kind, key)

    def read_checked(self, kind: str, key: bytes | str, name: str) -> bytes:
        """One small file of an entry, after checking its size and SHA-256 against the manifest
        (calibration.yaml, meta.json); a damaged entry is quarantined (DamagedEntry)."""
        key = key.hex() if isinstance(key, bytes) else key
        folder = self.path(kind, key)
        found = checked_file(folder, name)
        if isinstance(found, str):
            self.quarantine(kind, key, found)
            raise DamagedEntry(kind, key, folder, found)
        return found

    def copy_checked(self, kind: str, key: bytes | str, name: str, target: Path) -> None:
        """Copy the folder `name` of an entry to `target`, each file hashed as it is copied and
        compared with the manifest; on a mismatch the copy is removed and the entry quarantined."""
        key = key.hex() if isinstance(key, bytes) else key
        folder = self.path(kind, key)
        try:
            listed = manifest.files_of(folder)
        except READ_ERRORS:
            listed = None
        found = "manifest missing or unreadable" if listed is None else None
        if found is None:
            found = _copy_listed(folder, name, listed, Path(target))
        if found:
            shutil.rmtree(target, ignore_errors=True)
            self.quarantine(kind, key, found)
            raise DamagedEntry(kind, key, folder, found)

    def check_files(self, kind: str, key: str, prefixes: tuple[str, ...]) -> None:
        """Compare the files of an entry that start with `prefixes` with its manifest."""
        folder = self.path(kind, key)
        listed = json.loads((folder / MANIFEST).read_text())["files"]
        for name, (size, digest) in listed.items():
            if name.startswith(prefixes):
                data = (folder / name).read_bytes()
                if not manifest.matches(data, size, digest):
                    problem = f"content changed: {name}"
                    self.quarantine(kind, key, problem)
                    raise DamagedEntry(kind, key, folder, problem)

    # -- measurements -------------------------------------------------------------

    def put_measurement(self, key: bytes, summary: dict, raw: bytes, meta: dict,
                        events: dict | None = None, raw_compressed: bytes | None = None) -> bool:
        """Commit a measurement: one Zarr v3 zip (see `pointfile`) and its manifest.

        `summary` columns become the rows of one 2-D float64 array (names and
        dtypes in the attributes, so a point is one member, not one per
        column); `raw_compressed` is `pointfile.compress(raw)` if already done.
        """
        packed = raw_compressed if raw_compressed is not None else pointfile.compress(raw)
        names = list(summary)
        dtypes = [np.asarray(summary[n]).dtype.str for n in names]
        attributes = {"key": key.hex(), "raffinerie": __version__, **meta,
                      "summary_columns": names, "summary_dtypes": dtypes}
        table = np.vstack([np.asarray(summary[n], dtype=np.float64) for n in names])

        def write(folder: Path, digests: dict) -> None:
            path = folder / pointfile.FILE
            digests[str(path)] = pointfile.write(path, attributes, table, packed, len(raw), events,
                                                 (names, dtypes), default=json_default)
        committed = self.commit("measurements", key, write)
        if meta.get("identity"):
            self.remember_board(str(meta["identity"]))
        return committed

    def remember_board(self, identity: str) -> None:
        """Record that the cache holds points of board `identity` (`names/boards/`), once: `gc`
        keeps what the library needs on every board recorded, not only on the one it is given."""
        name = board_record(identity)
        if not (self.root / "names" / "boards" / f"{name}.json").is_file():
            self.record("boards", name, identity, {"identity": identity})

    def boards(self) -> list[str]:
        """The identities of the boards the cache has points of (as recorded; see `remember_board`)."""
        out = []
        for path in sorted((self.root / "names" / "boards").glob("*.json")):
            try:
                identity = json.loads(path.read_text())["inputs"]["identity"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a damaged record: the boards of the build records still count (see gc)
            if isinstance(identity, str):
                out.append(identity)
        return out

    def read_summary(self, key: bytes | str, columns: list[str] | None = None,
                     check: bool = False) -> dict[str, np.ndarray]:
        """The per-channel table; a damaged entry is quarantined (DamagedEntry).

        The zip's CRC-32 of the summary is checked on every read; `check`
        also compares the files of an entry in the old layout with its manifest.
        """
        with self.reading("measurements", key) as folder:
            if (folder / pointfile.FILE).is_file():
                names, dtypes, table = pointfile.read_summary(folder / pointfile.FILE)
            else:
                if check:
                    self.check_files("measurements", folder.name, CHECKED)
                attributes, table = _legacy_summary(folder)
                names, dtypes = attributes["summary_columns"], attributes["summary_dtypes"]
            wanted = set(columns) if columns is not None else None
            return {n: table[i].astype(dtypes[i]) for i, n in enumerate(names)
                    if wanted is None or n in wanted}

    def read_events(self, key: bytes | str, check: bool = False) -> dict[str, np.ndarray]:
        with self.reading("measurements", key) as folder:
            if (folder / pointfile.FILE).is_file():
                return pointfile.read_events(folder / pointfile.FILE)
            if check:
                self.check_files("measurements", folder.name, ("zarr.json", "events/"))
            group = _legacy_group(folder)
            return {name: array[...] for name, array in sorted(group["events"].arrays())}

    def read_raw(self, key: bytes | str) -> bytes:
        with self.reading("measurements", key) as folder:
            if (folder / pointfile.FILE).is_file():
                return pointfile.read_raw(folder / pointfile.FILE)
            return _legacy_group(folder)["raw"][...].tobytes()

    def meta(self, kind: str, key: bytes | str) -> dict:
        with self.reading(kind, key) as folder:
            if (folder / "meta.json").is_file():  # small: checked against the manifest on every read
                return json.loads(self.read_checked(kind, folder.name, "meta.json"))
            if (folder / pointfile.FILE).is_file():
                return pointfile.read_attributes(folder / pointfile.FILE)
            return dict(_legacy_group(folder).attrs)

    # -- datasets -------------------------------------------------------------------

    def put_dataset(self, key: bytes, meta: dict, write: Callable[[Path], dict], replace: bool = False) -> dict:
        """Commit a dataset: `write(folder)` writes its Zarr folder and returns its shape
        ({layout, rows, columns, points}), which joins `meta` in `meta.json`."""
        shape: dict = {}

        def commit(folder: Path, digests: dict) -> None:
            shape.update(write(folder / dataset.FOLDER))
            write_json(folder / "meta.json", {"key": key.hex(), "raffinerie": __version__, **meta, **shape},
                        digests)
        self.commit("datasets", key, commit, replace)
        return shape

    def dataset_folder(self, key: bytes | str) -> Path:
        return self.path("datasets", key) / dataset.FOLDER

    def open_dataset(self, key: bytes | str) -> "dataset.Dataset":
        """The dataset (see `raffinerie.store.dataset`); a damaged one is quarantined."""
        with self.reading("datasets", key) as folder:
            if not (folder / dataset.FOLDER).is_dir():
                raise EntryFormatError(f"no {dataset.FOLDER} (a dataset of an older raffinerie)")
            return dataset.Dataset(folder / dataset.FOLDER)

    def read_dataset(self, key: bytes | str, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every row of the dataset as numpy columns (the board, a constant, left out)."""
        with self.reading("datasets", key):
            data = self.open_dataset(key)
            names = columns if columns is not None else [c for c in data.columns if c != "board"]
            return data.to_columns(names)

    # -- build records and the journal ----------------------------------------------

    def record(self, kind: str, name: str, key: str, inputs: dict | None = None) -> None:
        """Remember what the last build of `name` made (for plan's reasons)."""
        folder = self.root / "names" / kind
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"  # threads of one process too
        write_json(tmp, {"name": name, "key": key, "inputs": inputs or {}, "time": time.time()})
        os.replace(tmp, folder / f"{name}.json")

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

    # -- maintenance ------------------------------------------------------------------

    def count(self) -> int:
        """Entries of every kind (a listing: no file is read)."""
        return sum(1 for kind in KINDS for _ in iter_entries(self.root, kind))

    def verify(self, quarantine: bool = True, step: Callable[[int], None] | None = None) -> list[Damage]:
        """Re-hash every entry; damaged ones move to `quarantine/` (never deleted).

        One entry at a time (memory does not grow with the cache); `step(done)` after each."""
        damaged = []
        done = 0
        for kind in KINDS:
            for key, path in self.entries(kind):
                done += 1
                if step is not None:
                    step(done)
                problem = manifest.problem(path)
                if problem is None and kind == "measurements":
                    problem = _check_tables(path)
                if problem:
                    damaged.append(Damage(kind, key, problem))
                    if quarantine:
                        self.quarantine(kind, key, problem)
        return damaged

    def usage(self, step: Callable[[int], None] | None = None) -> dict[str, tuple[int, int]]:
        """(entries, bytes) per kind; `step(done)` after each entry."""
        out = {}
        done = 0
        for kind in KINDS:
            count = size = 0
            for _, path in self.entries(kind):
                count += 1
                size += tree_size(path)
                done += 1
                if step is not None:
                    step(done)
            out[kind] = (count, size)
        return out

    def remove(self, kind: str, key: str) -> None:
        path = self.path(kind, key)
        doomed = self.root / "tmp" / f"gc-{key}-{uuid.uuid4().hex[:8]}"
        doomed.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, doomed)  # out of sight in one step, then deleted
        stamp.removed(self.root)
        shutil.rmtree(doomed, ignore_errors=True)

    def stale_tmp(self, older_than: float = 3600.0) -> list[Path]:
        folder = self.root / "tmp"
        if not folder.is_dir():
            return []
        now = time.time()
        return [p for p in folder.iterdir() if now - p.stat().st_mtime > older_than]


def board_record(identity: str) -> str:
    """The name of a board's record in `names/boards/`: its identity may hold `/` (emulator/model-4/seed-0)."""
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _lock_folder(root: Path) -> Path:
    folder = root / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RaffError("is a file, not the cache's locks folder; move it away", file=folder) from None
    return folder


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _writer_pid(name: str) -> int | None:
    """The pid in a `tmp/` folder name: `<kind>-<key16>-<pid>-<uuid8>`."""
    parts = name.split("-")
    return int(parts[-2]) if len(parts) >= 4 and parts[-2].isdigit() else None


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith(CRC_MISMATCH):  # zarr's crc32c codec prints both checksums as bytes: noise
        return "a chunk's CRC-32C does not match its bytes"
    return text[:200]


CRC_MISMATCH = "Stored and computed checksum do not match"  # zarr.codecs.Crc32cCodec's ValueError


def _copy_listed(folder: Path, name: str, files: dict, target: Path) -> str | None:
    """Copy folder `name` of an entry file by file, checking each against the manifest's `files`; the problem."""
    source, prefix = folder / name, name + "/"
    present = {str(p.relative_to(folder)) for p in source.rglob("*") if p.is_file()}
    listed = {n for n in files if n.startswith(prefix)}
    if present != listed:
        odd = sorted(present ^ listed)[0]
        return f"file missing: {odd}" if odd in listed else f"file not in the manifest: {odd}"
    for entry in sorted(listed):
        data = (folder / entry).read_bytes()
        size, digest = files[entry]
        if not manifest.matches(data, size, digest):
            return f"content changed: {entry}"
        out = target / entry[len(prefix):]
        out.parent.mkdir(parents=True, exist_ok=True)
        write_file(str(out), data)
    return None


def _check_tables(folder: Path) -> str | None:
    """Every array of a measurement read and decoded (the manifest was checked before)."""
    try:
        if (folder / pointfile.FILE).is_file():
            pointfile.check(folder / pointfile.FILE)
        else:
            _read_all(_legacy_group(folder))
    except READ_ERRORS as exc:
        return f"unreadable table: {_one_line(exc)}"
    return None


def _read_all(group) -> None:
    for _, array in group.arrays():
        array[...]
    for _, sub in group.groups():
        _read_all(sub)


def _legacy_group(folder: Path):
    """An entry written before measurements were one zip (a plain Zarr v3 folder)."""
    import zarr

    return zarr.open_group(str(folder), mode="r")


def _legacy_summary(folder: Path) -> tuple[dict, np.ndarray]:
    group = _legacy_group(folder)
    return dict(group.attrs), group["summary"][...]
