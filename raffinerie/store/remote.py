"""The cache shared between test stands: a remote copy of the cache's layout.

A remote cache is a folder, on this machine (a path or `file://` URL) or on
an XRootD server such as EOS (`root://host[:port]//path`, through fsspec
and fsspec-xrootd, see `xrootdfs`), laid out as the local cache is:
`<kind>/<key[:2]>/<key>/` for entries, `names/<kind>/<name>.json` for the
records of the last builds that were pushed, and `tmp/` for entries being
written.

Entries are content-addressed and immutable, so no locks are needed:

- `push` (`push.Pusher`) writes an entry's files under a name of its own in
  the remote `tmp/` and then renames that folder into `<kind>/<key[:2]>/<key>/`
  in one step; what a killed push left is removed by a later one.
- `pull` (`pull.Puller`) downloads into the local cache's `tmp/`, checks every
  file against the entry's `manifest.json` (size and SHA-256), and renames the
  folder into place, as `Store.commit` does.

Where the files are is a `transport.Transport`: a folder (`folderfs`) or an
XRootD server (`xrootdtransport`); `selection` finds what a procedure needs.

Nothing from outside is trusted (issue 27). An entry is the list of regular
files its `manifest.json` names, and nothing else: an entry without one is
refused, and both directions are driven by the manifest, never by walking
the folder (so a link loop cannot make a walk endless). Every name must be
a plain relative path inside the entry (no `..`, no absolute path, no empty
or `.` part, no NUL), every file a regular file of the size the manifest
says, and the number of files and bytes are bounded (`manifest.parse`). On a folder (the remote's, and
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

import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from raffinerie.errors import RaffError
from raffinerie.store.aio import first_error, quietly
from raffinerie.store.files import json_dict
from raffinerie.store.folderfs import FolderTransport
from raffinerie.store.layout import check_kind, entry_rel
from raffinerie.store.manifest import HEX
from raffinerie.store.pull import Puller
from raffinerie.store.push import Pusher
from raffinerie.store.records import checked_record, record_rel, records_rel
from raffinerie.store.selection import MAX_RECORD_BYTES
from raffinerie.store.transfer import (ENTRIES_IN_FLIGHT, Direction, LocalDamaged, Progress, RemoteDamaged,
                                       RemoteError, Transfer, batches, describe, held)
from raffinerie.store.transport import FileType, Transport


def open_transport(url: str) -> Transport:
    """The transport of a remote cache's URL: `root://` an XRootD server, `file://` or a path a folder."""
    if url.startswith("root://"):
        from raffinerie.store.xrootdtransport import XRootDTransport  # loads the XRootD client

        return XRootDTransport(url)
    if url.startswith("file://"):
        return FolderTransport(Path(url[len("file://"):]).absolute())
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise RaffError(f"{url}: unsupported URL scheme {scheme}:// (use root://host//path, file:///path or a path)")
    return FolderTransport(Path(url).absolute())


class RemoteCache:
    """A shared cache at `url`; see the module's docstring.

    `create` makes the folder if it is missing (for pushing); otherwise a
    missing folder is an error.
    """

    def __init__(self, url: str, create: bool = False, entries_in_flight: int = ENTRIES_IN_FLIGHT):
        self.url = url
        self.entries_in_flight = max(1, entries_in_flight)
        self._tmp_cleaned = False
        try:
            from fsspec.asyn import get_loop
        except ImportError:
            raise RaffError("reaching a remote cache needs fsspec (pip install fsspec)") from None
        try:
            self._b = open_transport(url)
        except ImportError as exc:
            raise RaffError(f"{url}: root:// URLs need the XRootD client ({exc.name} is not installed: "
                            "pip install 'raffinerie[xrootd]')") from None
        except ValueError as exc:
            raise RemoteError(url, str(exc)) from None
        self._loop = get_loop()
        self._pusher = Pusher(self._b, self.entries_in_flight)
        self._puller = Puller(self._b, url, self.entries_in_flight)
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
            first = first_error(group)
            if isinstance(first, RaffError):
                raise first from None
            raise RemoteError(self.url, describe(first)) from None
        except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
            raise RemoteError(self.url, describe(exc)) from None

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
        check_kind(kind)
        for shard in self._run(self._names, kind):
            if len(shard) == 2 and HEX.issuperset(shard):
                for name in self._run(self._names, f"{kind}/{shard}"):
                    if len(name) == 64 and HEX.issuperset(name):
                        yield name

    async def _names(self, rel: str) -> list[str]:
        """What `rel` holds but plain files (folders, and links and the like, which are refused later)."""
        try:
            return sorted(name for name, found in await self._b.ls(rel) if found.type != FileType.FILE)
        except FileNotFoundError:
            return []

    def has(self, kind: str, key: str) -> bool:
        check_kind(kind)
        found = self._run(self._b.stat, entry_rel(kind, key))
        return bool(found and found.type == FileType.DIRECTORY)

    def present(self, kind: str, keys: Iterable[str]) -> set[str]:
        """Which of `keys` the remote holds (one listing per shard, not one request per key)."""
        check_kind(kind)
        keys = list(keys)
        return self._run(self._present, kind, keys) if keys else set()

    async def _present(self, kind: str, keys: list[str]) -> set[str]:
        return (await held(self._b, kind, keys))[0]

    def read_record(self, kind: str, name: str) -> dict | None:
        """The record of the last pushed build of `name` (names/<kind>/<name>.json)."""
        doc = json_dict(self._run(self._read_or_none, record_rel(kind, name)))
        return checked_record(doc, f"{self.url}/{record_rel(kind, name)}") if doc is not None else None

    def read_meta(self, kind: str, key: str) -> dict | None:
        """An entry's meta.json, if it has one."""
        return json_dict(self._run(self._read_or_none, f"{entry_rel(kind, key)}/meta.json"))

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
        tmp = f"tmp/names-{self._pusher.writer}-{uuid.uuid4().hex[:8]}.json"
        try:
            await self._b.write(tmp, data)
            await self._b.mkdirs(records_rel(kind))
            await self._b.rename(tmp, record_rel(kind, name))
        except BaseException:
            await quietly(self._b.rmtree(tmp))
            raise
    # -- push -------------------------------------------------------------------------------------

    def push(self, store, kind: str, keys: Iterable[str] | None = None,
             progress: Progress | None = None, strict: bool = True) -> Transfer:
        """Copy local entries of `kind` (all of them if `keys` is None) that the remote lacks.

        A local entry that does not match its manifest (or has none, or a link
        where a file is) is not pushed; with `strict` that ends in LocalDamaged
        once the rest is pushed. The first push of this RemoteCache removes what
        dead pushes left in the remote's tmp/ (see `push.stale_tmp`).
        """
        check_kind(kind)
        if not self._tmp_cleaned:
            self._tmp_cleaned = True
            self._run(self._pusher.clean_tmp)
        source = (k for k, _ in store.entries(kind)) if keys is None else keys
        t = self._transfer(Direction.PUSH, self._pusher.batch, store, kind, source, progress)
        if strict and t.damaged:
            raise LocalDamaged(self.url, t)
        return t

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
        check_kind(kind)
        source = self.keys(kind) if keys is None else keys
        t = self._transfer(Direction.PULL, self._puller.batch, store, kind, source, progress)
        if strict and t.damaged:
            raise RemoteDamaged(self.url, t)
        return t

    def _transfer(self, direction: Direction, batch: Callable, store, kind: str, source: Iterable[str],
                  progress: Progress | None) -> Transfer:
        """`batch` (a Pusher's or a Puller's) over `source` in rounds of BATCH keys, each once."""
        t = Transfer(direction, kind=kind)
        t0 = time.perf_counter()
        for keys in batches(source):
            self._run(batch, store, kind, keys, t, progress)
        t.seconds = time.perf_counter() - t0
        return t
