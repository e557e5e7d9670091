"""A search parameter: a register whose value is looked for, not scanned (issue 26).

Written beside the parameter's places and values, which are the values it may take:

    - key: [[roc_s0, roc_s1, roc_s2], ch, [0, 1, ..., 71], trim_toa]
      range: {start: 0, stop: 64}
      search: {measure: toa_efficiency, target: 0.5, direction: rising}

Each place of the key is searched on its own (a *cell*: a channel for a channel-wise
register, a half for a half-wise one, a chip for `Top`), all of them in the same points,
since one point sets every place. This module holds the spec and its checks; the search
itself (which value to probe next, from what the probes measured) is raffinerie.graph.search.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from raffinerie.hgcroc import chip_index


class SearchMode(StrEnum):
    BISECT = "bisect"    # probe the middle of the bracket until it is `resolution` wide
    REFINE = "refine"    # bisect, then sample `around` values on each side of the crossing densely


class Direction(StrEnum):
    RISING = "rising"    # the measure rises with the register's value
    FALLING = "falling"


class Combine(StrEnum):
    """How a half-wise or chip-wise cell combines the measure of its channels."""

    MEDIAN = "median"    # robust: a dead or noisy channel does not move it
    MAX = "max"          # the worst channel (a noise rate: one channel firing floods the readout)
    MIN = "min"
    MEAN = "mean"


# A probe whose measure lies within Z_UNDECIDED standard errors of the target says nothing of
# which side the crossing is on: 2 sigma leaves a false bracket 2.3 % of the time a probe
# lands that close, and the bracket is kept open around it instead (raffinerie.graph.search).
Z_UNDECIDED = 2.0


@dataclass(frozen=True)
class SearchSpec:
    measure: str                     # a summary column: toa_efficiency, tot_efficiency, adc_mean, ...
    target: float
    direction: Direction = Direction.RISING
    resolution: float = 1            # stop when the bracket is this many register steps wide
    mode: SearchMode = SearchMode.BISECT
    around: int = 3                  # refine: values on each side of the bracket sampled too
    combine: Combine = Combine.MEDIAN
    z: float = Z_UNDECIDED

    @property
    def rising(self) -> bool:
        return self.direction is Direction.RISING


def parse(entry: dict) -> SearchSpec:
    """The spec of a parameter's `search:` (the schema has checked its shape)."""
    return SearchSpec(measure=entry["measure"], target=float(entry["target"]),
                      direction=Direction(entry.get("direction", "rising")),
                      resolution=entry.get("resolution", 1),
                      mode=SearchMode(entry.get("mode", "bisect")), around=int(entry.get("around", 3)),
                      combine=Combine(entry.get("combine", "median")),
                      z=float(entry.get("undecided_within", Z_UNDECIDED)))


def place_problem(place: tuple) -> str | None:
    """What is wrong with a searched place (a path into the resolved config, `target` first), or None:
    a search sets chip registers, whose cells (channel, half, chip) it can read in a summary."""
    path = place[1:]
    if place[0] != "target" or len(path) != 4 or chip_index(path[0]) is None:
        return f"a search sets chip registers (roc_sN, block, index, register); not {'.'.join(map(str, place))}"
    return None


def check_procedure(entry: dict, parameters: list, origin, report) -> None:
    """Report each problem of the search parameters of daq procedure `entry` (read as `parameters`)."""
    from raffinerie.config.expand import place_of

    written = [(i, p) for i, p in enumerate(entry.get("parameters") or []) if "search" in p]
    for n, (i, p) in enumerate(written):
        here = origin.at("parameters", i)
        values = parameters[i].values if i < len(parameters) else []
        for place, message in problems(p, values, entry):
            report(here.at(*place).error(message))
        if i < len(parameters) and "key" in p:
            wrong = next(filter(None, map(place_problem, map(place_of, parameters[i].places()))), None)
            if wrong:
                report(here.at("key").error(wrong))
        if n:
            report(here.at("search").error("a procedure searches one parameter; "
                                           f"parameter {written[0][0]} is its search already"))


def problems(entry: dict, values, proc: dict) -> list[tuple[tuple, str]]:
    """(place in the parameter, message) of each problem of a search parameter."""
    out = []
    if "template" in entry or "keys" in entry:
        out.append((("search",), "a search takes `key:` (the places searched); not a template or `keys:`"))
    if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        out.append((("search",), "a search looks for a register value: its values must be whole numbers"))
    elif len(values) < 2:
        out.append((("search",), "a search needs at least 2 values to choose from"))
    if proc.get("points") is not None:
        out.append((("search",), "a search chooses its own points: it does not go with explicit `points:`"))
    if proc.get("repeat", 1) != 1:
        out.append((("search",), "a search takes more events per probe with NEvents, not `repeat`"))
    if proc.get("mode", "summary") != "summary":
        out.append((("search",), "a search reads each probe's summary: the procedure's mode must be summary"))
    return out
