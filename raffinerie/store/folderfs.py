"""A remote cache that is a folder on this machine (or a mounted one), and the local cache's
entries read for a push: every path opened one part at a time from the root with
`O_NOFOLLOW`, so that no link below the root is ever followed, and a link, a FIFO or a
device where a file or folder must be is refused (`Refused`, naming it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import stat as st
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from raffinerie.store.aio import to_the_end
from raffinerie.store.files import write_all
from raffinerie.store.manifest import Damaged
from raffinerie.store.transport import READ_CHUNK, FileType, Found, Refused, too_large

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO must not wait


def _type(mode: int) -> FileType:
    if st.S_ISREG(mode):
        return FileType.FILE
    if st.S_ISDIR(mode):
        return FileType.DIRECTORY
    if st.S_ISLNK(mode):
        return FileType.LINK
    return FileType.SPECIAL


def _what(mode: int) -> str:
    """A path's type in words, for a refusal."""
    if st.S_ISLNK(mode):
        return "a link"
    if st.S_ISFIFO(mode):
        return "a FIFO"
    if st.S_ISCHR(mode) or st.S_ISBLK(mode):
        return "a device"
    if st.S_ISSOCK(mode):
        return "a socket"
    return "a folder" if st.S_ISDIR(mode) else "a file"


def _parts(rel: str) -> list[str]:
    return rel.split("/") if rel else []


def _open_dir(root: Path, rel: str, create: bool = False) -> int:
    """A descriptor of the folder `root/rel`, opened part by part without following a link
    below `root` (the root itself is the user's choice: a link to it is followed).
    With `create`, missing folders are made."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    parts = _parts(rel)
    try:
        for i, part in enumerate(parts):
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                raise Refused(f"{'/'.join(parts[:i + 1])} is {_what(mode)}, not a folder") from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def split(rel: str) -> tuple[str, str]:
    parent, _, name = rel.rpartition("/")
    return parent, name


def lstat(root: Path, rel: str) -> Found | None:
    """What `root/rel` is (a link is a link), None if it is not there."""
    try:
        if not rel:
            s = os.stat(root)
        else:
            parent, name = split(rel)
            fd = _open_dir(root, parent)
            try:
                s = os.stat(name, dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)
    except FileNotFoundError:
        return None
    return Found(_type(s.st_mode), s.st_size, s.st_mtime)


def open_file(root: Path, rel: str) -> tuple[int, int]:
    """(descriptor, size) of the regular file `root/rel`; Refused if it is anything else."""
    parent, name = split(rel)
    fd = _open_dir(root, parent)
    try:
        before = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not st.S_ISREG(before.st_mode):
            raise Refused(f"{rel} is {_what(before.st_mode)}, not a regular file")
        try:
            f = os.open(name, _FILE_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # made a link since the stat
                raise Refused(f"{rel} is a link, not a regular file") from None
            raise
    finally:
        os.close(fd)
    now = os.fstat(f)
    if not st.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
        os.close(f)
        raise Refused(f"{rel} was replaced while being opened")
    return f, now.st_size


def _read_exactly(fd: int, size: int, rel: str) -> bytes:
    out = bytearray()
    while len(out) < size:
        block = os.read(fd, min(size - len(out), READ_CHUNK))
        if not block:
            raise Damaged(f"{rel} ended after {len(out)} bytes, its manifest says {size}")
        out += block
    return bytes(out)


def read_plain(root: Path, rel: str, limit: int) -> bytes:
    """The regular file `root/rel`, refused if larger than `limit` bytes."""
    fd, size = open_file(root, rel)
    try:
        if size > limit:
            raise too_large(rel, size, limit)
        return _read_exactly(fd, size, rel)
    finally:
        os.close(fd)


def read_plain_or_none(root: Path, rel: str, limit: int) -> bytes | None:
    try:
        return read_plain(root, rel, limit)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, Refused, Damaged):
        return None


def write_plain(root: Path, rel: str, data: bytes) -> None:
    parent, name = split(rel)
    fd = _open_dir(root, parent, create=True)
    try:
        f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        write_all(f, data)
    finally:
        os.close(f)


def remove_plain(root: Path, rel: str) -> None:
    """Remove `root/rel`, a file or a folder with all in it (a link is removed, not followed)."""
    parent, name = split(rel)
    try:
        fd = _open_dir(root, parent)
    except OSError:
        return
    try:
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        if st.S_ISDIR(mode):
            shutil.rmtree(name, dir_fd=fd, ignore_errors=True)
        else:
            os.unlink(name, dir_fd=fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the transport ----------------------------------------------------------------------------------

class FolderReader:
    """A regular file of a FolderTransport, read with pread in its thread pool."""

    def __init__(self, transport: "FolderTransport", fd: int, size: int):
        self.transport, self.fd, self.size = transport, fd, size

    async def read(self, offset: int, n: int) -> bytes:
        return await self.transport._run(os.pread, self.fd, n, offset)

    async def close(self) -> None:
        os.close(self.fd)


class FolderTransport:
    """A folder on this machine (or a mounted one): blocking calls in a thread pool, and no
    link below the folder followed (see `_open_dir`)."""

    def __init__(self, root: Path):
        self.root = root
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="raff-remote")

    def _p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    async def _run(self, fn, *args):
        return await to_the_end(asyncio.get_running_loop().run_in_executor(self.pool, fn, *args))

    async def ls(self, rel: str) -> list[tuple[str, Found]]:
        def ls() -> list[tuple[str, Found]]:
            fd = _open_dir(self.root, rel)
            try:
                with os.scandir(fd) as it:
                    out = []
                    for e in it:
                        s = e.stat(follow_symlinks=False)
                        out.append((e.name, Found(_type(s.st_mode), s.st_size, s.st_mtime)))
                    return out
            finally:
                os.close(fd)
        return await self._run(ls)

    async def stat(self, rel: str) -> Found | None:
        return await self._run(lstat, self.root, rel)

    async def read(self, rel: str, limit: int) -> bytes:
        return await self._run(read_plain, self.root, rel, limit)

    async def open_reader(self, rel: str) -> FolderReader:
        fd, size = await self._run(open_file, self.root, rel)
        return FolderReader(self, fd, size)

    async def write(self, rel: str, data: bytes) -> None:
        def write() -> None:
            try:
                write_plain(self.root, rel, data)
            except Refused:
                raise
            except OSError as exc:  # the whole path, not the last part the call saw
                raise type(exc)(exc.errno, exc.strerror, str(self._p(rel))) from None
        await self._run(write)

    async def mkdirs(self, rel: str) -> None:
        def mkdirs() -> None:
            if not rel:
                self.root.mkdir(parents=True, exist_ok=True)
            else:
                os.close(_open_dir(self.root, rel, create=True))
        await self._run(mkdirs)

    async def rename(self, src: str, dst: str) -> None:
        def rename() -> None:
            (sp, sn), (dp, dn) = split(src), split(dst)
            sfd = _open_dir(self.root, sp)
            try:
                dfd = _open_dir(self.root, dp)
                try:
                    os.rename(sn, dn, src_dir_fd=sfd, dst_dir_fd=dfd)
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)
        await self._run(rename)

    async def rmtree(self, rel: str) -> None:
        await self._run(remove_plain, self.root, rel)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
