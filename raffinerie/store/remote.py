"""The cache shared between test stands: a remote copy of the cache's layout.

A remote cache is a folder, on this machine (a path or `file://` URL) or on
an XRootD server such as EOS (`root://host[:port]//path`, through fsspec
and fsspec-xrootd, see `xrootdfs`), laid out as the local cache is:
`<kind>/<key[:2]>/<key>/` for entries, `names/<kind>/<name>.json` for the
records of the last builds that were pushed, and `tmp/` for entries being
written.

Entries are content-addressed and immutable, so no locks are needed:

- `push` writes an entry's files under a name of its own in the remote
  `tmp/` and then renames that folder into `<kind>/<key[:2]>/<key>/` in one
  step. A push that fails removes its folder in `tmp/`; one that was killed
  leaves it, and a later push removes it (see `_stale_tmp` for which). An
  entry already there is skipped; if another stand renamed the same entry
  into place first, the rename fails and our copy is dropped.
- `pull` downloads into the local cache's `tmp/`, checks every file against
  the entry's `manifest.json` (size and SHA-256), and renames the folder
  into place, as `Store.commit` does. A damaged remote entry is never used,
  and a local entry is never overwritten.

Nothing from outside is trusted (issue 27). An entry is the list of regular
files its `manifest.json` names, and nothing else: an entry without one is
refused, and both directions are driven by the manifest, never by walking
the folder (so a link loop cannot make a walk endless). Every name must be
a plain relative path inside the entry (no `..`, no absolute path, no empty
or `.` part, no NUL), every file a regular file of the size the manifest
says, and the number of files and bytes are bounded (`MAX_FILES`,
`MAX_ENTRY_BYTES`, `MAX_MANIFEST_BYTES`). On a folder (the remote's, and
the local cache's when pushing) no link below the root is ever followed:
every path is opened one part at a time with `O_NOFOLLOW` from the root, so
a link, a FIFO or a device refuses the entry. An XRootD server resolves
links itself and shows none; there the server's stat type (file, folder,
other) and the manifest's hashes decide. A refused entry is one line
naming it (RemoteDamaged, LocalDamaged), and the others are still copied.

Errors (an unreachable server, a refused permission, a missing folder)
end in one `RaffError` naming the URL and the problem; the XRootD client's
timeouts are cut to seconds (see `xrootdfs.configure_client`). A problem
of the local cache while pulling (a full disk) names the local cache, not
the URL (LocalCacheError).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import stat as st
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from raffinerie.errors import RaffError
from raffinerie.store.files import process_alive, write_all
from raffinerie.store.layout import KINDS, MANIFEST

_HEX = frozenset("0123456789abcdef")
BATCH = 256  # entries per round of concurrent transfers (bounds what is held at once)
ENTRIES_IN_FLIGHT = 32
FILES_IN_FLIGHT = 64
RECORD_KINDS = ("datasets", "analyses")  # names/<kind>/<name>.json pushed with their entries

# Bounds on what one entry may claim, checked before any of its files is read. A
# dataset is one file per column per block of 4,096 points (README, "How a dataset
# is stored"): a 131,072-point scan is a few thousand files, so 100,000 is a
# margin of 30 or more; its manifest is ~110 bytes a file (Store.commit's JSON),
# about 11 MB, and 32 MiB allows three times that. The bytes bound is far above
# any entry raffinerie makes (that scan's dataset is under 1 GB) and stops a
# manifest that claims more than a disk holds; RAFF_REMOTE_MAX_ENTRY_BYTES raises it.
MAX_FILES = 100_000
MAX_MANIFEST_BYTES = 32 << 20
MAX_ENTRY_BYTES = int(os.environ.get("RAFF_REMOTE_MAX_ENTRY_BYTES", str(256 << 30)))
MAX_RECORD_BYTES = 16 << 20   # names/*.json and meta.json, read to select entries (a few kB each)
NAME_MAX = 255                # bytes in one part of a file name (Linux's NAME_MAX)
PATH_MAX = 1024               # bytes in a name inside an entry (zarr's longest are ~100)
READ_CHUNK = 4 << 20          # a pull streams files in pieces: FILES_IN_FLIGHT of them hold 256 MiB at most
# A folder in the remote's tmp/ older than this is a push that died (one entry's
# files are written within minutes; see `_stale_tmp`).
STALE_TMP_SECONDS = 24 * 3600

Progress = Callable[["Transfer"], None]


class RemoteError(RaffError):
    """A remote cache that cannot be reached, read or written."""

    def __init__(self, url: str, problem: str):
        self.url = url
        super().__init__(f"{url}: {problem}")


class LocalCacheError(RaffError):
    """The local cache could not take what was pulled (a full disk, a refused write)."""

    def __init__(self, root: Path, exc: OSError, what: str, url: str):
        self.root = root
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            problem = (f"no space left on device (pulling {what} from {url}); the entries already pulled "
                       "are kept: free some space (`raff cache gc`) and pull again")
        else:
            problem = f"cannot write the cache ({exc.strerror or exc}) while pulling {what} from {url}"
        super().__init__(problem, file=root)


class RemoteDamaged(RaffError):
    """Remote entries that do not match their manifest; they were not pulled."""

    def __init__(self, url: str, transfer: "Transfer"):
        self.url, self.transfer = url, transfer
        damaged = transfer.damaged
        what = "entry" if len(damaged) == 1 else f"{len(damaged)} entries"
        super().__init__(f"{url}: damaged {what} not pulled: {_listed(damaged)}; "
                         f"the {transfer.entries} others were pulled")


class LocalDamaged(RaffError):
    """Local entries that do not match their manifest; they were not pushed."""

    def __init__(self, url: str, transfer: "Transfer"):
        self.url, self.transfer = url, transfer
        damaged = transfer.damaged
        super().__init__(f"{len(damaged)} damaged local entr{'y' if len(damaged) == 1 else 'ies'} not pushed "
                         f"to {url}: {_listed(damaged)}; `raff cache verify` moves them to quarantine/")


def _listed(damaged: list[tuple[str, str, str]]) -> str:
    """The first three damaged entries with their problems, and how many more."""
    first = "; ".join(f"{kind}/{key} ({problem})" for kind, key, problem in damaged[:3])
    return first + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")


@dataclass
class Transfer:
    """What a push or pull did."""

    direction: str
    entries: int = 0            # copied
    present: int = 0            # already at the destination: skipped
    bytes: int = 0              # copied
    seconds: float = 0.0
    missing: list[tuple[str, str]] = field(default_factory=list)        # asked for, not in the source
    damaged: list[tuple[str, str, str]] = field(default_factory=list)   # (kind, key, problem)
    kind: str = ""              # the kind being transferred now (for progress)

    def add(self, other: "Transfer") -> None:
        self.entries += other.entries
        self.present += other.present
        self.bytes += other.bytes
        self.seconds += other.seconds
        self.missing += other.missing
        self.damaged += other.damaged


class _Damage(Exception):
    pass


class Refused(OSError):
    """A path that is not a plain file or folder where one must be (a link, a FIFO, a device),
    or a file larger than what may be read; the message names it."""


@dataclass(frozen=True)
class Found:
    """What a path is: `type` is file, directory, link or special (a FIFO, device, socket)."""

    type: str
    size: int
    mtime: float


# -- paths below a root on this machine, never following a link ------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO must not wait


def _type(mode: int) -> str:
    if st.S_ISREG(mode):
        return "file"
    if st.S_ISDIR(mode):
        return "directory"
    if st.S_ISLNK(mode):
        return "link"
    return "special"


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


def _split(rel: str) -> tuple[str, str]:
    parent, _, name = rel.rpartition("/")
    return parent, name


def _lstat(root: Path, rel: str) -> Found | None:
    """What `root/rel` is (a link is a link), None if it is not there."""
    try:
        if not rel:
            s = os.stat(root)
        else:
            parent, name = _split(rel)
            fd = _open_dir(root, parent)
            try:
                s = os.stat(name, dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)
    except FileNotFoundError:
        return None
    return Found(_type(s.st_mode), s.st_size, s.st_mtime)


def _open_file(root: Path, rel: str) -> tuple[int, int]:
    """(descriptor, size) of the regular file `root/rel`; Refused if it is anything else."""
    parent, name = _split(rel)
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
            raise _Damage(f"{rel} ended after {len(out)} bytes, its manifest says {size}")
        out += block
    return bytes(out)


def _read_plain(root: Path, rel: str, limit: int) -> bytes:
    """The regular file `root/rel`, refused if larger than `limit` bytes."""
    fd, size = _open_file(root, rel)
    try:
        if size > limit:
            raise Refused(f"{rel} is {size:,} bytes, more than the {limit:,} allowed")
        return _read_exactly(fd, size, rel)
    finally:
        os.close(fd)


def _read_plain_or_none(root: Path, rel: str, limit: int = MAX_RECORD_BYTES) -> bytes | None:
    try:
        return _read_plain(root, rel, limit)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, Refused, _Damage):
        return None


def _write_plain(root: Path, rel: str, data: bytes) -> None:
    parent, name = _split(rel)
    fd = _open_dir(root, parent, create=True)
    try:
        f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        write_all(f, data)
    finally:
        os.close(f)


def _remove_plain(root: Path, rel: str) -> None:
    """Remove `root/rel`, a file or a folder with all in it (a link is removed, not followed)."""
    parent, name = _split(rel)
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


# -- where the files are: a local folder, or an XRootD server ---------------------------------

class _LocalReader:
    def __init__(self, backend: "_LocalBackend", fd: int, size: int):
        self.b, self.fd, self.size = backend, fd, size

    async def read(self, offset: int, n: int) -> bytes:
        return await self.b._run(os.pread, self.fd, n, offset)

    async def close(self) -> None:
        os.close(self.fd)


class _LocalBackend:
    """A folder on this machine (or a mounted one): blocking calls in a thread pool, and no
    link below the folder followed (see `_open_dir`)."""

    def __init__(self, root: Path):
        self.root = root
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="raff-remote")

    def _p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    async def _run(self, fn, *args):
        return await _to_the_end(asyncio.get_running_loop().run_in_executor(self.pool, fn, *args))

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
        return await self._run(_lstat, self.root, rel)

    async def read(self, rel: str, limit: int) -> bytes:
        return await self._run(_read_plain, self.root, rel, limit)

    async def open_reader(self, rel: str) -> _LocalReader:
        fd, size = await self._run(_open_file, self.root, rel)
        return _LocalReader(self, fd, size)

    async def write(self, rel: str, data: bytes) -> None:
        def write() -> None:
            try:
                _write_plain(self.root, rel, data)
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
            (sp, sn), (dp, dn) = _split(src), _split(dst)
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
        await self._run(_remove_plain, self.root, rel)

    def close(self) -> None:
        self.pool.shutdown(wait=False)


class _XRootDBackend:
    """An XRootD server, through `xrootdfs.XRootDFS` (fsspec-xrootd). The server resolves
    links itself; what it reports as neither file nor folder ("other") is refused."""

    def __init__(self, url: str):
        from raffinerie.store.xrootdfs import filesystem

        self.fs, self.base = filesystem(url)

    def _p(self, rel: str) -> str:
        return f"{self.base.rstrip('/')}/{rel}" if rel else self.base

    @staticmethod
    def _found(info: dict) -> Found:
        kind = {"file": "file", "directory": "directory"}.get(info["type"], "special")
        return Found(kind, int(info.get("size") or 0), float(info.get("mtime") or 0))

    async def ls(self, rel: str) -> list[tuple[str, Found]]:
        entries = await self.fs._ls(self._p(rel), detail=True)
        return [(e["name"].rstrip("/").rsplit("/", 1)[-1], self._found(e)) for e in entries]

    async def stat(self, rel: str) -> Found | None:
        try:
            return self._found(await self.fs._info(self._p(rel)))
        except FileNotFoundError:
            return None

    async def _regular(self, rel: str) -> int:
        found = await self.stat(rel)
        if found is None:
            raise FileNotFoundError(2, "no such file", rel)
        if found.type != "file":
            what = "a folder" if found.type == "directory" else "neither a file nor a folder (a FIFO or device?)"
            raise Refused(f"{rel} is {what}, not a regular file")
        return found.size

    async def read(self, rel: str, limit: int) -> bytes:
        size = await self._regular(rel)
        if size > limit:
            raise Refused(f"{rel} is {size:,} bytes, more than the {limit:,} allowed")
        return await self.fs._read_once(self._p(rel), size)

    async def open_reader(self, rel: str):
        size = await self._regular(rel)
        return await self.fs._open_reader(self._p(rel), size)

    async def write(self, rel: str, data: bytes) -> None:
        await self.fs._pipe_file(self._p(rel), data)

    async def mkdirs(self, rel: str) -> None:
        await self.fs._makedirs(self._p(rel), exist_ok=True)

    async def rename(self, src: str, dst: str) -> None:
        await self.fs._mv(self._p(src), self._p(dst))

    async def rmtree(self, rel: str) -> None:
        try:
            await self.fs._rm(self._p(rel), recursive=True)
        except OSError:
            pass

    def close(self) -> None:
        self.fs.close()


def _backend(url: str):
    if url.startswith("root://"):
        return _XRootDBackend(url)
    if url.startswith("file://"):
        return _LocalBackend(Path(url[len("file://"):]).absolute())
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise RaffError(f"{url}: unsupported URL scheme {scheme}:// (use root://host//path, file:///path or a path)")
    return _LocalBackend(Path(url).absolute())


def writer_host() -> str:
    """This machine in the names of what a push writes in the remote's tmp/: the host name
    (no '-', which separates the parts) and the kernel's boot id, so that two machines, or
    containers, with one host name are told apart when a later push judges whether the
    writer of a folder is dead."""
    host = socket.gethostname().replace("-", "_")[:32]
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        boot = ""
    return f"{host}.{boot}" if boot else host


# -- the remote cache ---------------------------------------------------------------------------

class RemoteCache:
    """A shared cache at `url`; see the module's docstring.

    `create` makes the folder if it is missing (for pushing); otherwise a
    missing folder is an error.
    """

    def __init__(self, url: str, create: bool = False, entries_in_flight: int = ENTRIES_IN_FLIGHT):
        self.url = url
        self.entries_in_flight = max(1, entries_in_flight)
        self._host = writer_host()
        self._writer = f"{self._host}-{os.getpid()}"
        self._tmp_cleaned = False
        try:
            from fsspec.asyn import get_loop
        except ImportError:
            raise RaffError("reaching a remote cache needs fsspec (pip install fsspec)") from None
        try:
            self._b = _backend(url)
        except ImportError as exc:
            raise RaffError(f"{url}: root:// URLs need the XRootD client ({exc.name} is not installed: "
                            "pip install 'raffinerie[xrootd]')") from None
        except ValueError as exc:
            raise RemoteError(url, str(exc)) from None
        self._loop = get_loop()
        self._run(self._check, create)

    # -- plumbing ---------------------------------------------------------------------------

    def _run(self, fn: Callable, *args: Any) -> Any:
        """Run the coroutine function `fn(*args)` on fsspec's loop; errors become one RemoteError
        (a RaffError raised inside, such as LocalCacheError, stays what it is)."""
        from fsspec.asyn import sync

        try:
            return sync(self._loop, fn, *args)
        except RaffError:
            raise
        except BaseExceptionGroup as group:  # from a TaskGroup: the first is the cause
            first = _first(group)
            if isinstance(first, RaffError):
                raise first from None
            raise RemoteError(self.url, _describe(first)) from None
        except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
            raise RemoteError(self.url, _describe(exc)) from None

    async def _check(self, create: bool) -> None:
        found = await self._b.stat("")
        if found is None and create:
            await self._b.mkdirs("")
            found = await self._b.stat("")
        if found is None:
            raise RemoteError(self.url, "no such folder (push to it first, or check the path)")
        if found.type != "directory":
            raise RemoteError(self.url, "not a folder")

    def close(self) -> None:
        self._b.close()

    def __enter__(self) -> "RemoteCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what it holds ------------------------------------------------------------------------

    def keys(self, kind: str) -> Iterator[str]:
        """Every entry key of `kind`, shard by shard (one listing held at a time).

        An entry that is a link or a special file is listed too, so that the pull
        refuses it with a line of its own rather than passing over it in silence."""
        _check_kind(kind)
        for shard in self._run(self._names, kind):
            if len(shard) == 2 and _HEX.issuperset(shard):
                for name in self._run(self._names, f"{kind}/{shard}"):
                    if len(name) == 64 and _HEX.issuperset(name):
                        yield name

    async def _names(self, rel: str) -> list[str]:
        """What `rel` holds but plain files (folders, and links and the like, which are refused later)."""
        try:
            return sorted(name for name, found in await self._b.ls(rel) if found.type != "file")
        except FileNotFoundError:
            return []

    def has(self, kind: str, key: str) -> bool:
        _check_kind(kind)
        found = self._run(self._b.stat, _entry(kind, key))
        return bool(found and found.type == "directory")

    def present(self, kind: str, keys: Iterable[str]) -> set[str]:
        """Which of `keys` the remote holds (one listing per shard, not one request per key)."""
        _check_kind(kind)
        keys = list(keys)
        return self._run(self._present, kind, keys) if keys else set()

    async def _present(self, kind: str, keys: list[str]) -> set[str]:
        """Which of `keys` the remote holds: one listing per shard, concurrently."""
        return (await self._shards(kind, keys))[0]

    async def _shards(self, kind: str, keys: list[str]) -> tuple[set[str], list[str]]:
        """(which of `keys` the remote holds, the shard folders of `keys` it lacks)."""
        shards = sorted({k[:2] for k in keys})

        async def listing(shard: str) -> list[str] | None:
            try:
                return [name for name, found in await self._b.ls(f"{kind}/{shard}") if found.type != "file"]
            except FileNotFoundError:
                return None
        listed = dict(zip(shards, await asyncio.gather(*(listing(s) for s in shards))))
        held = {name for names in listed.values() if names for name in names}
        return {k for k in keys if k in held}, [s for s, names in listed.items() if names is None]

    def read_record(self, kind: str, name: str) -> dict | None:
        """The record of the last pushed build of `name` (names/<kind>/<name>.json)."""
        return _json(self._run(self._read_or_none, f"names/{kind}/{name}.json"))

    def read_meta(self, kind: str, key: str) -> dict | None:
        """An entry's meta.json, if it has one."""
        return _json(self._run(self._read_or_none, f"{_entry(kind, key)}/meta.json"))

    async def _read_or_none(self, rel: str) -> bytes | None:
        """A small file (a record, a meta.json), None if it is not there; a link, a FIFO or a
        file larger than MAX_RECORD_BYTES is refused (Refused: one line naming it)."""
        try:
            return await self._b.read(rel, MAX_RECORD_BYTES)
        except (FileNotFoundError, IsADirectoryError):
            return None

    def write_record(self, kind: str, name: str, data: bytes) -> None:
        """Replace names/<kind>/<name>.json in one step (written under tmp/ and renamed)."""
        self._run(self._write_record, kind, name, data)

    async def _write_record(self, kind: str, name: str, data: bytes) -> None:
        tmp = f"tmp/names-{self._writer}-{uuid.uuid4().hex[:8]}.json"
        try:
            await self._b.write(tmp, data)
            await self._b.mkdirs(f"names/{kind}")
            await self._b.rename(tmp, f"names/{kind}/{name}.json")
        except BaseException:
            await _quietly(self._b.rmtree(tmp))
            raise

    # -- push -------------------------------------------------------------------------------------

    def push(self, store, kind: str, keys: Iterable[str] | None = None,
             progress: Progress | None = None, strict: bool = True) -> Transfer:
        """Copy local entries of `kind` (all of them if `keys` is None) that the remote lacks.

        A local entry that does not match its manifest (or has none, or a link
        where a file is) is not pushed; with `strict` that ends in LocalDamaged
        once the rest is pushed. The first push of this RemoteCache removes what
        dead pushes left in the remote's tmp/ (see `_stale_tmp`).
        """
        _check_kind(kind)
        if not self._tmp_cleaned:
            self._tmp_cleaned = True
            self._run(self._clean_tmp)
        t = Transfer("push", kind=kind)
        t0 = time.perf_counter()
        source = (k for k, _ in store.entries(kind)) if keys is None else keys
        for batch in _batches(source):
            self._run(self._push_batch, store, kind, batch, t, progress)
        t.seconds = time.perf_counter() - t0
        if strict and t.damaged:
            raise LocalDamaged(self.url, t)
        return t

    async def _clean_tmp(self) -> None:
        """Remove the folders (and records) in the remote's tmp/ that dead pushes left."""
        try:
            listing = await self._b.ls("tmp")
        except (FileNotFoundError, NotADirectoryError, Refused):
            return
        now = time.time()
        doomed = [name for name, found in listing if _stale_tmp(name, found.mtime, now, self._host)]
        for start in range(0, len(doomed), self.entries_in_flight):
            await asyncio.gather(*(self._b.rmtree(f"tmp/{n}") for n in doomed[start:start + self.entries_in_flight]))

    async def _push_batch(self, store, kind: str, keys: list[str], t: Transfer, progress) -> None:
        local = [k for k in keys if store.has(kind, k)]
        t.missing += [(kind, k) for k in keys if not store.has(kind, k)]
        there, new_shards = await self._shards(kind, local)
        t.present += len(there)
        todo = [k for k in local if k not in there]
        if not todo:
            _tell(progress, t)
            return
        entries, files = asyncio.Semaphore(self.entries_in_flight), asyncio.Semaphore(FILES_IN_FLIGHT)
        await asyncio.gather(self._b.mkdirs("tmp"), *(self._b.mkdirs(f"{kind}/{s}") for s in new_shards))
        async with asyncio.TaskGroup() as group:
            for key in todo:
                group.create_task(self._push_one(store, kind, key, t, entries, files, progress))

    async def _push_one(self, store, kind: str, key: str, t: Transfer, entries, files, progress) -> None:
        async with entries:
            root, entry = Path(store.root), _entry(kind, key)
            loop = asyncio.get_running_loop()
            tmp = f"tmp/{kind}-{key[:16]}-{self._writer}-{uuid.uuid4().hex[:8]}"
            placed = False
            try:
                try:
                    raw = await loop.run_in_executor(None, _read_local, root, f"{entry}/{MANIFEST}",
                                                     MAX_MANIFEST_BYTES, entry)
                except FileNotFoundError:
                    if _lstat(root, entry) is None:  # removed locally meanwhile (gc): nothing to push
                        t.missing.append((kind, key))
                        return
                    raise _Damage("no manifest.json") from None
                manifest = _manifest(raw)

                async def copy(rel: str, size: int, digest: str) -> int:
                    async with files:
                        try:
                            data = await loop.run_in_executor(None, _read_local, root, f"{entry}/{rel}", size, entry)
                        except FileNotFoundError:
                            raise _Damage(f"file missing: {rel}") from None
                        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
                            raise _Damage(f"content changed: {rel}")
                        await self._b.write(f"{tmp}/{rel}", data)
                        return len(data)
                await self._b.write(f"{tmp}/{MANIFEST}", raw)
                sizes = await _all(copy(rel, size, digest) for rel, (size, digest) in manifest.items())
                await self._check_written(tmp, raw, manifest, files)
                try:
                    await self._b.rename(tmp, entry)
                    placed = True
                except OSError:
                    found = await self._b.stat(entry)
                    if not (found and found.type == "directory"):
                        raise
                    t.present += 1  # another stand pushed it first: ours is dropped
                    _tell(progress, t)
                    return
            except _Damage as exc:
                t.damaged.append((kind, key, str(exc)))
                return
            finally:
                if not placed:  # a failed push (a full remote) leaves nothing in tmp/
                    await _quietly(self._b.rmtree(tmp))
            t.entries += 1
            t.bytes += sum(sizes) + len(raw)
            _tell(progress, t)

    async def _check_written(self, tmp: str, raw: bytes, manifest: dict, files) -> None:
        """The sizes the remote kept of an entry's files, read back before it is renamed into
        place: an XRootD server on a full disk answered "ok" to a write it cut short (seen
        with a full tmpfs), and the entry would have appeared with a truncated file. One
        listing per folder of the entry."""
        folders: dict[str, dict[str, int]] = {}
        for rel, size in [(MANIFEST, len(raw)), *((rel, size) for rel, (size, _) in manifest.items())]:
            parent, name = _split(rel)
            folders.setdefault(parent, {})[name] = size

        async def check(parent: str, names: dict[str, int]) -> None:
            async with files:
                listing = dict(await self._b.ls(f"{tmp}/{parent}" if parent else tmp))
            for name, size in names.items():
                found = listing.get(name)
                if found is None or found.type != "file" or found.size != size:
                    kept = f"{found.size:,}" if found is not None else "none"
                    raise OSError(f"{tmp}/{parent + '/' if parent else ''}{name}: the server kept {kept} of "
                                  f"the {size:,} bytes written (no space left on its disk?)")
        await _all(check(parent, names) for parent, names in folders.items())

    # -- pull ---------------------------------------------------------------------------------

    def pull(self, store, kind: str, keys: Iterable[str] | None = None,
             progress: Progress | None = None, strict: bool = True) -> Transfer:
        """Copy remote entries of `kind` (all of them if `keys` is None) that the local cache lacks.

        Every file is checked against the entry's manifest before the entry
        is renamed into place; a damaged entry is not pulled, and with
        `strict` that ends in RemoteDamaged once the rest is pulled. A local
        cache that cannot take the files (a full disk) ends the pull in
        LocalCacheError, the entries already pulled kept.
        """
        _check_kind(kind)
        t = Transfer("pull", kind=kind)
        t0 = time.perf_counter()
        source = self.keys(kind) if keys is None else keys
        for batch in _batches(source):
            self._run(self._pull_batch, store, kind, batch, t, progress)
        t.seconds = time.perf_counter() - t0
        if strict and t.damaged:
            raise RemoteDamaged(self.url, t)
        return t

    async def _pull_batch(self, store, kind: str, keys: list[str], t: Transfer, progress) -> None:
        wanted = [k for k in keys if not store.has(kind, k)]
        t.present += len(keys) - len(wanted)
        there = await self._present(kind, wanted) if wanted else set()
        t.missing += [(kind, k) for k in wanted if k not in there]
        todo = [k for k in wanted if k in there]
        if not todo:
            _tell(progress, t)
            return
        entries, files = asyncio.Semaphore(self.entries_in_flight), asyncio.Semaphore(FILES_IN_FLIGHT)
        async with asyncio.TaskGroup() as group:
            for key in todo:
                group.create_task(self._pull_one(store, kind, key, t, entries, files, progress))

    async def _pull_one(self, store, kind: str, key: str, t: Transfer, entries, files, progress) -> None:
        async with entries:
            loop = asyncio.get_running_loop()
            final = Path(store.path(kind, key))
            tmp = Path(store.root) / "tmp" / f"{kind}-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            remote = _entry(kind, key)

            def local(fn, *args):  # a local write: its failure names the local cache, not the URL
                return _to_the_end(loop.run_in_executor(None, _local_call, Path(store.root), f"{kind}/{key}",
                                                        self.url, fn, *args))
            try:
                found = await self._b.stat(remote)
                if found is None:  # removed meanwhile
                    t.missing.append((kind, key))
                    return
                if found.type != "directory":
                    raise _Damage(f"the entry is {'a link' if found.type == 'link' else 'not a folder'}")
                try:
                    raw = await self._b.read(f"{remote}/{MANIFEST}", MAX_MANIFEST_BYTES)
                except FileNotFoundError:
                    raise _Damage("no manifest.json") from None
                manifest = _manifest(raw)
                await local(_make_tmp, tmp, raw)

                async def copy(rel: str, size: int, digest: str) -> int:
                    async with files:
                        await self._fetch(f"{remote}/{rel}", rel, size, digest, tmp, local)
                        return size
                sizes = await _all(copy(rel, size, digest) for rel, (size, digest) in manifest.items())
                committed = await local(_rename_into_place, tmp, final)
            except Refused as exc:
                t.damaged.append((kind, key, str(exc).removeprefix(remote + "/")))
                return
            except _Damage as exc:
                t.damaged.append((kind, key, str(exc)))
                return
            finally:
                # synchronous: this runs even in a task cancelled because another entry failed
                shutil.rmtree(tmp, ignore_errors=True)
            if committed:
                t.entries += 1
                t.bytes += sum(sizes) + len(raw)
            else:
                t.present += 1  # made locally meanwhile: the local one stays
            _tell(progress, t)

    async def _fetch(self, path: str, rel: str, size: int, digest: str, tmp: Path, local) -> None:
        """Stream one remote file into `tmp/rel`, checking its type, size and SHA-256."""
        try:
            reader = await self._b.open_reader(path)
        except FileNotFoundError:
            raise _Damage(f"file missing: {rel}") from None
        out = None
        try:
            if reader.size != size:
                raise _Damage(f"size of {rel} is {reader.size}, its manifest says {size}")
            out = await local(_create, tmp, rel)
            h, offset = hashlib.sha256(), 0
            while offset < size:
                block = await reader.read(offset, min(READ_CHUNK, size - offset))
                if not block:
                    raise _Damage(f"{rel} ended after {offset} bytes, its manifest says {size}")
                h.update(block)
                await local(out.write, block)
                offset += len(block)
            if h.hexdigest() != digest:
                raise _Damage(f"content changed: {rel}")
            done, out = out, None
            await local(done.close)  # its last bytes are written here: a full disk shows here too
        finally:
            await reader.close()
            if out is not None:
                with contextlib.suppress(OSError):
                    out.close()


# -- which entries the last builds of some procedures used -------------------------------------------

@dataclass
class Selection:
    """Entry keys per kind (in order, each once) and the build records they came from."""

    keys: dict[str, list[str]]
    records: list[tuple[str, str]]   # (kind, name) of names/<kind>/<name>.json
    unknown: list[str]               # names with no recorded build

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.keys.values())


def select(names: Iterable[str], record: Callable[[str, str], dict | None],
           meta: Callable[[str, str], dict | None]) -> Selection:
    """The entries the last builds of `names` used: for a daq procedure its dataset and
    measurements (the dataset's `point_keys`), for an analysis its output and its dataset,
    and the calibration a dataset was built with, with everything that one used.

    `record(kind, name)` reads names/<kind>/<name>.json and `meta(kind, key)` an
    entry's meta.json, locally or remotely.
    """
    keys: dict[str, dict[str, None]] = {kind: {} for kind in KINDS}
    records: dict[tuple[str, str], None] = {}
    unknown = []

    def dataset(key: str, name: str | None) -> None:
        if key in keys["datasets"]:
            return
        keys["datasets"][key] = None
        doc = meta("datasets", key) or {}
        for point in doc.get("point_keys") or []:
            if isinstance(point, str):
                keys["measurements"][point] = None
        proc = doc.get("procedure") or name
        rec = record("datasets", proc) if isinstance(proc, str) else None
        if rec and rec.get("key") == key:
            records[("datasets", proc)] = None
            calibration = (rec.get("inputs") or {}).get("calibration")
            if isinstance(calibration, str):
                analysis(calibration, None)

    def analysis(key: str, name: str | None) -> None:
        if key in keys["analyses"]:
            return
        keys["analyses"][key] = None
        doc = meta("analyses", key) or {}
        inputs = doc.get("inputs") or {}
        if isinstance(inputs.get("dataset"), str):
            dataset(inputs["dataset"], None)
        proc = doc.get("procedure") or name
        rec = record("analyses", proc) if isinstance(proc, str) else None
        if rec and rec.get("key") == key:
            records[("analyses", proc)] = None

    for name in names:
        found = False
        for kind, follow in (("datasets", dataset), ("analyses", analysis)):
            rec = record(kind, name)
            if rec and isinstance(rec.get("key"), str):
                records[(kind, name)] = None
                follow(rec["key"], name)
                found = True
        if not found:
            unknown.append(name)
    return Selection({kind: list(v) for kind, v in keys.items()}, list(records), unknown)


def local_record(root: Path, kind: str, name: str) -> dict | None:
    return _json(_read_plain_or_none(Path(root), f"names/{kind}/{name}.json"))


def local_meta(store, kind: str, key: str) -> dict | None:
    return _json(_read_plain_or_none(Path(store.root), f"{_entry(kind, key)}/meta.json"))


# -- helpers ---------------------------------------------------------------------------------------

def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")


def _entry(kind: str, key: str) -> str:
    if len(key) != 64 or not _HEX.issuperset(key):
        raise RaffError(f"not a cache key: {key!r}")
    return f"{kind}/{key[:2]}/{key}"


def _batches(keys: Iterable[str], size: int = BATCH) -> Iterator[list[str]]:
    batch: list[str] = []
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            continue
        seen.add(key)
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
            seen = set()
    if batch:
        yield batch


def _tell(progress: Progress | None, t: Transfer) -> None:
    if progress is not None:
        progress(t)


def _first(group: BaseExceptionGroup) -> BaseException:
    """The exception that stands for a group: a RaffError (a full local disk) before the others."""
    leaves = []

    def walk(g: BaseExceptionGroup) -> None:
        for exc in g.exceptions:
            walk(exc) if isinstance(exc, BaseExceptionGroup) else leaves.append(exc)
    walk(group)
    return next((e for e in leaves if isinstance(e, RaffError)), leaves[0])


async def _all(coros: Iterable) -> list:
    """Run `coros` together; the first failure cancels the rest and is raised as itself
    (every one has ended when this returns, so nothing writes into a folder being removed)."""
    tasks = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as failed:
        raise _first(failed) from None
    return [task.result() for task in tasks]


async def _to_the_end(future: asyncio.Future):
    """Await a thread's work; cancelled, wait for the thread all the same. A cancelled task cannot
    stop its thread: a write would go on after the task's clean-up removed its folder in tmp/,
    and make it again."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation, not this, is what goes on
        raise


async def _quietly(coro) -> None:
    """Await a clean-up to its end, even in a task being cancelled (when another entry's push
    failed, its TaskGroup cancels this one while it may be removing its folder in tmp/);
    its failure does not hide the error being handled, and a cancellation goes on after it."""
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:
            break
    if cancelled:
        raise asyncio.CancelledError


def _read_local(root: Path, rel: str, limit: int, entry: str) -> bytes:
    """A file of a local entry (for a push), no link followed; what is refused is damage."""
    try:
        return _read_plain(root, rel, limit)
    except Refused as exc:
        raise _Damage(str(exc).removeprefix(entry + "/")) from None


def _local_call(root: Path, what: str, url: str, fn: Callable, *args: Any) -> Any:
    """`fn(*args)`, a write into the local cache: an OSError names the local cache."""
    try:
        return fn(*args)
    except OSError as exc:
        raise LocalCacheError(root, exc, what, url) from None


def _make_tmp(tmp: Path, manifest: bytes) -> None:
    tmp.mkdir(parents=True)
    with open(tmp / MANIFEST, "xb") as f:
        f.write(manifest)


def _create(tmp: Path, rel: str):
    """A new file `tmp/rel` (its name checked by `_manifest`: plain, inside `tmp`)."""
    path = tmp.joinpath(*rel.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "xb")


def _stale_tmp(name: str, mtime: float, now: float, host: str) -> bool:
    """Whether a push may remove `tmp/<name>` from the remote.

    Only what a push of raffinerie names (`_tmp_writer`) is ever removed, and
    only when its writer is surely gone: written on this machine (`writer_host`)
    by a process that is no longer running, or older than STALE_TMP_SECONDS
    (24 h) whoever wrote it. Other stands push at the same time; a folder of a
    live push on another machine is younger than that (one entry's files are
    written within minutes), so it is left alone.
    """
    writer = _tmp_writer(name)
    if writer is None:
        return False
    whose, pid = writer
    if whose == host and not process_alive(pid):
        return True
    return now - mtime > STALE_TMP_SECONDS


def _tmp_writer(name: str) -> tuple[str, int] | None:
    """(host, pid) of `<kind>-<key16>-<host>-<pid>-<tag8>` or `names-<host>-<pid>-<tag8>.json`."""
    record = name.endswith(".json")
    parts = (name[:-5] if record else name).split("-")
    if record and len(parts) == 4 and parts[0] == "names":
        host, pid, tag = parts[1:]
    elif not record and len(parts) == 5 and parts[0] in KINDS and len(parts[1]) == 16 \
            and _HEX.issuperset(parts[1]):
        host, pid, tag = parts[2:]
    else:
        return None
    if not (host and pid.isdigit() and len(tag) == 8 and _HEX.issuperset(tag)):
        return None
    return host, int(pid)


def _json(data: bytes | None) -> dict | None:
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _manifest(data: bytes) -> dict[str, tuple[int, str]]:
    """The files of a manifest ({name: (size, sha256)}); _Damage for anything but a manifest
    of at most MAX_FILES plain names and MAX_ENTRY_BYTES bytes."""
    try:
        files = json.loads(data)["files"]
        if not isinstance(files, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise _Damage("manifest.json unreadable") from None
    if len(files) > MAX_FILES:
        raise _Damage(f"manifest.json names {len(files):,} files, more than the {MAX_FILES:,} an entry may have")
    out: dict[str, tuple[int, str]] = {}
    total = 0
    for name, value in files.items():
        _check_name(name)
        if not (isinstance(value, list) and len(value) == 2 and type(value[0]) is int and value[0] >= 0
                and isinstance(value[1], str) and len(value[1]) == 64 and _HEX.issuperset(value[1])):
            raise _Damage(f"manifest.json unreadable (the size and SHA-256 of {_shown(name)})")
        out[name] = (value[0], value[1])
        total += value[0]
    if total > MAX_ENTRY_BYTES:
        raise _Damage(f"manifest.json claims {total:,} bytes, more than the {MAX_ENTRY_BYTES:,} an entry may have "
                      "(RAFF_REMOTE_MAX_ENTRY_BYTES)")
    folders = {name[:i] for name in out for i, c in enumerate(name) if c == "/"}
    clash = sorted(folders & set(out))
    if clash:
        raise _Damage(f"manifest.json names {_shown(clash[0])} as a file and as a folder")
    return out


def _check_name(name: object) -> None:
    """A plain relative path inside the entry: parts neither empty, `.` nor `..`, no NUL."""
    if not isinstance(name, str):
        raise _Damage("manifest.json unreadable")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        encoded = None
    parts = name.split("/")
    if (encoded is None or "\0" in name or len(encoded) > PATH_MAX or name == MANIFEST
            or any(p in ("", ".", "..") or len(p.encode("utf-8", "replace")) > NAME_MAX for p in parts)):
        raise _Damage(f"bad file name {_shown(name)} in manifest.json (not a plain path inside the entry)")


def _shown(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:77] + "...")


def _rename_into_place(tmp: Path, final: Path) -> bool:
    """`Store.commit`'s last step: False (and nothing changed) when the entry is already there."""
    if final.is_dir():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if final.is_dir():
            return False
        raise
    return True


def _describe(exc: BaseException) -> str:
    """One line for what went wrong, without the client's decorations."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.filename and text.startswith("["):
        text = f"{exc.filename}: {exc.strerror}"
    low = text.lower()
    if "connection error" in low or "connection refused" in low or "socket error" in low \
            or "no route to host" in low or "unable to connect" in low:
        return f"cannot reach the server ({text})"
    if isinstance(exc, PermissionError) or "permission denied" in low or "not authorized" in low:
        return f"permission denied ({text})"
    if isinstance(exc, FileNotFoundError):
        return f"no such file or folder ({text})"
    return text[:300]
