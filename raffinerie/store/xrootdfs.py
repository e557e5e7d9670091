"""An fsspec filesystem for `root://` URLs that zarr-python and the shared cache can use.

`fsspec-xrootd` 0.5.5 reaches an XRootD server (EOS at HGCAL sites), but
under zarr-python v3 (`zarr.storage.FsspecStore`) and for writing it lacks a
few things, which `XRootDFS` adds:

- a synchronous instance on zarr's event loop (`zarr_store`): the async
  methods then run on the loop zarr drives, and the handle cache's pruner
  has a loop to live on;
- `_pipe_file` (zarr writes every chunk and metadata document with it),
  `_put_file` and an asynchronous `_mv`;
- suffix and open-ended byte ranges in `_cat_file` and `_cat_ranges`
  (sharded arrays read their index from the end of a shard);
- server error 3011 (kXR_NotFound) as `FileNotFoundError`, 3010 as
  `PermissionError`, so that zarr sees a missing key as missing;
- a read-handle cache larger than the default 256, which otherwise closes
  handles that concurrent reads are still using;
- a recursive `_rm` that removes folders too;
- a request cancelled while its answer is on the way is dropped quietly
  (fsspec-xrootd's `_async_wrap` printed a traceback then);
- `_open_reader`: a file read in pieces at offsets (a pull streams files);
- bounded time: the client's connection window and retries are cut down
  from 120 s x 5 to a few seconds, and every request has a timeout.

Importing this module imports `XRootD` and `fsspec_xrootd`: import it only
where a `root://` URL is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import types
import warnings
from typing import Any, Callable

import fsspec_xrootd.xrootd
from fsspec.asyn import _run_coros_in_chunks
from fsspec_xrootd.xrootd import XRootDFileSystem, _CacheItem, _flags_to_mode
from XRootD import client
from XRootD.client.flags import MkDirFlags, OpenFlags, StatInfoFlags

# XRootD error numbers (XProtocol.hh)
NOT_AUTHORIZED = 3010
NOT_FOUND = 3011
IS_DIRECTORY = 3016
ITEM_EXISTS = 3018

HANDLE_CACHE = 4096  # read handles kept open (fsspec-xrootd's default, 256, is too few under zarr)
REQUEST_TIMEOUT = int(os.environ.get("RAFF_XROOTD_TIMEOUT", "60"))  # seconds per request
CONNECT_WINDOW = int(os.environ.get("RAFF_XROOTD_CONNECT_TIMEOUT", "5"))  # seconds per connection attempt
WRITE_CHUNK = 8 << 20

_configured = False


def _async_wrap(func: Callable[..., Any]) -> Callable[..., Any]:
    """fsspec-xrootd's `_async_wrap`, without its race: its callback (on the client's thread)
    checks that the request was not cancelled and then schedules `set_result`, which fails
    with a traceback on stderr ("Exception in callback ... InvalidStateError") when the
    request is cancelled in between (a TaskGroup cancels the rest when one transfer fails).
    Here the check is made on the loop, when the answer is delivered."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def deliver(result: Any) -> None:
        if not future.done():
            future.set_result(result)

    def callback(status: Any, content: Any, servers: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, (status, content))

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        submitted = func(*args, **kwargs, callback=callback)
        if not submitted.ok:
            raise OSError(f"Failed to submit {func!r} request: {submitted.message.strip()}")
        return await future

    return wrapped


fsspec_xrootd.xrootd._async_wrap = _async_wrap  # its own methods (_ls, the handle cache) too


def configure_client() -> None:
    """Bound the time a dead or unreachable server can take (once per process).

    The client's defaults try to connect for 120 s, five times over; a
    command that cannot reach its server should say so within seconds.
    Set `XRD_CONNECTIONWINDOW` etc. in the environment to override.
    """
    global _configured
    if _configured:
        return
    _configured = True
    settings = {"ConnectionWindow": CONNECT_WINDOW, "ConnectionRetry": 1,
                "RequestTimeout": REQUEST_TIMEOUT, "StreamErrorWindow": CONNECT_WINDOW,
                "StreamTimeout": REQUEST_TIMEOUT}
    for key, value in settings.items():
        if f"XRD_{key.upper()}" not in os.environ:
            client.EnvPutInt(key, value)


def split_url(url: str) -> tuple[str, str]:
    """(hostid, absolute path) of `root://[user@]host[:port]//path`."""
    parsed = client.URL(url)
    if not parsed.is_valid() or not parsed.hostname:
        raise ValueError(f"not a valid root:// URL: {url}")
    return parsed.hostid, "/" + parsed.path.lstrip("/")


def status_error(status: Any, what: str, path: str) -> OSError:
    """The exception an XRootD status stands for: missing, forbidden, or another error."""
    text = f"{what}: {_message(status)}"
    errno = getattr(status, "errno", 0)
    if errno == NOT_FOUND:
        return FileNotFoundError(2, text, path)
    if errno == NOT_AUTHORIZED:
        return PermissionError(13, text, path)
    if errno == IS_DIRECTORY:
        return IsADirectoryError(21, text, path)
    if errno == ITEM_EXISTS:
        return FileExistsError(17, text, path)
    return OSError(5, text, path)  # EIO: the message says what


def _message(status: Any) -> str:
    text = " ".join(str(getattr(status, "message", status)).split())
    for prefix in ("[ERROR] Server responded with an error:", "[ERROR]", "[FATAL]"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    if text.startswith("[") and "]" in text[:8]:
        text = text[text.index("]") + 1:].strip()  # the error number, e.g. [3011]
    return text or "unknown error"


class XRootDFS(XRootDFileSystem):
    """fsspec-xrootd with what zarr and the shared cache need (see the module's docstring)."""

    def __init__(self, hostid: str, **storage_options: Any):
        configure_client()
        storage_options.setdefault("timeout", REQUEST_TIMEOUT)
        storage_options.setdefault("filehandle_cache_size", HANDLE_CACHE)
        storage_options.setdefault("use_listings_cache", False)  # others write the same store
        storage_options.setdefault("locate_all_sources", False)
        super().__init__(hostid, **storage_options)
        # the read-handle cache maps errors like everything else here
        cache = self._readonly_filehandle_cache
        cache._open = types.MethodType(_open_handle, cache)
        # no background pruner: the count bound prunes on every open, and a pruner task
        # still pending when the loop goes away prints "Task was destroyed" at exit
        task = getattr(cache, "_prune_task", None)
        if task is not None:
            self.loop.call_soon_threadsafe(task.cancel)

    def close(self) -> None:
        """Close the read handles this instance keeps open."""
        self._readonly_filehandle_cache.close_all()

    def url(self, path: str) -> str:
        return f"root://{self.hostid}/{path}"

    # -- reading ----------------------------------------------------------------

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        status, stat = await _async_wrap(self._myclient.stat)(path, timeout=self.timeout)
        if not status.ok:
            raise status_error(status, "cannot stat", path)
        if stat.flags & StatInfoFlags.IS_DIR:
            kind = "directory"
        elif stat.flags & StatInfoFlags.OTHER:
            kind = "other"
        else:
            kind = "file"
        return {"name": path, "size": stat.size, "type": kind, "mtime": stat.modtime,
                "mode": _flags_to_mode(stat.flags)}

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            await self._info(path)
        except FileNotFoundError:
            return False
        return True

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        try:
            return await super()._ls(path, detail=detail, **kwargs)
        except FileNotFoundError:
            raise
        except OSError:
            # fsspec-xrootd's message lost the error number: ask again to map it
            await self._info(path)
            raise

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None,
                        **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        handle = await self._readonly_filehandle_cache._open(self.unstrip_protocol(path), self.timeout)
        if start is None:
            start = 0
        if start < 0 or end is None or end < 0:
            status, stat = await _async_wrap(handle.stat)(timeout=self.timeout)
            if not status.ok:
                raise status_error(status, "cannot stat", path)
            size = stat.size
            if start < 0:
                start = max(0, size + start)
            end = size if end is None else (size + end if end < 0 else min(end, size))
        if end <= start:
            return b""
        status, data = await _async_wrap(handle.read)(start, end - start, timeout=self.timeout)
        if not status.ok:
            raise status_error(status, "cannot read", path)
        return data

    async def _open_for_reading(self, path: str) -> tuple[str, "client.File"]:
        """The stripped path and a handle opened on it for reading; an error names the path."""
        path = self._strip_protocol(path)
        handle = client.File()
        status, _ = await _async_wrap(handle.open)(self.unstrip_protocol(path), OpenFlags.READ,
                                                   timeout=self.timeout)
        if not status.ok:
            raise status_error(status, "cannot open", path)
        return path, handle

    async def _read_once(self, path: str, size: int | None = None) -> bytes:
        """A whole file, its handle closed at once (not kept in the read-handle cache):
        for files read once, such as a cache entry being pulled."""
        path, handle = await self._open_for_reading(path)
        try:
            if size is None:
                status, stat = await _async_wrap(handle.stat)(timeout=self.timeout)
                if not status.ok:
                    raise status_error(status, "cannot stat", path)
                size = stat.size
            status, data = await _async_wrap(handle.read)(0, size, timeout=self.timeout) if size else (status, b"")
            if not status.ok:
                raise status_error(status, "cannot read", path)
        finally:
            await _async_wrap(handle.close)(timeout=self.timeout)
        return data

    async def _open_reader(self, path: str, size: int) -> "Reader":
        """A file opened for reading in pieces (a pull streams a file of `size` bytes)."""
        path, handle = await self._open_for_reading(path)
        return Reader(self, handle, path, size)

    async def _cat_ranges(self, paths: list[str], starts: list[int | None] | int | None,
                          ends: list[int | None] | int | None, max_gap: int | None = None,
                          batch_size: int | None = None, on_error: str = "return",
                          **kwargs: Any) -> list[Any]:
        n = len(paths)
        starts = starts if isinstance(starts, list) else [starts] * n
        ends = ends if isinstance(ends, list) else [ends] * n
        coros = [self._cat_file(p, s, e) for p, s, e in zip(paths, starts, ends)]
        results = await _run_coros_in_chunks(coros, batch_size=batch_size or self.batch_size,
                                             nofiles=True, return_exceptions=True)
        if on_error == "raise":
            for r in results:
                if isinstance(r, BaseException):
                    raise r
        return results

    # -- writing ----------------------------------------------------------------------

    async def _pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Write `value` to `path` (its folders are made as needed)."""
        path = self._strip_protocol(path)
        url = self.unstrip_protocol(path)
        await self._readonly_filehandle_cache._close(url, self.timeout)  # a stale read handle
        flags = OpenFlags.MAKEPATH | (OpenFlags.NEW if mode == "create" else OpenFlags.DELETE)
        handle = client.File()
        status, _ = await _async_wrap(handle.open)(url, flags, timeout=self.timeout)
        if not status.ok:
            raise status_error(status, "cannot create", path)
        try:
            view = memoryview(value)
            for offset in range(0, len(view), WRITE_CHUNK) if len(view) else ():
                chunk = bytes(view[offset:offset + WRITE_CHUNK])
                status, _ = await _async_wrap(handle.write)(chunk, offset, len(chunk), timeout=self.timeout)
                if not status.ok:
                    raise status_error(status, "cannot write", path)
        finally:
            status, _ = await _async_wrap(handle.close)(timeout=self.timeout)
        if not status.ok:
            raise status_error(status, "cannot close", path)

    async def _put_file(self, lpath: str, rpath: str, mode: str = "overwrite", **kwargs: Any) -> None:
        data = await asyncio.get_running_loop().run_in_executor(None, _read_local, lpath)
        await self._pipe_file(rpath, data, mode=mode)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        status, _ = await _async_wrap(self._myclient.mkdir)(path, MkDirFlags.MAKEPATH, timeout=self.timeout)
        if not status.ok:
            if exist_ok and getattr(status, "errno", 0) == ITEM_EXISTS:
                return
            raise status_error(status, "cannot make folder", path)

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        await self._makedirs(path, exist_ok=True)

    async def _mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Rename in one step on the server; fails if `path2` is a folder that is not empty."""
        path1, path2 = self._strip_protocol(path1), self._strip_protocol(path2)
        status, _ = await _async_wrap(self._myclient.mv)(path1, path2, timeout=self.timeout)
        if not status.ok:
            raise status_error(status, f"cannot rename to {path2}", path1)

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        from fsspec.asyn import sync

        sync(self.loop, self._mv, path1, path2)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        status, _ = await _async_wrap(self._myclient.rm)(path, timeout=self.timeout)
        if not status.ok:
            raise status_error(status, "cannot remove", path)

    async def _rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        status, _ = await _async_wrap(self._myclient.rmdir)(path, timeout=self.timeout)
        if not status.ok:
            raise status_error(status, "cannot remove folder", path)

    async def _rm(self, path: str | list[str], recursive: bool = False, batch_size: int | None = None,
                  **kwargs: Any) -> None:
        """Remove files, and with `recursive` folders with everything in them."""
        for one in path if isinstance(path, list) else [path]:
            one = self._strip_protocol(one)
            info = await self._info(one)
            if info["type"] != "directory":
                await self._rm_file(one)
                continue
            if not recursive:
                raise IsADirectoryError(21, f"is a folder (use recursive): {one}", one)
            entries = await self._ls(one, detail=True)
            files = [e["name"] for e in entries if e["type"] != "directory"]
            await _run_coros_in_chunks([self._rm_file(f) for f in files],
                                       batch_size=batch_size or self.batch_size, nofiles=True)
            for sub in (e["name"] for e in entries if e["type"] == "directory"):
                await self._rm(sub, recursive=True, batch_size=batch_size)
            await self._rmdir(one)


class Reader:
    """An open remote file read at offsets (`XRootDFS._open_reader`); `size` is what its stat said."""

    def __init__(self, fs: XRootDFS, handle: Any, path: str, size: int):
        self.fs, self.handle, self.path, self.size = fs, handle, path, size

    async def read(self, offset: int, n: int) -> bytes:
        status, data = await _async_wrap(self.handle.read)(offset, n, timeout=self.fs.timeout)
        if not status.ok:
            raise status_error(status, "cannot read", self.path)
        return data

    async def close(self) -> None:
        try:
            await _async_wrap(self.handle.close)(timeout=self.fs.timeout)
        except Exception:  # closing a handle already dead: nothing to keep
            pass


async def _open_handle(self: Any, url: str, timeout: int) -> Any:
    """fsspec-xrootd's cached read handle, with the server's error mapped (missing, forbidden)."""
    item = self._cache.get(url)
    if item is not None:
        item.accessed = time.monotonic()
        return item.handle
    handle = client.File()
    status, _ = await _async_wrap(handle.open)(url, OpenFlags.READ, timeout=timeout)
    if not status.ok:
        raise status_error(status, "cannot open", url)
    self._cache[url] = _CacheItem(accessed=time.monotonic(), handle=handle)
    await self._prune_cache(timeout)
    return handle


def _read_local(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def filesystem(url: str, loop: Any = None) -> tuple[XRootDFS, str]:
    """(a synchronous XRootDFS on `loop` (fsspec's own if None), absolute path) of a root:// URL."""
    hostid, path = split_url(url)
    return XRootDFS(hostid, loop=loop, skip_instance_cache=True), path


def zarr_store(url: str, read_only: bool = False) -> Any:
    """A `zarr.storage.FsspecStore` on a root:// URL: `zarr.open_group(store=zarr_store(url))`.

    The filesystem is a synchronous instance on zarr's own event loop, so
    zarr's coroutines and the client's callbacks meet on one loop.
    """
    import zarr.storage
    from zarr.core.sync import _get_loop

    fs, path = filesystem(url, loop=_get_loop())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*asynchronous=True.*")
        return zarr.storage.FsspecStore(fs=fs, path=path, read_only=read_only)
