"""The entries of the cache: where they are, how one is made (written under `tmp/` and renamed
into place with its manifest), how one is read with its damage detected (quarantined, never
used), and how they are listed, sized and removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from raffinerie.errors import RaffError
from raffinerie.store import dataset, datasetcheck, manifest, stamp
from raffinerie.store.files import EntryFormatError, process_alive, rename_into_place, tree_size, write_file
from raffinerie.store.layout import KINDS, CacheIndex, entry_dir, iter_entries
from raffinerie.store.manifest import checked_file

# what reading a damaged entry can raise: bad JSON or Zarr metadata, a truncated
# or flipped zstd frame (numcodecs raises RuntimeError), a missing file, a bad CRC-32
# or a broken zip directory (BadZipFile)
READ_ERRORS = (EntryFormatError, OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError,
               zipfile.BadZipFile)
CRC_MISMATCH = "Stored and computed checksum do not match"  # zarr.codecs.Crc32cCodec's ValueError


@dataclass
class Damage:
    kind: str
    key: str
    problem: str


class DamagedEntry(RaffError):
    """A cache entry that cannot be read as written; it has been moved to quarantine/."""

    def __init__(self, kind: str, key: str, path: Path, problem: str):
        self.kind, self.key, self.problem = kind, key, problem
        remedy = ("the next build acquires it again" if kind == "measurements"
                  else "the next build makes it again")
        what = "cache entry of an older raffinerie" if datasetcheck.OUTDATED in problem else "damaged cache entry"
        super().__init__(f"{what} ({problem}); moved to quarantine/, {remedy}", file=path)


class Entries:
    """The entries of the cache at `self.root` (a room of `Store`); `journal` is the Records room's."""

    root: Path

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
            manifest.write(tmp, digests)
            if replace and final.is_dir():
                self.remove(kind, final.name)  # out of sight in one rename, then the new one in
            return rename_into_place(tmp, final)  # False: committed by another process meanwhile
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def clean_tmp(self) -> int:
        """Remove what dead processes left in `tmp/` (an entry being written when killed)."""
        removed = 0
        for path in self.stale_tmp(older_than=0.0):
            pid = _writer_pid(path.name)
            if pid is not None and not process_alive(pid):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed

    def stale_tmp(self, older_than: float = 3600.0) -> list[Path]:
        folder = self.root / "tmp"
        if not folder.is_dir():
            return []
        now = time.time()
        return [p for p in folder.iterdir() if now - p.stat().st_mtime > older_than]

    def remove(self, kind: str, key: str) -> None:
        path = self.path(kind, key)
        doomed = self.root / "tmp" / f"gc-{key}-{uuid.uuid4().hex[:8]}"
        doomed.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, doomed)  # out of sight in one step, then deleted
        stamp.removed(self.root)
        shutil.rmtree(doomed, ignore_errors=True)

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
            problem = str(exc) if isinstance(exc, datasetcheck.DatasetDamage) else f"unreadable: {one_line(exc)}"
            self.quarantine(kind, key, problem)
            raise DamagedEntry(kind, key, self.path(kind, key), problem) from None

    def check_entry(self, kind: str, key: str) -> str | None:
        """What is wrong with an entry's files against its manifest, or None.

        A dataset is also checked as opening it does (`datasetcheck.problem`): no file
        beyond the manifest's, and chunk checksums (an older one has none)."""
        found = manifest.problem(self.path(kind, key))
        if found is None and kind == "datasets":
            found = datasetcheck.problem(self.dataset_folder(key))
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
        listed = manifest.files_of(folder)
        for name, (size, digest) in listed.items():
            if name.startswith(prefixes):
                data = (folder / name).read_bytes()
                if not manifest.matches(data, size, digest):
                    problem = f"content changed: {name}"
                    self.quarantine(kind, key, problem)
                    raise DamagedEntry(kind, key, folder, problem)

    def dataset_folder(self, key: bytes | str) -> Path:
        return self.path("datasets", key) / dataset.FOLDER

    # -- maintenance ------------------------------------------------------------------

    def count(self) -> int:
        """Entries of every kind (a listing: no file is read)."""
        return sum(1 for kind in KINDS for _ in iter_entries(self.root, kind))

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


def _writer_pid(name: str) -> int | None:
    """The pid in a `tmp/` folder name: `<kind>-<key16>-<pid>-<uuid8>`."""
    parts = name.split("-")
    return int(parts[-2]) if len(parts) >= 4 and parts[-2].isdigit() else None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith(CRC_MISMATCH):  # zarr's crc32c codec prints both checksums as bytes: noise
        return "a chunk's CRC-32C does not match its bytes"
    return text[:200]


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
