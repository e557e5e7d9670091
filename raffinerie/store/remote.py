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
  step. An interrupted push leaves at most a folder in `tmp/`, never a
  partial entry. An entry already there is skipped; if another stand
  renamed the same entry into place first, the rename fails and our copy
  is dropped.
- `pull` downloads into the local cache's `tmp/`, checks every file against
  the entry's `manifest.json` (size and SHA-256) when it has one, and
  renames the folder into place, as `Store.commit` does. A damaged remote
  entry is never used, and a local entry is never overwritten.

An entry is treated as a folder of files, whatever they are; only
`manifest.json` is read, and only if it is there.

Errors (an unreachable server, a refused permission, a missing folder)
end in one `RaffError` naming the URL and the problem; the XRootD client's
timeouts are cut to seconds (see `xrootdfs.configure_client`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from raffinerie.errors import RaffError
from raffinerie.store.layout import KINDS, MANIFEST

_HEX = frozenset("0123456789abcdef")
BATCH = 256  # entries per round of concurrent transfers (bounds what is held at once)
ENTRIES_IN_FLIGHT = 32
FILES_IN_FLIGHT = 64
RECORD_KINDS = ("datasets", "analyses")  # names/<kind>/<name>.json pushed with their entries

Progress = Callable[["Transfer"], None]


class RemoteError(RaffError):
    """A remote cache that cannot be reached, read or written."""

    def __init__(self, url: str, problem: str):
        self.url = url
        super().__init__(f"{url}: {problem}")


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


# -- where the files are: a local folder, or an XRootD server ---------------------------------

class _LocalBackend:
    """A folder on this machine (or a mounted one): blocking calls in a thread pool."""

    def __init__(self, root: Path):
        self.root = root
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="raff-remote")

    def _p(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def ls(self, rel: str) -> list[tuple[str, bool, int]]:
        def ls() -> list[tuple[str, bool, int]]:
            out = []
            with os.scandir(self._p(rel)) as it:
                for e in it:
                    is_dir = e.is_dir()
                    out.append((e.name, is_dir, 0 if is_dir else e.stat().st_size))
            return out
        return await self._run(ls)

    async def stat(self, rel: str) -> tuple[bool, int] | None:
        def stat():
            try:
                st = os.stat(self._p(rel))
            except FileNotFoundError:
                return None
            return (os.path.isdir(self._p(rel)), st.st_size)
        return await self._run(stat)

    async def read(self, rel: str, size: int | None = None) -> bytes:
        return await self._run(self._p(rel).read_bytes)

    async def write(self, rel: str, data: bytes) -> None:
        def write() -> None:
            path = self._p(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        await self._run(write)

    async def mkdirs(self, rel: str) -> None:
        await self._run(lambda: self._p(rel).mkdir(parents=True, exist_ok=True))

    async def rename(self, src: str, dst: str) -> None:
        await self._run(os.rename, self._p(src), self._p(dst))

    async def rmtree(self, rel: str) -> None:
        await self._run(lambda: shutil.rmtree(self._p(rel), ignore_errors=True))

    def close(self) -> None:
        self.pool.shutdown(wait=False)


class _XRootDBackend:
    """An XRootD server, through `xrootdfs.XRootDFS` (fsspec-xrootd)."""

    def __init__(self, url: str):
        from raffinerie.store.xrootdfs import filesystem

        self.fs, self.base = filesystem(url)

    def _p(self, rel: str) -> str:
        return f"{self.base.rstrip('/')}/{rel}" if rel else self.base

    async def ls(self, rel: str) -> list[tuple[str, bool, int]]:
        entries = await self.fs._ls(self._p(rel), detail=True)
        return [(e["name"].rstrip("/").rsplit("/", 1)[-1], e["type"] == "directory", e["size"]) for e in entries]

    async def stat(self, rel: str) -> tuple[bool, int] | None:
        try:
            info = await self.fs._info(self._p(rel))
        except FileNotFoundError:
            return None
        return info["type"] == "directory", info["size"]

    async def read(self, rel: str, size: int | None = None) -> bytes:
        return await self.fs._read_once(self._p(rel), size)

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


# -- the remote cache ---------------------------------------------------------------------------

class RemoteCache:
    """A shared cache at `url`; see the module's docstring.

    `create` makes the folder if it is missing (for pushing); otherwise a
    missing folder is an error.
    """

    def __init__(self, url: str, create: bool = False, entries_in_flight: int = ENTRIES_IN_FLIGHT):
        self.url = url
        self.entries_in_flight = max(1, entries_in_flight)
        self._writer = f"{socket.gethostname().replace('-', '_')[:32]}-{os.getpid()}"
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
        """Run the coroutine function `fn(*args)` on fsspec's loop; errors become one RemoteError."""
        from fsspec.asyn import sync

        try:
            return sync(self._loop, fn, *args)
        except RaffError:
            raise
        except BaseExceptionGroup as group:  # from a TaskGroup: the first is the cause
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
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
        if not found[0]:
            raise RemoteError(self.url, "not a folder")

    def close(self) -> None:
        self._b.close()

    def __enter__(self) -> "RemoteCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what it holds ------------------------------------------------------------------------

    def keys(self, kind: str) -> Iterator[str]:
        """Every entry key of `kind`, shard by shard (one listing held at a time)."""
        _check_kind(kind)
        for shard in self._run(self._names, kind, True):
            if len(shard) == 2 and _HEX.issuperset(shard):
                for name in self._run(self._names, f"{kind}/{shard}", True):
                    if len(name) == 64 and _HEX.issuperset(name):
                        yield name

    async def _names(self, rel: str, dirs: bool) -> list[str]:
        try:
            return sorted(name for name, is_dir, _ in await self._b.ls(rel) if is_dir == dirs)
        except FileNotFoundError:
            return []

    def has(self, kind: str, key: str) -> bool:
        _check_kind(kind)
        found = self._run(self._b.stat, _entry(kind, key))
        return bool(found and found[0])

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
                return [name for name, is_dir, _ in await self._b.ls(f"{kind}/{shard}") if is_dir]
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
        try:
            return await self._b.read(rel)
        except (FileNotFoundError, IsADirectoryError):
            return None

    def write_record(self, kind: str, name: str, data: bytes) -> None:
        """Replace names/<kind>/<name>.json in one step (written under tmp/ and renamed)."""
        self._run(self._write_record, kind, name, data)

    async def _write_record(self, kind: str, name: str, data: bytes) -> None:
        tmp = f"tmp/names-{self._writer}-{uuid.uuid4().hex[:8]}.json"
        await self._b.write(tmp, data)
        await self._b.mkdirs(f"names/{kind}")
        await self._b.rename(tmp, f"names/{kind}/{name}.json")

    # -- push -------------------------------------------------------------------------------------

    def push(self, store, kind: str, keys: Iterable[str] | None = None,
             progress: Progress | None = None, strict: bool = True) -> Transfer:
        """Copy local entries of `kind` (all of them if `keys` is None) that the remote lacks.

        A local entry that does not match its manifest is not pushed; with
        `strict` that ends in LocalDamaged once the rest is pushed.
        """
        _check_kind(kind)
        t = Transfer("push", kind=kind)
        t0 = time.perf_counter()
        source = (k for k, _ in store.entries(kind)) if keys is None else keys
        for batch in _batches(source):
            self._run(self._push_batch, store, kind, batch, t, progress)
        t.seconds = time.perf_counter() - t0
        if strict and t.damaged:
            raise LocalDamaged(self.url, t)
        return t

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
            folder = Path(store.path(kind, key))
            loop = asyncio.get_running_loop()
            names = await loop.run_in_executor(None, _walk, folder)
            tmp = f"tmp/{kind}-{key[:16]}-{self._writer}-{uuid.uuid4().hex[:8]}"
            try:
                manifest = _manifest(await loop.run_in_executor(None, _read_optional, folder / MANIFEST))
                _check_names(manifest, names)

                async def copy(rel: str) -> int:
                    async with files:
                        data = await loop.run_in_executor(None, (folder / rel).read_bytes)
                        if manifest is not None and rel != MANIFEST:
                            _check_data(manifest, rel, data)
                        await self._b.write(f"{tmp}/{rel}", data)
                        return len(data)
                sizes = await asyncio.gather(*(copy(rel) for rel in names))
            except _Damage as exc:
                t.damaged.append((kind, key, str(exc)))
                await self._b.rmtree(tmp)
                return
            except FileNotFoundError:
                if not folder.is_dir():  # removed locally meanwhile (gc): nothing to push
                    t.missing.append((kind, key))
                    await self._b.rmtree(tmp)
                    return
                raise
            try:
                await self._b.rename(tmp, _entry(kind, key))
            except OSError:
                found = await self._b.stat(_entry(kind, key))
                if not (found and found[0]):
                    raise
                await self._b.rmtree(tmp)  # another stand pushed it first
                t.present += 1
                _tell(progress, t)
                return
            t.entries += 1
            t.bytes += sum(sizes)
            _tell(progress, t)

    # -- pull ---------------------------------------------------------------------------------

    def pull(self, store, kind: str, keys: Iterable[str] | None = None,
             progress: Progress | None = None, strict: bool = True) -> Transfer:
        """Copy remote entries of `kind` (all of them if `keys` is None) that the local cache lacks.

        Every file is checked against the entry's manifest before the entry
        is renamed into place; a damaged entry is not pulled, and with
        `strict` that ends in RemoteDamaged once the rest is pulled.
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
            try:
                listing = await self._walk_remote(remote)
                raw = None
                if MANIFEST in listing:
                    raw = await self._b.read(f"{remote}/{MANIFEST}", listing[MANIFEST])
                manifest = _manifest(raw)
                _check_names(manifest, list(listing))
                if manifest is not None:
                    for rel, size in listing.items():
                        if rel != MANIFEST and manifest[rel][0] != size:
                            raise _Damage(f"size of {rel} is {size}, its manifest says {manifest[rel][0]}")
                await loop.run_in_executor(None, lambda: tmp.mkdir(parents=True))

                async def copy(rel: str) -> int:
                    async with files:
                        data = raw if rel == MANIFEST else await self._b.read(f"{remote}/{rel}", listing[rel])
                        if manifest is not None and rel != MANIFEST:
                            _check_data(manifest, rel, data)
                        await loop.run_in_executor(None, _write_local, tmp, rel, data)
                        return len(data)
                sizes = await asyncio.gather(*(copy(rel) for rel in listing))
                committed = await loop.run_in_executor(None, _rename_into_place, tmp, final)
            except _Damage as exc:
                t.damaged.append((kind, key, str(exc)))
                return
            finally:
                if tmp.exists():
                    await loop.run_in_executor(None, lambda: shutil.rmtree(tmp, ignore_errors=True))
            if committed:
                t.entries += 1
                t.bytes += sum(sizes)
            else:
                t.present += 1  # made locally meanwhile: the local one stays
            _tell(progress, t)

    async def _walk_remote(self, rel: str, prefix: str = "") -> dict[str, int]:
        """{path inside the entry: size} of every file under `rel`."""
        out: dict[str, int] = {}
        subdirs = []
        for name, is_dir, size in await self._b.ls(rel):
            if is_dir:
                subdirs.append(name)
            else:
                out[prefix + name] = size
        for found in await asyncio.gather(*(self._walk_remote(f"{rel}/{d}", f"{prefix}{d}/") for d in subdirs)):
            out.update(found)
        return out


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
    return _json(_read_optional(Path(root) / "names" / kind / f"{name}.json"))


def local_meta(store, kind: str, key: str) -> dict | None:
    return _json(_read_optional(Path(store.path(kind, key)) / "meta.json"))


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


def _walk(folder: Path) -> list[str]:
    """Paths (relative, with /) of every file in an entry folder."""
    out = []
    prefix = len(str(folder)) + 1
    for root, _, files in os.walk(folder):
        for name in files:
            out.append(os.path.join(root, name)[prefix:].replace(os.sep, "/"))
    if not out and not folder.is_dir():
        raise FileNotFoundError(2, "entry gone", str(folder))
    return sorted(out)


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _json(data: bytes | None) -> dict | None:
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _manifest(data: bytes | None) -> dict[str, list] | None:
    """The files of a manifest ({path: [size, sha256]}), None if there is none; _Damage if unreadable."""
    if data is None:
        return None
    try:
        files = json.loads(data)["files"]
        if not isinstance(files, dict) or not all(isinstance(v, list) and len(v) == 2 for v in files.values()):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise _Damage("manifest.json unreadable") from None
    return files


def _check_names(manifest: dict | None, names: Iterable[str]) -> None:
    if manifest is None:
        return
    present = set(names) - {MANIFEST}
    missing = sorted(set(manifest) - present)
    if missing:
        raise _Damage(f"file missing: {missing[0]}")
    extra = sorted(present - set(manifest))
    if extra:
        raise _Damage(f"file not in its manifest: {extra[0]}")


def _check_data(manifest: dict, rel: str, data: bytes) -> None:
    size, digest = manifest[rel]
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise _Damage(f"content changed: {rel}")


def _write_local(tmp: Path, rel: str, data: bytes) -> None:
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _Damage(f"bad file name {rel!r}")
    path = tmp.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


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
