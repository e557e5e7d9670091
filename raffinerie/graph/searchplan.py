"""The points of a search procedure: its probes so far and the next round, as a scan.

A search's scan is explicit: the other axes of the procedure as they are, `search_step` (the
round: it sets nothing, it numbers the probes for the dataset), and one axis of role SEARCH
whose values are the probes' tuples (one value per searched place). Its points are keyed like
every other point (`Scan.hashed_axes` spreads the tuple over the places), so a probe that
another procedure measured, or a grid scan that set every channel alike, is found in the cache.
"""

from __future__ import annotations

from typing import Container

from raffinerie.config.expand import Axis, AxisRole, Scan
from raffinerie.graph.points import KEY_SIZE, PointSet, take_keys
from raffinerie.graph.search import STEP_AXIS, Probe, SearchProgress, cells_of, unfold


def search_axis(points: PointSet) -> int:
    """The index of the searched parameter's axis in the procedure's own scan."""
    return next(i for i, p in enumerate(points.procedure.parameters) if p.search is not None)


def plan_search(points: PointSet, grid: Scan, known: Container[bytes], read) -> None:
    """Replay the search of `points` (whose procedure's own scan is `grid`) from the cache, and
    set its scan to the probes measured and the next round (`points.search` says which)."""
    k = search_axis(points)
    axis, spec = grid.axes[k], points.procedure.parameters[k].search
    outer = outer_axes(grid, k)
    cells = cells_of(axis.places)
    if isinstance(cells, str):
        raise axis.origin.at("key").error(cells).as_error()
    values = sorted(set(axis.values))

    def keys_of(probes: list[Probe]) -> list[bytes]:
        trial = PointSet(points.procedure, probe_scan(outer, axis, values, probes), points.base,
                         identity=points.identity)
        keys = take_keys(trial, points.take)
        return [keys[i * KEY_SIZE:(i + 1) * KEY_SIZE] for i in range(len(probes))]

    progress = unfold(spec, values, cells, [len(a.values) for a in outer], keys_of, known, read)
    progress.grid = grid
    points.scan = probe_scan(outer, axis, progress.values, progress.probes)
    points.search = progress


def probe_scan(outer: list[Axis], axis: Axis, values: list[int], probes: list[Probe]) -> Scan:
    steps = max((p.step for p in probes), default=-1) + 1
    step = Axis(STEP_AXIS, (), range(steps), axis.origin, axis.written, AxisRole.STEP)
    probed = Axis(axis.name, axis.places, [tuple(values[i] for i in p.indices) for p in probes],
                  axis.origin, axis.written, AxisRole.SEARCH)
    explicit = tuple((*p.outer, p.step, n) for n, p in enumerate(probes))
    return Scan(tuple(outer) + (step, probed), 1, explicit)


class InCache:
    """`known` for a search replayed during a build: asks the store, so a probe just committed counts."""

    def __init__(self, store):
        self.store = store

    def __contains__(self, key: bytes) -> bool:
        return self.store.has("measurements", key)


def advance(points: PointSet, store) -> PointSet:
    """The point set of a search after its pending round was acquired: replayed, keys hashed."""
    from dataclasses import replace

    from raffinerie.graph.points import hash_points

    known = InCache(store)
    fresh = replace(points, keys=bytearray(), cached=bytearray(), search=None)
    plan_search(fresh, points.search.grid, known, lambda key: read_probe(store, key))
    hash_points(fresh, known)
    return fresh


def read_probe(store, key: bytes) -> dict | None:
    """A probe's summary; None when its entry is damaged (quarantined: it is acquired again)."""
    from raffinerie.store.entries import DamagedEntry

    try:
        return store.read_summary(key, check=True)
    except DamagedEntry:
        return None


def describe(progress: SearchProgress) -> str:
    """`5 probes measured, next 1, ≤ 3 more points` (the plan's words for a search)."""
    measured = len(progress.measured)
    text = f"search: {measured} probe{'s' * (measured != 1)} measured"
    if progress.done:
        return text + ", done"
    return text + f", next {len(progress.pending)}, ≤ {progress.more} more point{'s' * (progress.more != 1)}"


def flagged_lines(points: PointSet) -> list[str]:
    """One line per cell whose crossing was not found, naming it and its last bracket."""
    progress = points.search
    axis_name = progress.grid.axes[search_axis(points)].name
    out = []
    for outer, cell, status in progress.flagged():
        lo, hi = progress.result(outer, progress.cells.index(cell))
        at = outer_values(points, outer)
        where = f" at {', '.join(f'{name} {value}' for name, value in at.items())}" if at else ""
        bracket = f"{axis_name} {progress.values[0]}..{progress.values[-1]}"
        out.append(f"{cell.name}{where}: {status} ({progress.spec.measure} → {progress.spec.target:g} "
                   f"over {bracket}; last bracket {lo}..{hi})")
    return out


def outer_values(points: PointSet, outer: tuple) -> dict:
    """The values of the other axes at a search's outer coordinate (value indices), by axis name."""
    return {a.name: a.values[j] for a, j in zip(outer_axes(points.search.grid, search_axis(points)), outer)}


def outer_axes(grid: Scan, k: int) -> list[Axis]:
    """The axes of a search procedure's own scan around its search (axis k)."""
    return [a for i, a in enumerate(grid.axes) if i != k]
