"""The `template` parameter: raffinerie's extension of the 0.1.2 format, as Datenraffinerie 1.0 wrote it.

A template is jinja2 text rendered once per value (bound to `value`) in the
sandbox of `raffinerie.config.template`, and read as YAML rooted at
`target:` and/or `daq:` (the daq config as raffinerie splits it, `server`
and `client`): the settings that value makes. Its places change with the
value, which a `key` cannot say, so a template becomes columns, each a
group of places whose values agree at every template value
(`dr10points.template_columns`), and a procedure with one has its points
listed as value-index tuples: the Cartesian product of its parameters,
first slowest, repeats innermost, as for keys. A place a rendering leaves
out keeps what the procedure's configuration gives it (`KEEP`, settled
when the procedure is planned: `expand.settle`).

Rendering is per value, never per point: a template of 36 values in a
36,000-point scan is rendered 36 times.
"""

from __future__ import annotations

from typing import Any

from raffinerie.config.dr10points import leaf_places, render, renderable, template_columns
from raffinerie.config.template import Renderer
from raffinerie.config.tree import KEEP
from raffinerie.errors import RaffError

ROOTS = ("target", "daq")
# points are listed as index tuples (~100 bytes each): a million is some 100 MB of memory
MAX_POINTS = 1_000_000


def template_places(renderer: Renderer, template: str, value: Any) -> dict[tuple, Any]:
    """{place: value} that `template` sets for `value`; places rooted at `target` or `daq`."""
    patch = render(renderer, template, value, "the template")
    stray = [k for k in patch if k not in ROOTS]
    if stray:
        raise RaffError(f"the template, rendered for value {value!r}, sets {stray[0]!r} at its top; "
                        "a template's settings are rooted at target: and/or daq:")
    out = {}
    for place, leaf in leaf_places(patch).items():
        if len(place) > 1:
            out[place] = leaf
        elif leaf not in (None, {}):  # `target: 5`: not settings
            raise RaffError(f"the template, rendered for value {value!r}, sets {place[0]} to {leaf!r}, "
                            "not to a mapping of settings"[:300])
    return out


def template_axis(renderer: Renderer, template: str, values) -> tuple[list[tuple[list, list]], list[tuple]]:
    """The columns of a template parameter, each (places, distinct values), and per template
    value the index of its value in each column (see `dr10points.template_columns`)."""
    patches = [template_places(renderer, template, v) for v in renderable(values, "the template")]
    return template_columns(patches, lambda place: KEEP)
