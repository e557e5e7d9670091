"""A daq procedure's parameters as the library writes them: keys, `keys:`, templates, ranges and
values, search specs, and explicit points (read by raffinerie.config.library's loader)."""

from __future__ import annotations

from raffinerie.config.library import Origin, ScanParameter
from raffinerie.config.tree import norm_key, value_token
from raffinerie.errors import RaffError


def templated(entries: list[dict], origin: Origin, report, renderer, repeat: int):
    """Parameters and points of a procedure with `template` parameters (config/templated.py): each
    template becomes columns that vary together, and the points are listed, first slowest."""
    import itertools
    import math

    from raffinerie.config import templated as template_axes

    params: list[ScanParameter] = []
    rows_per_dim: list[list[tuple]] = []   # per parameter written: its value-index tuples
    for i, entry in enumerate(entries):
        here = origin.at("parameters", i)
        if "template" not in entry:
            param = parameter(entry, here, report)
            params.append(param)
            rows_per_dim.append([(j,) for j in range(len(param.values))])
            continue
        values = values_of(entry, here, report)
        try:
            columns, rows = template_axes.template_axis(renderer(), entry["template"], values)
        except RaffError as exc:
            report(here.at("template").error(exc.diagnostic.message))
            return params, []
        for places, distinct in columns:
            paths = [p[1:] if p[0] == "target" else p for p in places]
            params.append(ScanParameter([paths[0][-1]], distinct, here, paths, "template"))
        rows_per_dim.append(rows)
    total = math.prod(len(rows) for rows in rows_per_dim) * repeat
    if total > template_axes.MAX_POINTS:
        report(origin.at("parameters").error(
            f"{total:,} points; with a template parameter the points are listed one by one, "
            f"and at most {template_axes.MAX_POINTS:,} are"))
        return params, []
    points = [tuple(i for part in combo for i in part)
              for combo in itertools.product(*rows_per_dim) for _ in range(repeat)]
    return params, points


def points(entries: list, params: list[ScanParameter], origin: Origin, report) -> list[tuple]:
    """Explicit points as value-index tuples; a repeated point is a repeat."""
    lookup = [{value_token(v): i for i, v in enumerate(p.values)} for p in params]
    out = []
    for n, entry in enumerate(entries):
        if len(entry) != len(params):
            report(origin.at(n).error(f"point has {len(entry)} values for {len(params)} parameters"))
            continue
        index = tuple([table.get(value_token(v)) for table, v in zip(lookup, entry)])
        if None in index:
            bad = index.index(None)
            report(origin.at(n, bad).error(f"{entry[bad]!r} is not among the values of parameter {bad}"))
            continue
        out.append(index)
    return out


def parameter(entry: dict, origin: Origin, report) -> ScanParameter:
    if "keys" in entry:
        paths = [tuple(norm_key(k) for k in path) for path in entry["keys"]]
        return ScanParameter([paths[0][-1]], list(entry["values"]), origin, paths, "keys")
    levels = [[norm_key(k) for k in level] if isinstance(level, list) else norm_key(level)
              for level in entry["key"]]
    search = None
    if "search" in entry:
        from raffinerie.config.search import parse

        search = parse(entry["search"])
    return ScanParameter(levels, values_of(entry, origin, report), origin, search=search)


def values_of(entry: dict, origin: Origin, report) -> list | range:
    """A parameter's `values`, or its `range` (an empty range is reported)."""
    if "values" in entry:
        return list(entry["values"])
    spec = entry["range"]
    start, stop, step = spec.get("start", 0), spec["stop"], spec.get("step", 1)
    if step == 0:
        report(origin.at("range", "step").error("range step is 0; it must be a positive integer"))
        return range(0)
    values = range(start, stop, step)
    if len(values) == 0:
        relation = "above" if step > 0 else "below"
        report(origin.at("range").error(
            f"range is empty: stop {stop} is not {relation} start {start} (step {step})"))
    return values
