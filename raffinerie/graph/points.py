"""The points of one daq procedure: their keys, which are cached, and why each is planned.

A `PointSet` holds KEY_SIZE bytes a point (the keys of one take, see
`take_keys`) and a cached flag a point. Point i is coordinate
`split_point(i)[0]` of the scan, repeated `split_point(i)[1]` times before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Sequence

from raffinerie import hgcroc
from raffinerie.config.expand import Scan
from raffinerie.config.keys import ScanHasher
from raffinerie.config.library import DaqProcedure
from raffinerie.config.resolve import server_setting
from raffinerie.graph.reasons import Change, Comparison, Reason, ReasonKind, hashable

if TYPE_CHECKING:
    from raffinerie.graph.search import SearchProgress

KEY_SIZE = 32


@dataclass
class PointSet:
    """The points of one daq procedure, in acquisition order."""

    procedure: DaqProcedure
    scan: Scan
    base: dict | None                # resolved config before the scan; None while waiting
    keys: bytearray = field(default_factory=bytearray)    # KEY_SIZE bytes per point
    cached: bytearray = field(default_factory=bytearray)  # 1 per cached point
    waiting_for: str | None = None
    identity: str = ""               # target identity in the keys
    comparison: Comparison | None = None   # how it differs from its last build (when it was built)
    take: int = 0                    # the take (forced re-acquisition) its keys are of; 0: the first
    search: "SearchProgress | None" = None   # a search procedure's probes so far (graph/search.py)

    @property
    def retakeable(self) -> bool:
        """Whether `--force-acquire` can take its points again (imported runs cannot)."""
        return self.procedure.imported is None

    @property
    def total(self) -> int:
        return self.scan.total

    @property
    def n_cached(self) -> int:
        return sum(self.cached) if self.base is not None else 0

    @property
    def to_acquire(self) -> int:
        return self.total - self.n_cached if self.base is not None else 0

    def key(self, i: int) -> bytes:
        return bytes(self.keys[i * KEY_SIZE:(i + 1) * KEY_SIZE])

    def all_keys(self) -> list[bytes]:
        return [self.key(i) for i in range(self.total)]

    def missing(self) -> list[int]:
        """Indices of the points to acquire, in scan order."""
        return [i for i, flag in enumerate(self.cached) if not flag]

    def split_point(self, point, repeats: Sequence[int] | None = None):
        """(coordinate index, repeat index) of point `point`: an int, or a numpy array of them (then,
        for an explicit scan, pass `repeats`: `explicit_repeats` as an array). The one mapping from
        a point to its coordinate: the planner and the dataset assembly use it alike."""
        if self.scan.explicit is None:
            return divmod(point, self.scan.repeat)
        return point, (self.explicit_repeats if repeats is None else repeats)[point]

    def coordinate(self, i: int) -> tuple[tuple, int]:
        """(axis values, repeat index) of point i."""
        c, r = self.split_point(i)
        return self.scan.coordinate(c), r

    @cached_property
    def explicit_repeats(self) -> list[int]:
        """Repeat index of each explicit point (see Scan.explicit_repeats)."""
        return self.scan.explicit_repeats()

    def point_reason(self, i: int) -> Reason:
        """Why point i is in the plan: cached, waiting, or new and what differs from the last build."""
        if self.base is None:
            return Reason(ReasonKind.WAITING, calibration=self.waiting_for)
        if self.cached[i]:
            return Reason(ReasonKind.CACHED)
        c = self.comparison
        if c is None:
            return Reason(ReasonKind.NEW_POINT)
        general = [ch for ch in c.changes if ch.axis is None]
        if general or c.calibrations_changed:
            return Reason(ReasonKind.NEW_POINT, tuple(general), c.more)
        coordinate, _ = self.coordinate(i)
        new = tuple(Change(axis.name, after=value, added=True)
                    for axis, value in zip(self.scan.axes, coordinate)
                    if c.old_values is not None and axis.name in c.old_values
                    and hashable(value) not in c.old_values[axis.name])
        return Reason(ReasonKind.NEW_POINT, new)

    def events_per_point(self) -> int:
        return server_setting((self.base or {}).get("daq"), "NEvents", 0)

    def chips(self) -> int:
        return server_setting((self.base or {}).get("daq"), "NChips", hgcroc.DEFAULT_CHIPS)

    def bytes_per_point(self) -> tuple[int, int]:
        """Estimated (raw, table) bytes of one point."""
        events, chips = self.events_per_point(), self.chips()
        raw = hgcroc.RAW_FILE_HEADER_BYTES + events * chips * hgcroc.RECORD_BYTES
        rows = chips * hgcroc.ROWS_PER_CHIP
        table = rows * hgcroc.SUMMARY_ROW_BYTES
        if self.procedure.mode == "events":
            table += events * rows * hgcroc.EVENT_ROW_BYTES
        return raw, table


def hashed_base(base: dict, take: int) -> dict:
    """What the keys of take `take` hash: the base config, and the take when it is not the first."""
    return {**base, "take": take} if take else base


def take_keys(points: PointSet, take: int) -> bytes:
    """The keys of take `take` of `points` (KEY_SIZE bytes per point; empty while waiting)."""
    if points.base is None:
        return b""
    return b"".join(_hasher(points, take).keys())


def hash_points(points: PointSet, known: set[bytes]) -> None:
    """Fill in the keys of `points` (of their take) and which of them are in `known`."""
    keys, cached = points.keys, points.cached
    for key in _hasher(points, points.take).keys():
        keys += key
        cached.append(key in known)


def _hasher(points: PointSet, take: int) -> ScanHasher:
    scan, proc = points.scan, points.procedure
    axes, explicit = scan.hashed_axes()
    return ScanHasher(hashed_base(points.base, take), axes, points.identity, proc.mode, scan.repeat, explicit,
                      points.explicit_repeats if scan.explicit is not None else None)
