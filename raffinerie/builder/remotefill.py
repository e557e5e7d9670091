"""`--remote URL`: what another test stand already made is pulled, not made again.

Entries are content-addressed, so a measurement another stand took of the
same board in the same configuration has the key this build would give it:
pulling it is exact. Points first (they key the datasets), then datasets
(they key the analyses), then analyses; every pull is checked against the
entry's manifest and renamed into place (`raffinerie.store.remote`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from raffinerie.graph.plan import BUILD, Plan

KINDS = {"dataset": "datasets", "analysis": "analyses"}


@dataclass
class Pulled:
    entries: dict[str, int] = field(default_factory=lambda: {"measurements": 0, "datasets": 0, "analyses": 0})
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
        found = remote.present("measurements", [points.key(i).hex() for i in points.missing()])
        if found:
            out[name] = len(found)
    return out


def pull_from(remote, store, replan: Callable[[], Plan], say: Callable[[str], None]) -> Pulled:
    """Pull what the plan would otherwise make and the remote holds, kind by kind."""
    pulled = Pulled()
    _pull(remote, store, "measurements", missing_points(replan()), pulled)
    for _ in KINDS:  # datasets, then the analyses whose keys those datasets give
        plan = replan()
        for kind in KINDS.values():
            keys = [n.key for n in plan.nodes.values()
                    if n.status == BUILD and n.key and KINDS.get(n.kind) == kind]
            _pull(remote, store, kind, keys, pulled)
    if pulled.total:
        e = pulled.entries
        say(f"pulled from {remote.url}: {_count(e['measurements'], 'point')}, "
            f"{_count(e['datasets'], 'dataset')} and {_count(e['analyses'], 'analysis', 'analyses')} "
            f"({pulled.bytes / 1e6:.1f} MB)")
    return pulled


def _pull(remote, store, kind: str, keys: list[str], pulled: Pulled) -> None:
    found = remote.present(kind, keys) if keys else set()
    found = {k for k in found if not store.has(kind, k)}
    if not found:
        return
    transfer = remote.pull(store, kind, sorted(found))
    pulled.entries[kind] += transfer.entries
    pulled.bytes += transfer.bytes


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"
