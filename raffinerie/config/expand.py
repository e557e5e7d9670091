"""Scan expansion: from parameters to axes and points, lazily.

A parameter's key is a list of levels; a level that is a list fans out, so
one parameter sets several places to one value. Several parameters form
the Cartesian product of their values, the first varying slowest. Nothing
here builds a dict per point: points are index tuples into the axes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterator, Sequence

from raffinerie.config.library import DaqProcedure, Origin, ScanParameter
from raffinerie.config.tree import KEEP, get_path, value_token


class AxisRole(StrEnum):
    SCAN = "scan"        # every place takes the axis's value
    STEP = "step"        # sets nothing: numbers a search's rounds (the dataset's `search_step`)
    SEARCH = "search"    # a search's probes: each value is a tuple, one element per place


@dataclass(frozen=True)
class Axis:
    name: str                    # dataset column: the leaf key, disambiguated
    places: tuple[tuple, ...]    # paths into {"target": ..., "daq": ...}
    values: Sequence
    origin: Origin
    written: str = "key"         # the field of its parameter that says its places
    role: AxisRole = AxisRole.SCAN

    def place_values(self, j: int) -> list:
        """The value place j takes at each of the axis's values."""
        if self.role is AxisRole.SEARCH:
            return [value[j] for value in self.values]
        return list(self.values)

    def describe_values(self) -> str:
        v = self.values
        if isinstance(v, range):
            step = f", step {v.step}" if v.step != 1 else ""
            return f"range({v.start}, {v.stop}{step}): {len(v)} values"
        shown = ", ".join(map(str, v[:8])) + (", ..." if len(v) > 8 else "")
        return f"[{shown}]: {len(v)} values"


@dataclass(frozen=True)
class Scan:
    axes: tuple[Axis, ...]
    repeat: int = 1
    explicit: tuple[tuple[int, ...], ...] | None = None  # value-index tuples, instead of the product

    @property
    def coordinates_total(self) -> int:
        if self.explicit is not None:
            return len(self.explicit)
        return math.prod(len(a.values) for a in self.axes)

    @property
    def total(self) -> int:
        """Number of points, repeats included."""
        return self.coordinates_total * self.repeat

    def coordinates(self) -> Iterator[tuple]:
        """The value of every axis for each coordinate, in scan order."""
        if self.explicit is not None:
            return (self._values(index) for index in self.explicit)
        return itertools.product(*(a.values for a in self.axes))

    def _values(self, index: tuple[int, ...]) -> tuple:
        return tuple(a.values[i] for a, i in zip(self.axes, index))

    def explicit_repeats(self) -> list[int]:
        """Repeat index of each explicit point: how often it came before."""
        seen: dict[tuple, int] = {}
        out = []
        for index in self.explicit or ():
            out.append(seen.get(index, 0))
            seen[index] = out[-1] + 1
        return out

    def coordinate(self, i: int) -> tuple:
        """The i-th coordinate, without walking the ones before it."""
        if self.explicit is not None:
            return self._values(self.explicit[i])
        out = []
        for axis in reversed(self.axes):
            i, r = divmod(i, len(axis.values))
            out.append(axis.values[r])
        return tuple(reversed(out))

    def patch(self, coordinate: tuple) -> list[tuple[tuple, object]]:
        """(place, value) for every place the coordinate sets."""
        return [pair for axis, value in zip(self.axes, coordinate)
                for pair in (zip(axis.places, value) if axis.role is AxisRole.SEARCH
                             else ((place, value) for place in axis.places))]

    def hashed_axes(self) -> tuple[list[tuple[tuple, Sequence]], tuple | None]:
        """(places, values) of every axis as the key hasher takes them, and the explicit index
        tuples to go with them: a search axis becomes one axis per place (its element of each value)."""
        if not any(a.role is AxisRole.SEARCH for a in self.axes):
            return [(a.places, a.values) for a in self.axes], self.explicit
        axes, spread = [], []
        for axis in self.axes:
            if axis.role is AxisRole.SEARCH:
                axes += [((place,), axis.place_values(j)) for j, place in enumerate(axis.places)]
                spread.append(len(axis.places))
            else:
                axes.append((axis.places, axis.values))
                spread.append(1)
        explicit = tuple(tuple(i for i, n in zip(index, spread) for _ in range(n)) for index in self.explicit)
        return axes, explicit


def place_of(path: tuple) -> tuple:
    """A key path as a path into the resolved config: `daq.…` or the target."""
    if path and path[0] == "daq":
        return path
    return ("target",) + path


def expand(proc: DaqProcedure) -> Scan:
    names = axis_names(proc.parameters)
    axes = tuple(Axis(name, tuple(place_of(p) for p in param.places()), param.values, param.origin, param.written)
                 for name, param in zip(names, proc.parameters))
    if proc.points is not None:
        return Scan(axes, 1, tuple(proc.points))
    return Scan(axes, proc.repeat)


def kept_axes(scan: Scan) -> list[int]:
    """The axes with a value KEEP (a template leaves their places out at some values)."""
    return [a for a, axis in enumerate(scan.axes)
            if isinstance(axis.values, list) and any(v is KEEP for v in axis.values)]


def settle(scan: Scan, base: dict) -> tuple[Scan, list[tuple[Axis, tuple]]]:
    """The scan with every KEEP as the value `base` (the resolved config without the scan) has
    at that place; an axis whose places have different values there becomes one axis per
    value vector. Also gives the (axis, place) that `base` lacks (those places keep KEEP)."""
    kept = kept_axes(scan)
    if not kept:
        return scan, []
    axes: list[Axis] = []
    remaps: list[list[list[int] | None]] = []   # per old axis: per new axis, old index -> new index
    missing = []
    for a, axis in enumerate(scan.axes):
        if a not in kept:
            axes.append(axis)
            remaps.append([None])
            continue
        groups: dict[tuple, tuple[list, list]] = {}   # token vector -> (places, values)
        for place in axis.places:
            there = get_path(base, place, KEEP)   # KEEP: the base has no value there
            if there is KEEP:
                missing.append((axis, place))
            values = [there if v is KEEP else v for v in axis.values]
            groups.setdefault(tuple(map(value_token, values)), ([], values))[0].append(place)
        remaps.append([])
        for k, (tokens, (places, values)) in enumerate(groups.items()):
            index = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
            distinct = list({t: v for t, v in zip(tokens, values)}.values())
            name = axis.name if len(groups) == 1 else f"{axis.name}#{k + 1}"
            axes.append(Axis(name, tuple(places), distinct, axis.origin, axis.written))
            remaps[-1].append([index[t] for t in tokens])
    points = tuple(tuple(i if m is None else m[i] for i, maps in zip(point, remaps) for m in maps)
                   for point in scan.explicit or ())
    return Scan(tuple(axes), scan.repeat, points if scan.explicit is not None else None), missing


def overlaps(scan: Scan) -> list[tuple[Axis, tuple, str]]:
    """Places set twice, or inside another place: (axis, place, problem)."""
    seen: dict[tuple, Axis] = {}
    problems = []
    for axis in scan.axes:
        for place in axis.places:
            if place in seen:
                problems.append((axis, place, f"is also set by parameter '{seen[place].name}'"))
            seen.setdefault(place, axis)
    for place, axis in seen.items():
        for n in range(1, len(place)):
            outer = seen.get(place[:n])
            if outer is not None:
                problems.append((axis, place, f"lies inside {'.'.join(map(str, place[:n]))}, "
                                 f"which parameter '{outer.name}' sets"))
    return problems


def _label(level) -> str:
    return "+".join(map(str, level)) if isinstance(level, list) else str(level)


def axis_names(params: Sequence[ScanParameter]) -> list[str]:
    """Leaf key of each parameter; on a clash, prefixed with parent levels."""
    def name(p: ScanParameter, depth: int) -> str:
        return ".".join(_label(lvl) for lvl in p.levels[-depth:])

    names = [name(p, 1) for p in params]
    for depth in range(2, 1 + max((len(p.levels) for p in params), default=1)):
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            break
        names = [name(p, depth) if n in clash else n for n, p in zip(names, params)]
    counts: dict[str, int] = {}
    out = []
    for n in names:
        counts[n] = counts.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n}#{counts[n]}")
    return out
