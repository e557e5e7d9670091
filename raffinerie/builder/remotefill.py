"""`--remote URL`: what another test stand already made is pulled, not made again.

Entries are content-addressed, so a measurement another stand took of the
same board in the same configuration has the key this build would give it:
pulling it is exact. Points first (what they hold keys the datasets), then
datasets and analyses (a dataset's key, known once its points are, keys its
analyses); every pull is checked against the entry's manifest and renamed
into place (`raffinerie.store.remote`). The plan is made again only when a
pull changes keys: after measurements were pulled, and after a calibration
was (the keys of the points that wait for it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from raffinerie.graph.nodes import BUILD, KEYED_KINDS, NodeKind, is_calibration
from raffinerie.graph.plan import Plan


@dataclass
class Pulled:
    entries: dict[str, int] = field(default_factory=lambda: {kind.store_kind: 0 for kind in NodeKind})
    bytes: int = 0

    @property
    def total(self) -> int:
        return sum(self.entries.values())


def missing_points(plan: Plan) -> list[str]:
    """Keys of the points the plan would acquire."""
    return [points.key(i).hex() for points in plan.points.values() if points.base is not None
            for i in points.missing()]


def in_remote(plan: Plan, remote) -> dict[str, int]:
    """Per daq procedure, how many of the points it would acquire the remote already holds."""
    out = {}
    for name, points in plan.points.items():
        if points.base is None or not points.to_acquire:
            continue
        found = remote.present(NodeKind.POINTS.store_kind, [points.key(i).hex() for i in points.missing()])
        if found:
            out[name] = len(found)
    return out


def pull_from(remote, store, replan: Callable[[], Plan], say: Callable[[str], None]) -> Pulled:
    """Pull what the plan would otherwise make and the remote holds, kind by kind."""
    pulled = Pulled()
    plan = replan()
    while True:
        if _pull(remote, store, NodeKind.POINTS.store_kind, missing_points(plan), pulled):
            plan = replan()  # what the pulled measurements hold keys their datasets
        calibrations = {n.key for n in plan.nodes.values() if n.status == BUILD and is_calibration(plan.nodes, n)}
        found: set[str] = set()
        for kind in KEYED_KINDS:  # datasets, then the analyses whose keys those datasets give
            keys = [n.key for n in plan.nodes.values() if n.status == BUILD and n.key and n.kind is kind]
            found |= _pull(remote, store, kind.store_kind, keys, pulled)
        if not found & calibrations:
            break
        plan = replan()  # a pulled calibration gives the keys of the points that waited for it
    if pulled.total:
        e = pulled.entries
        say(f"pulled from {remote.url}: {_count(e['measurements'], 'point')}, "
            f"{_count(e['datasets'], 'dataset')} and {_count(e['analyses'], 'analysis', 'analyses')} "
            f"({pulled.bytes / 1e6:.1f} MB)")
    return pulled


def _pull(remote, store, kind: str, keys: list[str], pulled: Pulled) -> set[str]:
    """Pull the entries of `keys` the remote holds and the cache does not; their keys."""
    found = remote.present(kind, keys) if keys else set()
    found = {k for k in found if not store.has(kind, k)}
    if not found:
        return found
    transfer = remote.pull(store, kind, sorted(found))
    pulled.entries[kind] += transfer.entries
    pulled.bytes += transfer.bytes
    return found


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"
