"""Pulling entries of a shared cache into the local one: each entry downloaded into the local
cache's `tmp/`, every file checked against the entry's manifest (size and SHA-256) as it
streams, and the folder renamed into place, as `Store.commit` does. A damaged remote entry
is never used (a line in `Transfer.damaged`), and a local entry is never overwritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from raffinerie.store import manifest
from raffinerie.store.aio import all_or_first, to_the_end
from raffinerie.store.files import rename_into_place
from raffinerie.store.layout import MANIFEST, entry_rel
from raffinerie.store.manifest import Damaged
from raffinerie.store.transfer import FILES_IN_FLIGHT, LocalCacheError, Missing, Refusal, Progress, Transfer, held, tell
from raffinerie.store.transport import READ_CHUNK, FileType, Refused, Transport


class Puller:
    """Pulls of one RemoteCache at `url`."""

    def __init__(self, transport: Transport, url: str, entries_in_flight: int):
        self.transport, self.url, self.entries_in_flight = transport, url, entries_in_flight

    async def batch(self, store, kind: str, keys: list[str], t: Transfer, progress: Progress | None) -> None:
        wanted = [k for k in keys if not store.has(kind, k)]
        t.present += len(keys) - len(wanted)
        there = (await held(self.transport, kind, wanted))[0] if wanted else set()
        t.missing += [Missing(kind, k) for k in wanted if k not in there]
        todo = [k for k in wanted if k in there]
        if not todo:
            tell(progress, t)
            return
        entries, files = asyncio.Semaphore(self.entries_in_flight), asyncio.Semaphore(FILES_IN_FLIGHT)
        async with asyncio.TaskGroup() as group:
            for key in todo:
                group.create_task(self._one(store, kind, key, t, entries, files, progress))

    async def _one(self, store, kind: str, key: str, t: Transfer, entries, files, progress) -> None:
        async with entries:
            loop = asyncio.get_running_loop()
            final = Path(store.path(kind, key))
            tmp = Path(store.root) / "tmp" / f"{kind}-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            remote = entry_rel(kind, key)

            def local(fn, *args):  # a local write: its failure names the local cache, not the URL
                return to_the_end(loop.run_in_executor(None, _local_call, Path(store.root), f"{kind}/{key}",
                                                       self.url, fn, *args))
            try:
                found = await self.transport.stat(remote)
                if found is None:  # removed meanwhile
                    t.missing.append(Missing(kind, key))
                    return
                if found.type != FileType.DIRECTORY:
                    raise Damaged(f"the entry is {'a link' if found.type == FileType.LINK else 'not a folder'}")
                try:
                    raw = await self.transport.read(f"{remote}/{MANIFEST}", manifest.MAX_MANIFEST_BYTES)
                except FileNotFoundError:
                    raise Damaged("no manifest.json") from None
                listed = manifest.parse(raw)
                await local(_make_tmp, tmp, raw)

                async def copy(rel: str, size: int, digest: str) -> int:
                    async with files:
                        await self._fetch(f"{remote}/{rel}", rel, size, digest, tmp, local)
                        return size
                sizes = await all_or_first(copy(rel, size, digest) for rel, (size, digest) in listed.items())
                committed = await local(rename_into_place, tmp, final)
            except Refused as exc:
                t.damaged.append(Refusal(kind, key, str(exc).removeprefix(remote + "/")))
                return
            except Damaged as exc:
                t.damaged.append(Refusal(kind, key, str(exc)))
                return
            finally:
                # synchronous: this runs even in a task cancelled because another entry failed
                shutil.rmtree(tmp, ignore_errors=True)
            if committed:
                t.entries += 1
                t.bytes += sum(sizes) + len(raw)
            else:
                t.present += 1  # made locally meanwhile: the local one stays
            tell(progress, t)

    async def _fetch(self, path: str, rel: str, size: int, digest: str, tmp: Path, local) -> None:
        """Stream one remote file into `tmp/rel`, checking its type, size and SHA-256."""
        try:
            reader = await self.transport.open_reader(path)
        except FileNotFoundError:
            raise Damaged(f"file missing: {rel}") from None
        out = None
        try:
            if reader.size != size:
                raise Damaged(f"size of {rel} is {reader.size}, its manifest says {size}")
            out = await local(_create, tmp, rel)
            h, offset = hashlib.sha256(), 0
            while offset < size:
                block = await reader.read(offset, min(READ_CHUNK, size - offset))
                if not block:
                    raise Damaged(f"{rel} ended after {offset} bytes, its manifest says {size}")
                h.update(block)
                await local(out.write, block)
                offset += len(block)
            if h.hexdigest() != digest:
                raise Damaged(f"content changed: {rel}")
            done, out = out, None
            await local(done.close)  # its last bytes are written here: a full disk shows here too
        finally:
            await reader.close()
            if out is not None:
                with contextlib.suppress(OSError):
                    out.close()


def _local_call(root: Path, what: str, url: str, fn: Callable, *args: Any) -> Any:
    """`fn(*args)`, a write into the local cache: an OSError names the local cache."""
    try:
        return fn(*args)
    except OSError as exc:
        raise LocalCacheError(root, exc, what, url) from None


def _make_tmp(tmp: Path, raw: bytes) -> None:
    tmp.mkdir(parents=True)
    with open(tmp / MANIFEST, "xb") as f:
        f.write(raw)


def _create(tmp: Path, rel: str):
    """A new file `tmp/rel` (its name checked by `manifest.parse`: plain, inside `tmp`)."""
    path = tmp.joinpath(*rel.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "xb")
