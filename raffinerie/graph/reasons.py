"""Why a node or point is built: reasons as data, and what changed since the last build.

A `Reason` is a `ReasonKind` with its fields: the first differing settings
(`Change`s), the changed code files, point counts, the calibration waited
for and, for a reason caused by another (waiting for a calibration that is
itself out of date), that cause. `str(reason)` is its text for people; the
JSON plan carries `as_dict()` beside it.

`resolved_record` is what the build of a daq procedure keeps about what it
resolved: its base config (the target and daq configs before the scan,
without location settings) as compressed JSON, about 5 kB for a hexaboard,
and its axes. `compare_resolved` names the differences to it.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Iterable

from raffinerie.config.keys import hashed_config
from raffinerie.records import recorded_calibrations

MAX_CHANGES = 20     # changes kept in a reason (the first ones); `more` counts the rest
SHOWN_CHANGES = 3    # changes named in a reason's text
_COLLECT = 400       # raw differences collected before grouping


class ReasonKind(StrEnum):
    CACHED = "cached"                            # the node is in the cache
    ALL_CACHED = "all_cached"                    # every point of a scan is in the cache
    NOT_BUILT = "not_built"                      # never built (no record of a build)
    NEW_POINTS = "new_points"                    # a scan has points the cache lacks
    NEW_POINT = "new_point"                      # one point the cache lacks
    POINTS_CHANGED = "points_changed"            # a dataset's points are not those of its last build
    CALIBRATION_CHANGED = "calibration_changed"  # the calibration a scan lays over its configs changed
    WAITING = "waiting_for_calibration"          # keys unknown until a calibration is built
    PARAMETERS_CHANGED = "parameters_changed"
    MODULE_CHANGED = "module_changed"
    CODE_CHANGED = "code_changed"
    DATASET_CHANGED = "dataset_changed"          # an analysis's input dataset changed
    COLUMNS_CHANGED = "columns_changed"          # a dataset's data_columns changed
    MEASUREMENTS_CHANGED = "measurements_changed"  # same points, measurements acquired again
    MANIFEST_UNREADABLE = "manifest_unreadable"
    INPUTS_CHANGED = "inputs_changed"            # changed, but the last build recorded too little to say how
    FORCED = "forced"                            # cached, built again because of --force
    DAMAGED = "damaged"                          # its cache entry failed its check: quarantined, made again
    USED_CHANGED = "used_changed"                # an analysis it uses (`uses:`) has a new output


@dataclass(frozen=True)
class Change:
    """One differing setting: its path (dotted), its value before and after.

    `added`: it was not there before; `removed`: it is not there now.
    """

    path: str
    before: Any = None
    after: Any = None
    added: bool = False
    removed: bool = False
    # the scan axis it is about (None: a setting); data, so that no one parses `path` back
    axis: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.added:
            return f"{self.path} {_fmt(self.after)} (new)"
        if self.removed:
            return f"{self.path} removed (was {_fmt(self.before)})"
        return f"{self.path} {_fmt(self.before)} → {_fmt(self.after)}"

    def as_dict(self) -> dict:
        out = {"path": self.path}
        if not self.added:
            out["before"] = _jsonable(self.before)
        if not self.removed:
            out["after"] = _jsonable(self.after)
        if self.added or self.removed:
            out["added" if self.added else "removed"] = True
        return out

    @classmethod
    def from_dict(cls, doc: dict) -> "Change":
        return cls(doc.get("path", "?"), doc.get("before"), doc.get("after"),
                   bool(doc.get("added")), bool(doc.get("removed")))


_FIXED_TEXT = {ReasonKind.CACHED: "cached", ReasonKind.NOT_BUILT: "not built yet",
               ReasonKind.MEASUREMENTS_CHANGED: "measurements changed (acquired again)",
               ReasonKind.MANIFEST_UNREADABLE: "a measurement's manifest is unreadable"}
_TEXT_WITH_DETAIL = {ReasonKind.NEW_POINT: "new point", ReasonKind.PARAMETERS_CHANGED: "parameters changed",
                     ReasonKind.MODULE_CHANGED: "module changed", ReasonKind.DATASET_CHANGED: "input dataset changed",
                     ReasonKind.COLUMNS_CHANGED: "data columns changed"}  # then the first changes, if any


@dataclass(frozen=True)
class Reason:
    kind: ReasonKind
    changes: tuple[Change, ...] = ()
    more: int = 0                       # changes found beyond those listed
    files: tuple[str, ...] = ()         # changed code files
    new: int = 0                        # points to acquire
    cached: int = 0                     # points cached
    calibration: str | None = None      # the calibration waited for, or that changed
    cause: "Reason | None" = None       # why that calibration is not ready
    problem: str | None = None          # what a damaged entry's check found
    used: tuple[str, ...] = ()          # the analyses it uses whose output changed

    def __str__(self) -> str:
        return self.text()

    def text(self, nested: bool = False) -> str:
        """The reason for people; `nested`: inside another reason's parentheses."""
        k = self.kind
        detail = self._detail(nested)
        if k in _FIXED_TEXT:
            return _FIXED_TEXT[k]
        if k in _TEXT_WITH_DETAIL:
            return _TEXT_WITH_DETAIL[k] + detail
        if k is ReasonKind.ALL_CACHED:
            return f"all {self.cached} points cached" if self.cached != 1 else "its 1 point is cached"
        if k is ReasonKind.NEW_POINTS:
            return f"{self.new} new point{'s' * (self.new != 1)}, {self.cached} cached{detail}"
        if k is ReasonKind.POINTS_CHANGED:
            return f"{'new points' if self.new else 'points changed'}{detail}"
        if k is ReasonKind.CALIBRATION_CHANGED:
            counts = (f": {self.new} new point{'s' * (self.new != 1)}, {self.cached} cached"
                      if self.new or self.cached else "")
            named = f" ({self.calibration})" if self.calibration else ""
            return f"calibration changed{named}{counts}{detail}"
        if k is ReasonKind.WAITING:
            if self.cause is None or self.cause.kind in (ReasonKind.NOT_BUILT, ReasonKind.CACHED):
                return f"calibration {self.calibration} not built yet"
            return f"waiting for calibration {self.calibration} ({self.cause.text(nested=True)})"
        if k is ReasonKind.CODE_CHANGED:
            return f"code changed ({', '.join(self.files)})"
        if k is ReasonKind.USED_CHANGED:
            return f"used analysis changed ({', '.join(self.used)})"
        if k is ReasonKind.FORCED:
            return "forced" if nested else "forced (--force)"
        if k is ReasonKind.DAMAGED:
            return f"damaged cache entry ({self.problem}); moved to quarantine/, made again"
        return "inputs changed"

    def _detail(self, nested: bool) -> str:
        if not self.changes:
            return ""
        shown = [str(c) for c in self.changes[:SHOWN_CHANGES]]
        more = len(self.changes) - len(shown) + self.more
        text = ", ".join(shown) + (f", +{more} more" if more else "")
        return f": {text}" if nested else f" ({text})"

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"kind": str(self.kind)}
        if self.changes:
            out["changes"] = [c.as_dict() for c in self.changes]
        if self.more:
            out["more"] = self.more
        if self.files:
            out["files"] = list(self.files)
        if self.kind in (ReasonKind.NEW_POINTS, ReasonKind.ALL_CACHED, ReasonKind.CALIBRATION_CHANGED,
                         ReasonKind.POINTS_CHANGED) and (self.new or self.cached):
            out["new"], out["cached"] = self.new, self.cached
        if self.calibration:
            out["calibration"] = self.calibration
        if self.cause is not None:
            out["cause"] = self.cause.as_dict()
        if self.problem:
            out["problem"] = self.problem
        if self.used:
            out["used"] = list(self.used)
        return out

    @classmethod
    def from_dict(cls, doc: dict | None) -> "Reason | None":
        if not isinstance(doc, dict):
            return None
        try:
            kind = ReasonKind(doc.get("kind"))
        except ValueError:
            kind = ReasonKind.INPUTS_CHANGED
        return cls(kind, tuple(Change.from_dict(c) for c in doc.get("changes") or ()),
                   int(doc.get("more") or 0), tuple(doc.get("files") or ()),
                   int(doc.get("new") or 0), int(doc.get("cached") or 0), doc.get("calibration"),
                   cls.from_dict(doc.get("cause")), doc.get("problem"), tuple(doc.get("used") or ()))


@dataclass
class Comparison:
    """How a scan differs from its last build."""

    calibrations_changed: tuple[str, ...] = ()   # the calibrations whose output is not the one used
    columns: Change | None = None
    changes: list[Change] = field(default_factory=list)   # settings and axes, first differing first
    more: int = 0
    old_values: dict[str, set] | None = None   # axis name -> the values the last build scanned


def calibrations_changed(inputs: dict, calibrations: dict[str, str | None]) -> tuple[str, ...]:
    """The calibrations (name -> analysis key now) whose key differs from the one the last build
    of the dataset (its record's `inputs`) applied. Records name their calibrations' keys
    (`calibrations`); those of raffinerie before composable calibrations hold one key
    (`calibration`). A calibration not yet built (key None) has not changed."""
    before = recorded_calibrations(inputs)
    if not before and len(calibrations) == 1 and isinstance(inputs.get("calibration"), str):
        before = {name: inputs["calibration"] for name in calibrations}
    if not before:
        return ()
    return tuple(name for name, key in calibrations.items() if key and before.get(name) != key)


# -- what a build keeps ----------------------------------------------------------------

def resolved_record(base: dict, axes: Iterable, identity: str, mode: str, repeat: int,
                    data_columns: list | None, take: int = 0) -> dict:
    """What the build of a scan resolved, compactly: base config (compressed JSON), axes, and
    the take (forced re-acquisition) of its points."""
    blob = zlib.compress(_canonical(hashed_config(base)).encode(), 9)
    return {"base": base64.b64encode(blob).decode("ascii"),
            "axes": [{"name": a.name, "places": [list(p) for p in a.places],
                      "values": _values_spec(a.values)} for a in axes],
            "identity": identity, "mode": mode, "repeat": repeat, "data_columns": data_columns,
            "take": take}


def _canonical(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _values_spec(values) -> dict:
    if isinstance(values, range):
        return {"range": [values.start, values.stop, values.step]}
    return {"values": [_jsonable(v) for v in values]}


def _values_of(spec: dict) -> list | range:
    if "range" in spec:
        return range(*spec["range"])
    return list(spec.get("values") or [])


def describe_values(values) -> str:
    if isinstance(values, range):
        step = f", {values.step}" if values.step != 1 else ""
        return f"range({values.start}, {values.stop}{step})"
    shown = ", ".join(map(str, values[:6])) + (", ..." if len(values) > 6 else "")
    return f"[{shown}]"


def compare_resolved(old: dict, base: dict, axes, identity: str, mode: str, repeat: int,
                     data_columns: list | None, take: int = 0) -> Comparison:
    """The differences between a scan and the `resolved` record of its last build."""
    out = Comparison()
    if old.get("data_columns") != data_columns:
        out.columns = Change("data_columns", old.get("data_columns"), data_columns)
    raw: list[Change] = []
    for name, before, after in (("identity", old.get("identity"), identity),
                                ("mode", old.get("mode"), mode), ("repeat", old.get("repeat"), repeat),
                                ("take", old.get("take", 0), take)):
        if before != after:
            raw.append(Change(name, before, after))
    try:
        old_base = json.loads(zlib.decompress(base64.b64decode(old.get("base") or "")))
    except (ValueError, zlib.error, TypeError):
        old_base = None
    settings: list[tuple[tuple, Any, Any, str]] = []
    if isinstance(old_base, dict):
        new_base = json.loads(_canonical(hashed_config(base)))
        _diff(old_base, new_base, (), settings)
    changes = raw + _group(settings)
    old_axes = {a.get("name"): a for a in old.get("axes") or [] if isinstance(a, dict)}
    out.old_values = {}
    for axis in axes:
        before = old_axes.pop(axis.name, None)
        if before is None:
            changes.append(Change(f"axis {axis.name}", after=describe_values(axis.values), added=True,
                                  axis=axis.name))
            continue
        old_vals = _values_of(before.get("values") or {})
        out.old_values[axis.name] = set(map(hashable, old_vals))
        if json.loads(_canonical([list(p) for p in axis.places])) != before.get("places"):
            changes.append(Change(f"axis {axis.name} places", _places_text(before.get("places") or []),
                                  _places_text(axis.places), axis=axis.name))
        if _values_spec(axis.values) != before.get("values"):
            changes.append(Change(f"axis {axis.name}", describe_values(old_vals), describe_values(axis.values),
                                  axis=axis.name))
    for name, before in old_axes.items():
        changes.append(Change(f"axis {name}", before=describe_values(_values_of(before.get("values") or {})),
                              removed=True, axis=name))
    out.changes = changes[:MAX_CHANGES]
    out.more = len(changes) - len(out.changes) + (len(settings) >= _COLLECT)
    return out


def diff_values(old: Any, new: Any, limit: int = MAX_CHANGES) -> tuple[list[Change], int]:
    """The differing leaves of two mappings (analysis parameters): (first changes, how many more)."""
    found: list[tuple[tuple, Any, Any, str]] = []
    _diff(json.loads(_canonical(old)), json.loads(_canonical(new)), (), found)
    changes = _group(found)
    return changes[:limit], max(0, len(changes) - limit)


def _diff(old: Any, new: Any, path: tuple, out: list) -> None:
    """(path, before, after, how) of the differing leaves, in the new document's order."""
    if len(out) >= _COLLECT or old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key, value in new.items():
            if key in old:
                _diff(old[key], value, path + (key,), out)
            else:
                out.append((path + (key,), None, value, "added"))
        for key, value in old.items():
            if key not in new:
                out.append((path + (key,), value, None, "removed"))
        return
    out.append((path, old, new, "changed"))


def _group(found: list[tuple[tuple, Any, Any, str]]) -> list[Change]:
    """Changes; the same change in several places is one, `{roc_s0,roc_s1}.Top.0.phase_strobe 0 → 3`."""
    groups: dict[tuple, list[tuple]] = {}
    for path, before, after, how in found:
        sig = (_canonical(before), _canonical(after), how, len(path))
        groups.setdefault(sig, []).append(path)
    out = []
    for (before, after, how, _), paths in groups.items():
        b, a = json.loads(before), json.loads(after)
        for text in _compact(paths):
            out.append(Change(text, b if how != "added" else None, a if how != "removed" else None,
                              how == "added", how == "removed"))
    return out


def _compact(paths: list[tuple]) -> list[str]:
    """Dotted paths; those that form a product in one `{a,b}.c.{0,1}` path."""
    shown = [p[1:] if p and p[0] == "target" else p for p in paths]
    if len(shown) > 1:
        columns = [list(dict.fromkeys(p[i] for p in shown)) for i in range(len(shown[0]))]
        size = 1
        for col in columns:
            size *= len(col)
        if size == len(shown) and len(set(shown)) == len(shown):
            return [".".join(str(c[0]) if len(c) == 1 else "{" + ",".join(map(str, c)) + "}"
                             for c in columns)]
    return [".".join(map(str, p)) or "(all)" for p in shown]


def _places_text(places) -> str:
    return ", ".join(_compact([tuple(p) for p in places]))


def hashable(value: Any) -> Any:
    """An axis value as a set member: lists and mappings by their canonical JSON."""
    return _canonical(value) if isinstance(value, (list, dict)) else value


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value if len(value) <= 60 else value[:57] + "..."
    if isinstance(value, dict) and value:
        text = _canonical(value)
        return text if len(text) <= 40 else "{…}"
    if isinstance(value, (list, dict)):
        text = _canonical(value)
        return text if len(text) <= 60 else text[:56] + "...]"
    return str(value)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    text = _canonical(value)
    return json.loads(text) if len(text) <= 400 else _fmt(value)
