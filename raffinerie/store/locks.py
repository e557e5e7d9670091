"""The cache's locks: one per key (`hold`, `lock`), so that two processes do not acquire the same
point, and one on the whole cache (`cache_lock`), shared by builds and taken alone by gc and
verify. `flock` locks: the kernel releases them when a process dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from raffinerie.errors import RaffError


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


class Locks:
    """The locks of the cache at `self.root` (a room of `Store`)."""

    root: Path

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
