"""Nested configuration mappings: key normalisation, overlays, paths.

YAML tells `0:` (an int key) from `"0":` (a string key). Physically they are
the same half or channel, so every key that spells a decimal integer is
turned into that integer, once, when a file is read.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

NETWORK_KEYS = ("hostname", "port")


class Kept(Enum):
    """The value of a place that a template's rendering for some value leaves out: the one the
    procedure's resolved configuration gives it, known only when it is planned (`expand.settle`).
    An enum, so that it keeps its identity through pickling."""

    KEEP = "as configured"

    def __repr__(self) -> str:
        return "(as configured)"

    __str__ = __repr__


KEEP = Kept.KEEP


def norm_key(key: Any) -> Any:
    """`"12"` → 12; other keys unchanged."""
    if isinstance(key, str) and key.isdecimal() and key.isascii() and (key == "0" or key[0] != "0"):
        return int(key)
    return key


def normalize(value: Any) -> Any:
    """A copy of `value` with every mapping key normalised."""
    if isinstance(value, dict):
        return {norm_key(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def merge(base: dict, overlay: dict | None) -> dict:
    """`base` with `overlay` laid over it (mappings merge, anything else replaces).

    Returns a new mapping; shares untouched sub-mappings of `base`, which are
    never modified.
    """
    if not overlay:
        return base
    out = dict(base)
    for key, value in overlay.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def set_path(tree: dict, path: tuple, value: Any) -> dict:
    """A new tree with `value` at `path`, copying only the mappings on the path."""
    head, rest = path[0], path[1:]
    out = dict(tree)
    if rest:
        child = out.get(head)
        out[head] = set_path(child if isinstance(child, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def has_path(tree: Any, path: tuple) -> bool:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def get_path(tree: Any, path: tuple, default: Any = None) -> Any:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def strip_network(target: dict) -> dict:
    """Target config without the host keys that old target files carry."""
    if any(k in target for k in NETWORK_KEYS):
        return {k: v for k, v in target.items() if k not in NETWORK_KEYS}
    return target


_PLAIN = (int, str)  # a float goes by its repr: NaN is not equal to itself


def value_token(value) -> tuple:
    """A scan value as a look-up key: 1, 1.0 and True apart (as their reprs are), without
    writing out the repr of every number of every point."""
    kind = value.__class__
    return (kind, value) if kind in _PLAIN else (None, repr(value))
