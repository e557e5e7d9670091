"""Pushing local entries to a shared cache: each entry's files are written under a name of
its own in the remote's `tmp/`, read back, and the folder renamed into place in one step.

A push that fails removes its folder in `tmp/`; one that was killed leaves
it, and a later push removes it (see `stale_tmp` for which). An entry
already there is skipped; if another stand renamed the same entry into
place first, the rename fails and our copy is dropped. A local entry that
does not match its manifest is not pushed (a line in `Transfer.damaged`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from pathlib import Path

from raffinerie.store import manifest
from raffinerie.store.aio import all_or_first, quietly
from raffinerie.store.files import process_alive
from raffinerie.store.folderfs import lstat, read_plain, split
from raffinerie.store.layout import KINDS, MANIFEST, entry_rel
from raffinerie.store.manifest import HEX, Damaged
from raffinerie.store.transfer import FILES_IN_FLIGHT, Missing, Refusal, Progress, Transfer, held, tell
from raffinerie.store.transport import FileType, Refused, Transport

# A folder in the remote's tmp/ older than this is a push that died (one entry's
# files are written within minutes; see `stale_tmp`).
STALE_TMP_SECONDS = 24 * 3600


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


class Pusher:
    """Pushes of one RemoteCache: `writer` names what it writes in the remote's tmp/."""

    def __init__(self, transport: Transport, entries_in_flight: int):
        self.transport = transport
        self.entries_in_flight = entries_in_flight
        self.host = writer_host()
        self.writer = f"{self.host}-{os.getpid()}"

    async def clean_tmp(self) -> None:
        """Remove the folders (and records) in the remote's tmp/ that dead pushes left."""
        try:
            listing = await self.transport.ls("tmp")
        except (FileNotFoundError, NotADirectoryError, Refused):
            return
        now = time.time()
        doomed = [name for name, found in listing if stale_tmp(name, found.mtime, now, self.host)]
        for start in range(0, len(doomed), self.entries_in_flight):
            await asyncio.gather(*(self.transport.rmtree(f"tmp/{n}")
                                   for n in doomed[start:start + self.entries_in_flight]))

    async def batch(self, store, kind: str, keys: list[str], t: Transfer, progress: Progress | None) -> None:
        local = [k for k in keys if store.has(kind, k)]
        t.missing += [Missing(kind, k) for k in keys if not store.has(kind, k)]
        there, new_shards = await held(self.transport, kind, local)
        t.present += len(there)
        todo = [k for k in local if k not in there]
        if not todo:
            tell(progress, t)
            return
        entries, files = asyncio.Semaphore(self.entries_in_flight), asyncio.Semaphore(FILES_IN_FLIGHT)
        await asyncio.gather(self.transport.mkdirs("tmp"), *(self.transport.mkdirs(f"{kind}/{s}") for s in new_shards))
        async with asyncio.TaskGroup() as group:
            for key in todo:
                group.create_task(self._one(store, kind, key, t, entries, files, progress))

    async def _one(self, store, kind: str, key: str, t: Transfer, entries, files, progress) -> None:
        async with entries:
            root, entry = Path(store.root), entry_rel(kind, key)
            tmp = f"tmp/{kind}-{key[:16]}-{self.writer}-{uuid.uuid4().hex[:8]}"
            placed = False
            try:
                raw = await _local_manifest(root, entry)
                if raw is None:  # removed locally meanwhile (gc): nothing to push
                    t.missing.append(Missing(kind, key))
                    return
                listed = manifest.parse(raw)

                async def copy(rel: str, size: int, digest: str) -> int:
                    async with files:
                        data = await _local_file(root, entry, rel, size, digest)
                        await self.transport.write(f"{tmp}/{rel}", data)
                        return len(data)
                await self.transport.write(f"{tmp}/{MANIFEST}", raw)
                sizes = await all_or_first(copy(rel, size, digest) for rel, (size, digest) in listed.items())
                await self._check_written(tmp, raw, listed, files)
                placed = await self._place(tmp, entry)
            except Damaged as exc:
                t.damaged.append(Refusal(kind, key, str(exc)))
                return
            finally:
                if not placed:  # a failed push (a full remote) leaves nothing in tmp/
                    await quietly(self.transport.rmtree(tmp))
            if placed:
                t.entries += 1
                t.bytes += sum(sizes) + len(raw)
            else:
                t.present += 1  # another stand pushed it first: ours is dropped
            tell(progress, t)

    async def _place(self, tmp: str, entry: str) -> bool:
        """Rename `tmp` to `entry`: False when another stand's rename came first."""
        try:
            await self.transport.rename(tmp, entry)
        except OSError:
            found = await self.transport.stat(entry)
            if not (found and found.type == FileType.DIRECTORY):
                raise
            return False
        return True

    async def _check_written(self, tmp: str, raw: bytes, listed: dict, files) -> None:
        """The sizes the remote kept of an entry's files, read back before it is renamed into
        place: an XRootD server on a full disk answered "ok" to a write it cut short (seen
        with a full tmpfs), and the entry would have appeared with a truncated file. One
        listing per folder of the entry."""
        folders: dict[str, dict[str, int]] = {}
        for rel, size in [(MANIFEST, len(raw)), *((rel, size) for rel, (size, _) in listed.items())]:
            parent, name = split(rel)
            folders.setdefault(parent, {})[name] = size

        async def check(parent: str, names: dict[str, int]) -> None:
            async with files:
                listing = dict(await self.transport.ls(f"{tmp}/{parent}" if parent else tmp))
            for name, size in names.items():
                found = listing.get(name)
                if found is None or found.type != FileType.FILE or found.size != size:
                    kept = f"{found.size:,}" if found is not None else "none"
                    raise OSError(f"{tmp}/{parent + '/' if parent else ''}{name}: the server kept {kept} of "
                                  f"the {size:,} bytes written (no space left on its disk?)")
        await all_or_first(check(parent, names) for parent, names in folders.items())


async def _local_manifest(root: Path, entry: str) -> bytes | None:
    """The manifest of a local entry, None if the entry is gone; Damaged if it has none."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, _read_local, root, f"{entry}/{MANIFEST}",
                                          manifest.MAX_MANIFEST_BYTES, entry)
    except FileNotFoundError:
        if lstat(root, entry) is None:
            return None
        raise Damaged("no manifest.json") from None


async def _local_file(root: Path, entry: str, rel: str, size: int, digest: str) -> bytes:
    """A file of a local entry, checked against its manifest's size and SHA-256."""
    loop = asyncio.get_running_loop()
    try:
        data = await loop.run_in_executor(None, _read_local, root, f"{entry}/{rel}", size, entry)
    except FileNotFoundError:
        raise Damaged(f"file missing: {rel}") from None
    if not manifest.matches(data, size, digest):
        raise Damaged(f"content changed: {rel}")
    return data


def _read_local(root: Path, rel: str, limit: int, entry: str) -> bytes:
    """A file of a local entry (for a push), no link followed; what is refused is damage."""
    try:
        return read_plain(root, rel, limit)
    except Refused as exc:
        raise Damaged(str(exc).removeprefix(entry + "/")) from None


def stale_tmp(name: str, mtime: float, now: float, host: str) -> bool:
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
            and HEX.issuperset(parts[1]):
        host, pid, tag = parts[2:]
    else:
        return None
    if not (host and pid.isdigit() and len(tag) == 8 and HEX.issuperset(tag)):
        return None
    return host, int(pid)
