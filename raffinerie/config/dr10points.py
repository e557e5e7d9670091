"""Datenraffinerie 1.0 parameters as raffinerie's: keys as places, templates as explicit points.

A 1.0 `key` becomes a `key` parameter at the same place (`daq` keys go into
the daq server's section). A template parameter is rendered once per value
(in the sandbox of `raffinerie.config.template`) and read as YAML; its places
change with the value, which a `key` cannot say, so a procedure with one is
written as explicit places (`keys:`) and explicit `points:` in 1.0's order.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raffinerie.config.template import MAX_RANGE, Renderer, TemplateProblem
from raffinerie.config.tree import KEEP, norm_key, normalize, value_token
from raffinerie.config.yamlio import parse_yaml
from raffinerie.errors import RaffError

# with template parameters every point is written out, one YAML row each, into a library that
# raff reads whole (yamlio.MAX_FILE_BYTES, 64 MiB): a million rows are some 20 MB of it
MAX_EXPLICIT_POINTS = 1_000_000


def daq_layout(full: dict) -> str:
    daq = full.get("daq") or {}
    return "split" if isinstance(daq, dict) and ("server" in daq or "client" in daq) and "menus" not in daq \
        else "server"


def place(levels: list, layout: str) -> list:
    """A 1.0 key as a raffinerie key (levels; `daq` keys into the daq server's section)."""
    levels = [([norm_key(x) for x in lvl] if isinstance(lvl, list) else norm_key(lvl)) for lvl in levels]
    if not levels:
        return levels
    head = levels[0]
    if head == "target":
        return levels[1:]
    if head == "daq":
        return levels if layout == "split" else ["daq", "server"] + levels[1:]
    if head == "client":
        return ["daq", "client"] + levels[1:]
    return levels


def parameter_values(spec: Any, what: str) -> list | range:
    """A parameter's values: a list, or {start, stop, step} of whole numbers (Python's range)."""
    if isinstance(spec, dict):
        bounds = {k: spec.get(k, d) for k, d in (("start", 0), ("stop", None), ("step", 1))}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in bounds.values()) \
                or bounds["step"] == 0 or set(spec) - set(bounds):
            raise RaffError(f"{what}: values {{start, stop, step}} are whole numbers (step not 0, "
                            f"stop given), got {spec!r}"[:300])
        return range(bounds["start"], bounds["stop"], bounds["step"])
    if not isinstance(spec, list) or not spec:
        raise RaffError(f"{what}: values is a list or {{start, stop, step}}, got {spec!r}"[:300])
    return spec


def template_values(spec: Any, what: str) -> list | range:
    """The values of a template parameter: each is one rendering, so there are at most MAX_RANGE."""
    return renderable(parameter_values(spec, what), what)


def renderable(values: list | range, what: str) -> list | range:
    """`values` of a template, refused before any rendering when there are more than MAX_RANGE."""
    if len(values) > MAX_RANGE:
        raise RaffError(f"{what} has {len(values):,} values; a template is rendered once per value, "
                        f"and at most {MAX_RANGE:,} are")
    return values


def render(renderer: Renderer, template: Any, value: Any, what: str) -> dict:
    """The patch `template` gives for `value`: rendered in the sandbox, read as bounded YAML."""
    if not isinstance(template, str):
        raise RaffError(f"{what} is not text but {type(template).__name__}")
    try:
        text = renderer.render(template, value)
    except TemplateProblem as exc:
        raise RaffError(f"{what}, for value {value!r}: {exc}") from None
    try:
        doc = parse_yaml(text)
    except RaffError as exc:
        raise RaffError(f"{what} rendered for value {value!r} is not YAML: "
                        f"{exc.diagnostic.message}") from None
    if doc is not None and not isinstance(doc, dict):
        raise RaffError(f"{what} rendered for value {value!r} is not a mapping of settings: "
                        f"{text[:80]!r}")
    return normalize(doc or {})


def leaf_places(tree: Any, path: tuple = ()) -> dict[tuple, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[tuple, Any] = {}
        for key, value in tree.items():
            out.update(leaf_places(value, path + (key,)))
        return out
    return {path: tree}


def rooted_places(patch: dict, layout: str) -> dict[tuple, Any]:
    """Leaves of a rendered patch as raffinerie places (`("target", ...)` or `("daq", ...)`)."""
    out = {}
    for path, value in leaf_places(patch).items():
        levels = place(list(path), layout)
        out[tuple(levels) if levels and levels[0] == "daq" else ("target",) + tuple(levels)] = value
    return out


def _get(tree: Any, path: tuple) -> tuple[bool, Any]:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False, None
        tree = tree[part]
    return True, tree


def key_param(levels: list, values) -> dict:
    return {"key": levels, **values_field(values)}


def values_field(values) -> dict:
    """A parameter's values as the 0.1.2 format writes them: a `range`, or a list of `values`."""
    if isinstance(values, range):
        return {"range": {"start": values.start, "stop": values.stop, "step": values.step}}
    return {"values": list(values)}


@dataclass(frozen=True)
class KeyDim:
    """A `key` parameter: its place and values."""

    levels: list
    values: list | range

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class TemplateDim:
    """A template parameter: per value, the {place: value} its rendering sets."""

    patches: list[dict]

    def __len__(self) -> int:
        return len(self.patches)


def explicit(out: dict, dims: list[KeyDim | TemplateDim], target: dict, daq: dict, repeat: int, name: str,
             source: Path, sources: list[tuple[int, str]] | None = None, indices: list | None = None) -> dict:
    """Template parameters as explicit places and points (the Cartesian product, first slowest).
    `sources` receives (index of the dim, i.e. the 1.0 parameter; `key` or `template`) of each
    parameter written. With
    `indices`, the points go there as value-index tuples (what the loader makes of `points:`),
    and not into `out`: a library read directly never writes them out and reads them back."""
    sources = [] if sources is None else sources
    total = math.prod(len(dim) for dim in dims) * repeat
    if total > MAX_EXPLICIT_POINTS:
        raise RaffError(f"procedure '{name}' has {total:,} points; with template parameters each is "
                        f"written out, and at most {MAX_EXPLICIT_POINTS:,} are", file=source)
    base = {"target": target, "daq": daq}
    params: list[dict] = []
    per_dim: list[list[tuple]] = []   # per dim: for each value, the values of that dim's parameters
    per_dim_index: list[list[tuple]] = []  # the same as indices into those parameters' values
    for d, dim in enumerate(dims):
        if isinstance(dim, KeyDim):
            sources.append((d, "key"))
            params.append({"key": dim.levels, "values": list(dim.values)})
            per_dim.append([(v,) for v in dim.values])
            lookup = {value_token(v): i for i, v in enumerate(dim.values)}  # as the loader looks up
            per_dim_index.append([(lookup[value_token(v)],) for v in dim.values])
            continue
        def base_value(place: tuple) -> Any:
            found, value = _get(base, place)
            if not found:
                raise RaffError(f"procedure '{name}': the template sets {'.'.join(map(str, place))} "
                                "for some values only, and nothing else sets it", file=source)
            return value

        # read directly, a place a rendering leaves out keeps its configured value (settled when
        # planned, calibrations included), as in a template parameter of raffinerie's own format
        groups, rows = template_columns(dim.patches, base_value if indices is None else lambda place: KEEP)
        for group, distinct in groups:
            sources.append((d, "template"))
            params.append({"keys": [list(p[1:]) if p[0] == "target" else list(p) for p in group],
                           "values": distinct})
        per_dim.append([tuple(distinct[i] for (_, distinct), i in zip(groups, row)) for row in rows])
        per_dim_index.append(rows)
    out["parameters"] = params
    out.pop("repeat", None)
    if indices is not None:
        for combo in itertools.product(*per_dim_index):
            indices.extend([tuple(i for part in combo for i in part)] * repeat)
        return out
    points = []
    for combo in itertools.product(*per_dim):
        row = [v for part in combo for v in part]
        points.extend([row] * repeat)
    out["points"] = points
    return out


def template_columns(patches: list[dict], missing) -> tuple[list[tuple[list, list]], list[tuple]]:
    """A template's renderings (per value, {place: value}) as columns that vary together: places
    whose values agree at every template value share one column. A place a rendering leaves out
    takes `missing(place)` there. Gives the columns, each (places, distinct values), and per
    template value the index of its value in each column."""
    places = list(dict.fromkeys(p for patch in patches for p in patch))
    vectors: dict[tuple, list[tuple]] = {}
    for place in places:
        column = [patch[place] if place in patch else missing(place) for patch in patches]
        vectors.setdefault(tuple(map(_freeze, column)), []).append(place)
    groups, positions = [], []
    for vector, group in vectors.items():
        distinct = list(dict.fromkeys(vector))
        groups.append((group, [_thaw(v) for v in distinct]))
        positions.append({v: i for i, v in enumerate(distinct)})
    rows = [tuple(pos[vector[j]] for pos, vector in zip(positions, vectors)) for j in range(len(patches))]
    return groups, rows


@dataclass(frozen=True)
class _Json:
    """A mapping or list as a hashable value (its canonical JSON), to group places by their values.
    One that JSON cannot write canonically (a date, keys of mixed types) goes by its repr, and
    is kept as it is."""

    text: str
    kept: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class _Scalar:
    """A scalar grouped as the loader looks values up (`value_token`): 1, 1.0 and True apart."""

    token: tuple
    kept: Any = field(compare=False)


def _freeze(value: Any) -> Any:
    if not isinstance(value, (dict, list)):
        return _Scalar(value_token(value), value)
    try:
        return _Json(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        return _Json("repr " + repr(value), value)


def _thaw(value: Any) -> Any:
    if isinstance(value, _Scalar):
        return value.kept
    return value.kept if value.text.startswith("repr ") else json.loads(value.text)
