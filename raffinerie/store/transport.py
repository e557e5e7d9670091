"""What the shared cache's transfer engine asks of the place a remote cache lives.

A `Transport` reaches the files of one folder, named by paths relative to
it (`""` is the folder itself, parts separated by `/`). Two implement it: a
folder on this machine (`folderfs.FolderTransport`, which never follows a
link below the folder) and an XRootD server (`xrootdtransport.XRootDTransport`).
Every transport passes the same contract tests (tests/test_transport_contract.py).

Errors are the OSErrors of the file system: FileNotFoundError for what is
not there, `Refused` for what is there but may not be read (a link, a FIFO,
a device, a file larger than allowed), any other OSError for a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

READ_CHUNK = 4 << 20  # a pull streams files in pieces of this size (FILES_IN_FLIGHT of them: 256 MiB at most)


class FileType(str, Enum):
    """What a path is; a transport that resolves links itself (XRootD) shows none."""

    FILE = "file"
    DIRECTORY = "directory"
    LINK = "link"
    SPECIAL = "special"   # a FIFO, device or socket, or what a server calls "other"


@dataclass(frozen=True)
class Found:
    """What a path is, its size and its modification time (seconds since the epoch)."""

    type: FileType
    size: int
    mtime: float


class Refused(OSError):
    """A path that is not a plain file or folder where one must be (a link, a FIFO, a device),
    or a file larger than what may be read; the message names it."""


def too_large(rel: str, size: int, limit: int) -> Refused:
    """The refusal of a file larger than what may be read of it."""
    return Refused(f"{rel} is {size:,} bytes, more than the {limit:,} allowed")


class Reader(Protocol):
    """A regular file opened for reading in pieces (a pull streams files)."""

    size: int

    async def read(self, offset: int, n: int) -> bytes: ...

    async def close(self) -> None: ...


class Transport(Protocol):
    """The files below one folder; see the module's docstring for the errors."""

    async def ls(self, rel: str) -> list[tuple[str, Found]]:
        """(name, what it is) of everything in the folder `rel`."""

    async def stat(self, rel: str) -> Found | None:
        """What `rel` is (a link is a link where links are shown), None if it is not there."""

    async def read(self, rel: str, limit: int) -> bytes:
        """The whole regular file `rel`; Refused if it is anything else or larger than `limit`."""

    async def open_reader(self, rel: str) -> Reader:
        """The regular file `rel` for reading in pieces; Refused if it is anything else."""

    async def write(self, rel: str, data: bytes) -> None:
        """Make or replace the file `rel` with `data`, its folders made as needed."""

    async def mkdirs(self, rel: str) -> None:
        """Make the folder `rel` and its parents; nothing if it is there."""

    async def rename(self, src: str, dst: str) -> None:
        """Move `src` to `dst` in one step; an OSError if `dst` is a folder already there."""

    async def rmtree(self, rel: str) -> None:
        """Remove `rel`, a file or a folder with all in it; nothing if it is not there, and
        a failure is ignored (a clean-up must not hide the error being handled)."""

    def close(self) -> None:
        """Let go of threads and connections."""
