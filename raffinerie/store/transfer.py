"""What a push or a pull of the shared cache did (`Transfer`), how it ends when it fails (the
errors, one line each), and the parts both directions share.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Iterable, Iterator

from raffinerie.errors import RaffError
from raffinerie.store.transport import FileType, Transport

BATCH = 256  # entries per round of concurrent transfers (bounds what is held at once)
ENTRIES_IN_FLIGHT = 32
FILES_IN_FLIGHT = 64

Progress = Callable[["Transfer"], None]


class Direction(str, Enum):
    PUSH = "push"
    PULL = "pull"


@dataclass(frozen=True)
class Missing:
    """An entry asked for that the source does not hold."""

    kind: str
    key: str


@dataclass(frozen=True)
class Refusal:
    """An entry not copied because it does not match its manifest (or has none, or a link where a
    file is); `problem` says what is wrong, in one line."""

    kind: str
    key: str
    problem: str


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


def _listed(damaged: list[Refusal]) -> str:
    """The first three damaged entries with their problems, and how many more."""
    first = "; ".join(f"{d.kind}/{d.key} ({d.problem})" for d in damaged[:3])
    return first + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")


@dataclass
class Transfer:
    """What a push or pull did."""

    direction: Direction
    entries: int = 0            # copied
    present: int = 0            # already at the destination: skipped
    bytes: int = 0              # copied
    seconds: float = 0.0
    missing: list[Missing] = field(default_factory=list)        # asked for, not in the source
    damaged: list[Refusal] = field(default_factory=list)       # not copied: not as their manifest says
    kind: str = ""              # the kind being transferred now (for progress)

    def add(self, other: "Transfer") -> None:
        self.entries += other.entries
        self.present += other.present
        self.bytes += other.bytes
        self.seconds += other.seconds
        self.missing += other.missing
        self.damaged += other.damaged


def batches(keys: Iterable[str], size: int = BATCH) -> Iterator[list[str]]:
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


def tell(progress: Progress | None, t: Transfer) -> None:
    if progress is not None:
        progress(t)


async def held(transport: Transport, kind: str, keys: list[str]) -> tuple[set[str], list[str]]:
    """(which of `keys` the remote holds, the shard folders of `keys` it lacks): one listing per
    shard, concurrently, not one request per key."""
    shards = sorted({k[:2] for k in keys})

    async def listing(shard: str) -> list[str] | None:
        try:
            return [name for name, found in await transport.ls(f"{kind}/{shard}") if found.type != FileType.FILE]
        except FileNotFoundError:
            return None
    listed = dict(zip(shards, await asyncio.gather(*(listing(s) for s in shards))))
    found = {name for names in listed.values() if names for name in names}
    return {k for k in keys if k in found}, [s for s, names in listed.items() if names is None]


def describe(exc: BaseException) -> str:
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
