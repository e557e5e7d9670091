"""A remote cache on an XRootD server (EOS at HGCAL sites): the `Transport` of a `root://` URL.

It goes through `xrootdfs.XRootDFS` (fsspec-xrootd with what raffinerie
adds). The server resolves links itself and shows none; what it reports as
neither file nor folder ("other") is refused. Importing this module imports
the XRootD client: import it only where a `root://` URL is used.
"""

from __future__ import annotations

from raffinerie.store.transport import FileType, Found, Refused, too_large
from raffinerie.store.xrootdfs import Reader, filesystem


class XRootDTransport:
    """The folder of a `root://host[:port]//path` URL on an XRootD server."""

    def __init__(self, url: str):
        self.fs, self.base = filesystem(url)

    def _p(self, rel: str) -> str:
        return f"{self.base.rstrip('/')}/{rel}" if rel else self.base

    @staticmethod
    def _found(info: dict) -> Found:
        kind = {"file": FileType.FILE, "directory": FileType.DIRECTORY}.get(info["type"], FileType.SPECIAL)
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
        if found.type != FileType.FILE:
            what = "a folder" if found.type == FileType.DIRECTORY else "neither a file nor a folder (a FIFO or device?)"
            raise Refused(f"{rel} is {what}, not a regular file")
        return found.size

    async def read(self, rel: str, limit: int) -> bytes:
        size = await self._regular(rel)
        if size > limit:
            raise too_large(rel, size, limit)
        return await self.fs._read_once(self._p(rel), size)

    async def open_reader(self, rel: str) -> Reader:
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
