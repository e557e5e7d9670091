"""A search unfolding: which values a search procedure probes, from what its probes measured.

A search parameter (raffinerie.config.search) looks, for each of its places (a *cell*: a
channel, a half or a chip), for the value among its sorted candidate values v[0..n-1] where
the measure crosses the target. One probe is one point: it sets every cell's value at once, so
all cells move together, each along its own bisection. The other parameters of the procedure
stay Cartesian around the search: each of their coordinates has a search of its own.

The search is replayed, never remembered: the probes are points keyed by their resolved
configuration like any other, and `unfold` walks the same rounds again from the cached
probes' summaries until it reaches a round the cache lacks (the next probes) or the end. So
a rebuild acquires nothing, and a search interrupted by Ctrl-C or `kill -9` resumes from its
last committed probe, as a Snakemake checkpoint re-plans only what its output decides.

Each probe of a cell is classed by its measure m (and its standard error e, from the
summary's `<measure>_error`, or `<x>_stdd`/sqrt(n_events) for a `<x>_mean`):

- UNDECIDED when |m - target| <= z e (z = `undecided_within`, 2 by default): the probe lies
  within its statistics of the target and says nothing of the side, so it never closes the
  bracket; the values on both sides of it are searched instead, right beside it first (the
  crossing lies within the noise of it);
- else PAST (m at or beyond the target in the search's direction) or BELOW.

The bracket of a cell is (lo, hi): the highest BELOW below the lowest PAST. The next probe
is the value beside an UNDECIDED probe in an open gap, if there is one; else it halves the widest open gap between the probed values inside it (lo, the UNDECIDED ones,
hi; an unprobed end of the range counts as open); a gap is closed when nothing lies in it or
its ends are at most `resolution` apart. A cell is FOUND when no gap is open (and, in refine
mode, every value within `around` of the bracket is measured); it is flagged, and stops, when
it is PAST already at the lowest value or BELOW still at the highest (the crossing lies
outside the bounds), UNDECIDED at an end of the range, or has no measurement (a corrupt half).
Every probe of a cell is a value it had not probed, so a search ends after n rounds at most.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from functools import lru_cache
from typing import Callable, Sequence

from raffinerie.config.search import Combine, SearchMode, SearchSpec, place_problem
from raffinerie.hgcroc import CHANNELTYPE_CALIB, CHANNELTYPE_CHANNEL, CHANNELTYPE_CM, HALF_BLOCKS, chip_index

CHANNEL_TYPES = {"ch": CHANNELTYPE_CHANNEL, "calib": CHANNELTYPE_CALIB, "cm": CHANNELTYPE_CM}
STEP_AXIS = "search_step"


class Level(StrEnum):
    CHANNEL = "channel"
    HALF = "half"
    CHIP = "chip"


class Side(IntEnum):
    BELOW = -1
    UNDECIDED = 0
    PAST = 1
    MISSING = 2


class CellStatus(StrEnum):
    SEARCHING = "searching"
    FOUND = "found"
    PAST_AT_LOWEST = "past the target already at the lowest value"
    SHORT_AT_HIGHEST = "short of the target still at the highest value"
    UNDECIDED_AT_END = "within the noise of the target at an end of the range"
    NO_MEASUREMENT = "no measurement"


@dataclass(frozen=True)
class Cell:
    """One place a search looks for a value of: what of a probe's summary it reads."""

    place: tuple          # the path into the target config, without `target`
    chip: int
    level: Level
    channeltype: int      # CHANNEL level: the rows' type
    index: int            # the channel, or the half

    @property
    def name(self) -> str:
        if self.level is Level.CHANNEL:
            kind = {CHANNELTYPE_CHANNEL: "ch", CHANNELTYPE_CALIB: "calib"}.get(self.channeltype, "cm")
            return f"roc_s{self.chip} {kind} {self.index}"
        return f"roc_s{self.chip} half {self.index}" if self.level is Level.HALF else f"roc_s{self.chip}"


def cells_of(places: Sequence[tuple]) -> list[Cell] | str:
    """The cells of a search's places (paths with `target` first), or what is wrong with one."""
    out = []
    for place in places:
        wrong = place_problem(place)
        if wrong:
            return wrong
        path = place[1:]
        chip, block, index = chip_index(path[0]), path[1], int(path[2])
        if block in CHANNEL_TYPES:
            out.append(Cell(path, chip, Level.CHANNEL, CHANNEL_TYPES[block], index))
        elif block in HALF_BLOCKS:
            out.append(Cell(path, chip, Level.HALF, CHANNELTYPE_CHANNEL, index))
        else:
            out.append(Cell(path, chip, Level.CHIP, CHANNELTYPE_CHANNEL, 0))
    return out


# --- what a probe measured -------------------------------------------------------------

def measure_of(summary: dict, spec: SearchSpec, cells: Sequence[Cell]) -> list[tuple[float, float]]:
    """(measure, standard error) of every cell in one probe's summary (numpy columns); NaN: no rows."""
    import numpy as np

    value = np.asarray(summary[spec.measure], dtype=float)
    error = _errors(summary, spec.measure, value)
    chip, half = np.asarray(summary["chip"]), np.asarray(summary["half"])
    channel, kind = np.asarray(summary["channel"]), np.asarray(summary["channeltype"])
    row = {(int(c), int(k), int(ch)): i for i, (c, k, ch) in enumerate(zip(chip, kind, channel))}
    out = []
    for cell in cells:
        if cell.level is Level.CHANNEL:
            i = row.get((cell.chip, cell.channeltype, cell.index))
            out.append((float(value[i]), float(error[i])) if i is not None else (math.nan, math.nan))
            continue
        mine = (chip == cell.chip) & (kind == CHANNELTYPE_CHANNEL) & np.isfinite(value)
        if cell.level is Level.HALF:
            mine &= half == cell.index
        out.append(_combined(value[mine], error[mine], spec.combine))
    return out


def _errors(summary: dict, measure: str, value):
    import numpy as np

    if f"{measure}_error" in summary:
        return np.asarray(summary[f"{measure}_error"], dtype=float)
    if measure.endswith("_efficiency") and "n_events" in summary:   # a binomial fraction
        n = np.maximum(np.asarray(summary["n_events"], dtype=float), 1)
        p = np.clip(value, 0.0, 1.0)
        return np.sqrt(p * (1 - p) / n)
    stem = measure[:-len("_mean")] if measure.endswith("_mean") else None
    if stem and f"{stem}_stdd" in summary and "n_events" in summary:
        n = np.maximum(np.asarray(summary["n_events"], dtype=float), 1)
        return np.asarray(summary[f"{stem}_stdd"], dtype=float) / np.sqrt(n)
    return np.zeros_like(value)   # no statistics known: every probe decides


def _combined(values, errors, combine: Combine) -> tuple[float, float]:
    import numpy as np

    if not len(values):
        return math.nan, math.nan
    if combine in (Combine.MAX, Combine.MIN):
        i = int(np.argmax(values) if combine is Combine.MAX else np.argmin(values))
        return float(values[i]), float(errors[i])
    rms = float(np.sqrt(np.mean(errors ** 2)))
    if combine is Combine.MEAN:
        return float(np.mean(values)), rms / math.sqrt(len(values))
    # the median of n values of error e has an error of about 1.2533 e / sqrt(n) (sqrt(pi/2))
    return float(np.median(values)), 1.2533 * rms / math.sqrt(len(values))


def side(spec: SearchSpec, value: float, error: float) -> Side:
    if not math.isfinite(value):
        return Side.MISSING
    d = value - spec.target
    if error > 0 and abs(d) <= spec.z * error:
        return Side.UNDECIDED
    return Side.PAST if (d >= 0) == spec.rising else Side.BELOW


# --- one cell's bisection ----------------------------------------------------------------

@dataclass
class CellSearch:
    """The probes of one cell: value index -> its side."""

    sides: dict[int, Side] = field(default_factory=dict)
    status: CellStatus = CellStatus.SEARCHING
    last: int | None = None          # the value index its last probe set

    def bracket(self, n: int) -> tuple[int, int]:
        past = [i for i, s in self.sides.items() if s is Side.PAST]
        hi = min(past) if past else n
        below = [i for i, s in self.sides.items() if s is Side.BELOW and i < hi]
        return (max(below) if below else -1), hi


def _open(a: int, b: int, values: Sequence[int], resolution: float) -> bool:
    n = len(values)
    return b - a >= 2 and (a < 0 or b >= n or values[b] - values[a] > resolution)


def next_index(cell: CellSearch, values: Sequence[int], spec: SearchSpec) -> tuple[int | None, CellStatus]:
    """The value index cell probes next (None: it is done), and its status."""
    n = len(values)
    if any(s is Side.MISSING for s in cell.sides.values()):
        return None, CellStatus.NO_MEASUREMENT
    lo, hi = cell.bracket(n)
    if hi == 0:
        return None, CellStatus.PAST_AT_LOWEST
    if lo == n - 1:
        return None, CellStatus.SHORT_AT_HIGHEST
    stops = [lo] + sorted(i for i in cell.sides if lo < i < hi) + [hi]
    gaps = [(a, b) for a, b in zip(stops, stops[1:]) if _open(a, b, values, spec.resolution)]
    beside = [i for a, b in gaps for i in _beside_undecided(cell, a, b)]
    if beside:   # the crossing lies within the noise of an undecided probe: look right beside it
        return min(beside), CellStatus.SEARCHING
    if gaps:
        a, b = max(gaps, key=lambda g: (g[1] - g[0], -g[0]))   # the widest, the lowest of equals
        return (a + b) // 2, CellStatus.SEARCHING
    if lo < 0 or hi >= n:
        return None, CellStatus.UNDECIDED_AT_END
    if spec.mode is SearchMode.REFINE:
        window = [i for i in range(max(lo - spec.around, 0), min(hi + spec.around, n - 1) + 1)
                  if i not in cell.sides]
        if window:   # nearest the bracket first
            return min(window, key=lambda i: (min(abs(i - lo), abs(i - hi)), i)), CellStatus.SEARCHING
    return None, CellStatus.FOUND


def _beside_undecided(cell: CellSearch, a: int, b: int) -> list[int]:
    """The values of open gap (a, b) right beside an end of it that is an UNDECIDED probe."""
    return [i for i, end in ((a + 1, a), (b - 1, b)) if cell.sides.get(end) is Side.UNDECIDED]


def rounds_left(cell: CellSearch, values: Sequence[int], spec: SearchSpec) -> int:
    """The most probes the cell can still need, if no further probe is UNDECIDED (each that is
    opens the values on both of its sides, a few probes more)."""
    if cell.status is not CellStatus.SEARCHING:
        return 0
    n = len(values)
    lo, hi = cell.bracket(n)
    stops = [lo] + sorted(i for i in cell.sides if lo < i < hi) + [hi]

    @lru_cache(maxsize=None)
    def worst(a: int, b: int) -> int:
        if not _open(a, b, values, spec.resolution):
            return 0
        mid = (a + b) // 2
        return 1 + max(worst(a, mid), worst(mid, b))

    def first(a: int, b: int) -> int:   # a gap beside an undecided probe is probed next to it first
        if not _open(a, b, values, spec.resolution):
            return 0
        if cell.sides.get(a) is Side.UNDECIDED:
            return 1 + max(worst(a + 1, b), first(a, a + 1))
        if cell.sides.get(b) is Side.UNDECIDED:
            return 1 + worst(a, b - 1)
        return worst(a, b)

    left = sum(first(a, b) for a, b in zip(stops, stops[1:]))
    if spec.mode is SearchMode.REFINE:
        left += 2 * spec.around + 1
    return left


# --- the whole search ------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """One point of a search: the outer coordinate (value indices of the other axes), the round,
    and the value index of every cell."""

    outer: tuple[int, ...]
    step: int
    indices: tuple[int, ...]


@dataclass
class SearchProgress:
    spec: SearchSpec
    values: list[int]                       # the candidate values, ascending
    cells: list[Cell]
    measured: list[Probe] = field(default_factory=list)
    pending: list[Probe] = field(default_factory=list)   # the next round, not (all) in the cache
    states: dict[tuple, list[CellSearch]] = field(default_factory=dict)   # outer coordinate -> cells
    more: int = 0                           # the most points that can follow the pending round
    grid: object = None                     # the procedure's own (settled) scan: what is searched

    @property
    def done(self) -> bool:
        return not self.pending

    @property
    def probes(self) -> list[Probe]:
        return self.measured + self.pending

    def flagged(self) -> list[tuple[tuple, Cell, CellStatus]]:
        """(outer coordinate, cell, status) of every cell that ended without a crossing."""
        return [(outer, cell, state.status) for outer, states in self.states.items()
                for cell, state in zip(self.cells, states)
                if state.status not in (CellStatus.FOUND, CellStatus.SEARCHING)]

    def result(self, outer: tuple, c: int) -> tuple[int | None, int | None]:
        """The bracket (values) of cell c at outer coordinate `outer`: (highest BELOW, lowest PAST)."""
        lo, hi = self.states[outer][c].bracket(len(self.values))
        n = len(self.values)
        return (self.values[lo] if lo >= 0 else None), (self.values[hi] if hi < n else None)


def unfold(spec: SearchSpec, values: Sequence[int], cells: list[Cell], outer_sizes: Sequence[int],
           keys_of: Callable[[list[Probe]], list[bytes]], known: set[bytes],
           read: Callable[[bytes], dict | None]) -> SearchProgress:
    """Replay the search from the cache: every round whose probes are all cached (`known`, their
    summaries from `read`; None: damaged, so not cached) is taken as measured; the first that is
    not is `pending`. `keys_of(probes)` keys a round's probes."""
    values = sorted(set(values))
    progress = SearchProgress(spec, list(values), cells)
    outers = list(itertools.product(*(range(n) for n in outer_sizes)))
    progress.states = {o: [CellSearch() for _ in cells] for o in outers}
    for step in itertools.count():
        probes = [p for p in (_probe(progress, o, step) for o in outers) if p is not None]
        if not probes:
            break
        keys = keys_of(probes)
        summaries = [read(k) if k in known else None for k in keys]
        if any(s is None for s in summaries):
            progress.pending = probes
            break
        for probe, summary in zip(probes, summaries):
            _measured(progress, probe, measure_of(summary, spec, cells))
        progress.measured += probes
    progress.more = _more(progress)
    return progress


def _probe(progress: SearchProgress, outer: tuple, step: int) -> Probe | None:
    """The probe of this round at `outer`: every searching cell at its next value, the others where
    they were; None when no cell is searching."""
    states, moving = progress.states[outer], False
    indices = []
    for state in states:
        if state.status is CellStatus.SEARCHING:
            i, state.status = next_index(state, progress.values, progress.spec)
            if i is not None:
                moving = True
                indices.append(i)
                continue
        indices.append(state.last if state.last is not None else 0)
    return Probe(outer, step, tuple(indices)) if moving else None


def _measured(progress: SearchProgress, probe: Probe, measures: list[tuple[float, float]]) -> None:
    for state, i, (value, error) in zip(progress.states[probe.outer], probe.indices, measures):
        if state.status is CellStatus.SEARCHING and i not in state.sides:
            state.sides[i] = side(progress.spec, value, error)
        state.last = i


def _more(progress: SearchProgress) -> int:
    """The most points that can still follow the pending round (see `rounds_left`)."""
    total, pending = 0, {p.outer for p in progress.pending}
    for outer, states in progress.states.items():
        left = max((rounds_left(s, progress.values, progress.spec) for s in states), default=0)
        total += max(left - (outer in pending), 0)
    return total
