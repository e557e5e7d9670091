"""The planner: every node a build would touch, with its key, status and reason.

Pure: it reads the library and what the cache holds (through a `CacheView`)
and returns plain data. `raff plan` prints it; `raff build` executes it.

Nodes: `points:NAME` (the measurements of a daq procedure), `dataset:NAME`
(its table) and `analysis:NAME`. A daq procedure with a calibration depends
on that analysis; until it is built, the keys of its points are unknown and
its points wait.

Several targets (`raff plan A B`) are one plan: the union of their
graphs, a node shared by several targets once.

Forcing (`--force`) turns cached datasets and analyses into nodes to build
(`force`). A forced re-acquisition (`--force-acquire`) makes a new *take* of
a procedure's points: take T > 0 is hashed into every point's key (as a
`take` beside the target and daq configs), so the new measurements never
replace the old ones, and the procedure's current take is recorded in the
cache (`take_record`) so that later plans use it. Take 0 keys are the keys
of before takes existed.

Statuses and reasons are data: a `Status` and a `Reason` (a `ReasonKind` and
its fields: the first differing settings, the changed code files, point
counts). Their text is made from the data, never parsed back. A daq
procedure's last build records what it resolved (`resolved_record`: its base
config compressed, its axes), so the next plan can name what changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any, Iterable, Protocol, Sequence

from raffinerie.config.expand import Scan, expand
from raffinerie.config.keys import ScanHasher, digest, key_bytes
from raffinerie.config.library import AnalysisProcedure, DaqProcedure, Library, Workflow
from raffinerie.config.resolve import ConfigFiles, base_config, server_setting
from raffinerie.errors import ConfigErrors, RaffError
from raffinerie.graph.reasons import (Change, Comparison, Reason, ReasonKind, compare_resolved, diff_values,
                                      resolved_record)

__all__ = ["BUILD", "CACHED", "WAITING", "Change", "Node", "Plan", "PointSet", "Reason", "ReasonKind",
           "Status", "analysis_inputs", "analysis_key", "build_record", "dataset_key", "force", "make_plan",
           "take_keys", "take_record"]


class Status(StrEnum):
    """A node's status (compares equal to its text)."""

    CACHED = "cached"
    BUILD = "build"
    WAITING = "waiting"


CACHED, BUILD, WAITING = Status.CACHED, Status.BUILD, Status.WAITING
KEY_SIZE = 32
# raw bytes of one (event, chip) record of the hexactrl format
RECORD_BYTES = 392
SUMMARY_ROW_BYTES = 20 * 8
CHANNELS_PER_CHIP = 78


class CacheView(Protocol):
    def keys(self, kind: str) -> set[bytes]: ...
    def has(self, kind: str, key: bytes) -> bool: ...
    def calibration(self, key: bytes) -> dict | None: ...
    def last_build(self, kind: str, name: str) -> dict | None: ...
    def content(self, kind: str, keys) -> bytes | None: ...


@dataclass
class PointSet:
    """The points of one daq procedure, in acquisition order."""

    procedure: DaqProcedure
    scan: Scan
    base: dict | None                # resolved config before the scan; None while waiting
    keys: bytearray = field(default_factory=bytearray)    # KEY_SIZE bytes per point
    cached: bytearray = field(default_factory=bytearray)  # 1 per cached point
    waiting_for: str | None = None
    identity: str = ""               # target identity in the keys
    comparison: Comparison | None = None   # how it differs from its last build (when it was built)
    take: int = 0                    # the take (forced re-acquisition) its keys are of; 0: the first

    @property
    def retakeable(self) -> bool:
        """Whether `--force-acquire` can take its points again (imported runs cannot)."""
        return self.procedure.imported is None

    @property
    def total(self) -> int:
        return self.scan.total

    @property
    def n_cached(self) -> int:
        return sum(self.cached) if self.base is not None else 0

    @property
    def to_acquire(self) -> int:
        return self.total - self.n_cached if self.base is not None else 0

    def key(self, i: int) -> bytes:
        return bytes(self.keys[i * KEY_SIZE:(i + 1) * KEY_SIZE])

    def missing(self) -> list[int]:
        """Indices of the points to acquire, in scan order."""
        return [i for i, flag in enumerate(self.cached) if not flag]

    def coordinate(self, i: int) -> tuple[tuple, int]:
        """(axis values, repeat index) of point i."""
        if self.scan.explicit is not None:
            return self.scan.coordinate(i), self.explicit_repeats[i]
        c, r = divmod(i, self.scan.repeat)
        return self.scan.coordinate(c), r

    @cached_property
    def explicit_repeats(self) -> list[int]:
        """Repeat index of each explicit point (see Scan.explicit_repeats)."""
        return self.scan.explicit_repeats()

    def point_reason(self, i: int) -> Reason:
        """Why point i is in the plan: cached, waiting, or new and what differs from the last build."""
        if self.base is None:
            return Reason(ReasonKind.WAITING, calibration=self.waiting_for)
        if self.cached[i]:
            return Reason(ReasonKind.CACHED)
        c = self.comparison
        if c is None:
            return Reason(ReasonKind.NEW_POINT)
        general = [ch for ch in c.changes if not ch.path.startswith("axis ")]
        if general or c.calibration_changed:
            return Reason(ReasonKind.NEW_POINT, tuple(general), c.more)
        coordinate, _ = self.coordinate(i)
        new = tuple(Change(axis.name, after=value, added=True)
                    for axis, value in zip(self.scan.axes, coordinate)
                    if c.old_values is not None and axis.name in c.old_values
                    and _hashable(value) not in c.old_values[axis.name])
        return Reason(ReasonKind.NEW_POINT, new)

    def events_per_point(self) -> int:
        return server_setting((self.base or {}).get("daq"), "NEvents", 0)

    def chips(self) -> int:
        return server_setting((self.base or {}).get("daq"), "NChips", 3)

    def bytes_per_point(self) -> tuple[int, int]:
        """Estimated (raw, table) bytes of one point."""
        events, chips = self.events_per_point(), self.chips()
        raw = 45 + events * chips * RECORD_BYTES
        rows = chips * CHANNELS_PER_CHIP
        table = rows * SUMMARY_ROW_BYTES
        if self.procedure.mode == "events":
            table += events * rows * 14 * 4
        return raw, table


@dataclass
class Node:
    id: str
    kind: str          # points | dataset | analysis
    name: str
    key: str | None
    status: Status
    why: Reason
    depends_on: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """The reason as text (for people, and the JSON plan's `reason`)."""
        return str(self.why)

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "name": self.name, "key": self.key,
                "status": str(self.status), "reason": self.reason, "why": self.why.as_dict(),
                "depends_on": self.depends_on}


@dataclass
class Plan:
    target: str        # what was asked for: a name, or several names joined by ", "
    kind: str          # its kind; for several names, theirs joined by ", "
    identity: str
    nodes: dict[str, Node] = field(default_factory=dict)     # dependency order
    points: dict[str, PointSet] = field(default_factory=dict)
    targets: tuple[str, ...] = ()    # the names asked for, in order
    kinds: tuple[str, ...] = ()      # their kinds

    @property
    def todo(self) -> bool:
        return any(n.status != CACHED for n in self.nodes.values())

    def final_node(self, name: str) -> Node | None:
        """The node that stands for target `name` (None for a workflow)."""
        return self.nodes.get(f"analysis:{name}") or self.nodes.get(f"dataset:{name}")

    def summary(self) -> dict:
        """Point counts over distinct points: a point that several procedures share counts once
        (a build acquires it once); `shared` (when not 0) says how many points are shared."""
        sets = [p for p in self.points.values() if p.base is not None]
        waiting = sum(p.total for p in self.points.values() if p.base is None)
        total = sum(p.total for p in sets)
        cached = sum(p.n_cached for p in sets)
        to_acquire = sum(p.to_acquire for p in sets)
        shared = 0
        if len(sets) > 1:
            total, cached, shared = _distinct(sets)
            to_acquire = total - cached
        out = {"total": total + waiting, "cached": cached, "to_acquire": to_acquire, "waiting": waiting,
               "nodes_to_build": sum(n.status == BUILD for n in self.nodes.values())}
        if shared:
            out["shared"] = shared
        return out


def _distinct(sets: list[PointSet]) -> tuple[int, int, int]:
    """(distinct points, of them cached, of them in several point sets) over several point sets.
    (A point set's own keys are distinct: the repeat index is in them.)"""
    seen: dict[bytes, int] = {}   # key -> cached flag
    shared: set[bytes] = set()
    for points in sets:
        keys, cached = bytes(points.keys), points.cached
        for i in range(points.total):
            key = keys[i * KEY_SIZE:(i + 1) * KEY_SIZE]
            if key in seen:
                shared.add(key)
            else:
                seen[key] = cached[i]
    return len(seen), sum(seen.values()), len(shared)


def make_plan(lib: Library, target: str | Sequence[str], identity: str, cache: CacheView,
              files: ConfigFiles | None = None, code=None, retake: bool = False) -> Plan:
    """Plan `target` (a procedure or workflow of `lib`, or several: one plan of their union).
    Raises ConfigErrors.

    `code(procedure)` gives the digests of an analysis's code ({file: digest});
    without it analyses are keyed by their data and parameters only.
    `retake`: plan the next take of every daq procedure's points (`--force-acquire`),
    instead of the take the cache records.
    """
    names = [target] if isinstance(target, str) else list(dict.fromkeys(target))
    if not names:
        raise RaffError("name at least one procedure or workflow", file=lib.main)
    kinds = []
    for name in names:
        node = lib.get(name)
        if node is None:
            raise RaffError(f"unknown procedure '{name}'; known: {', '.join(lib.names()) or 'none'}",
                            file=lib.main)
        kinds.append(node.kind)
    plan = Plan(", ".join(names), ", ".join(dict.fromkeys(kinds)), identity,
                targets=tuple(names), kinds=tuple(kinds))
    planner = _Planner(lib, plan, cache, files or ConfigFiles(), code, retake)
    for name in names:
        planner.add(name)
    return plan


def force(plan: Plan, ids: Iterable[str]) -> list[Node]:
    """`--force`: turn the cached dataset and analysis nodes among `ids` into nodes to build,
    with what depends on them; the nodes changed.

    A forced calibration makes the points that use it wait for it (its new output may
    change their keys), as an out-of-date calibration does in a plan.
    """
    wanted = set(ids)
    out = []
    for node in plan.nodes.values():  # dependency order: inputs come before their users
        if node.status != CACHED:
            continue
        deps = [plan.nodes[d] for d in node.depends_on]
        pending = next((d for d in deps if d.status != CACHED), None)
        if node.kind == "points":
            if pending is None:
                continue
            node.status = WAITING
            node.why = Reason(ReasonKind.WAITING, calibration=pending.name, cause=pending.why)
        elif pending is not None and pending.status == WAITING:
            node.status, node.why = WAITING, pending.why
        elif pending is not None or node.id in wanted:
            node.status, node.why = BUILD, Reason(ReasonKind.FORCED)
        else:
            continue
        out.append(node)
    return out


def take_record(name: str, identity: str) -> str:
    """The name under which the cache records the current take of procedure `name` on a board
    (`names/takes/<it>.json`, inputs {"procedure", "identity", "take"})."""
    return f"{name}@{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def current_take(cache: CacheView, name: str, identity: str) -> int:
    record = cache.last_build("takes", take_record(name, identity)) or {}
    take = (record.get("inputs") or {}).get("take", 0)
    return take if isinstance(take, int) and take >= 0 else 0


def take_keys(points: PointSet, take: int) -> bytes:
    """The keys of take `take` of `points` (KEY_SIZE bytes per point; empty while waiting)."""
    if points.base is None:
        return b""
    scan, proc = points.scan, points.procedure
    hasher = ScanHasher(_hashed_base(points.base, take), [(a.places, a.values) for a in scan.axes],
                        points.identity, proc.mode, scan.repeat, scan.explicit,
                        points.explicit_repeats if scan.explicit is not None else None)
    return b"".join(hasher.keys())


def _hashed_base(base: dict, take: int) -> dict:
    """What the keys of take `take` hash: the base config, and the take when it is not the first."""
    return {**base, "take": take} if take else base


class _Planner:
    def __init__(self, lib: Library, plan: Plan, cache: CacheView, files: ConfigFiles, code=None,
                 retake: bool = False):
        self.lib, self.plan, self.cache, self.files = lib, plan, cache, files
        self.code, self.retake = code, retake
        self.active: list[str] = []

    def add(self, name: str) -> Node | None:
        """Plan `name` and its dependencies; its final node."""
        for node_id in (f"analysis:{name}", f"dataset:{name}"):
            if node_id in self.plan.nodes:
                return self.plan.nodes[node_id]
        if name in self.active:
            raise RaffError("dependency cycle: " + " -> ".join(self.active + [name]),
                            file=self.lib.main)
        proc = self.lib.get(name)
        if proc is None:
            raise RaffError(f"unknown procedure '{name}'", file=self.lib.main)
        self.active.append(name)
        try:
            if isinstance(proc, Workflow):
                for member in proc.procedures:
                    self.add(member)
                return None
            if isinstance(proc, AnalysisProcedure):
                return self._analysis(proc)
            return self._daq(proc)
        finally:
            self.active.pop()

    def _daq(self, proc: DaqProcedure) -> Node:
        calibration, waiting, deps = None, None, []
        waiting_cause: Reason | None = None
        if proc.calibration:
            calib_node = self.add(proc.calibration)
            deps.append(calib_node.id)
            if calib_node.status == CACHED:
                calibration = self.cache.calibration(bytes.fromhex(calib_node.key))
                if calibration is None and not self.cache.has("analyses", bytes.fromhex(calib_node.key)):
                    calib_node = self._damaged(calib_node)  # checked, quarantined: never used, made again
            if calibration is None:
                waiting = proc.calibration
                waiting_cause = calib_node.why
        base = None
        if waiting is None:
            base = base_config(proc, self.files, calibration)
            if base is None:
                raise ConfigErrors(self.files.diagnostics)
        points = PointSet(proc, expand(proc), base, waiting_for=waiting,
                          identity=proc.identity or self.plan.identity)
        points.take = current_take(self.cache, proc.name, points.identity)
        if self.retake and points.retakeable:
            points.take += 1
        if base is not None:
            self._hash_points(points)
        self.plan.points[proc.name] = points
        points_node = self._points_node(points, deps, calib_node.key if proc.calibration else None,
                                        waiting_cause)
        self.plan.nodes[points_node.id] = points_node
        data_node = self._dataset_node(points, points_node)
        self.plan.nodes[data_node.id] = data_node
        return data_node

    def _damaged(self, node: Node) -> Node:
        """A cached node whose entry failed its check on reading (and left the cache): to build."""
        problem = getattr(self.cache, "damaged", {}).get(node.key, "it left the cache")
        node = replace(node, status=BUILD, why=Reason(ReasonKind.DAMAGED, problem=problem))
        self.plan.nodes[node.id] = node
        return node

    def _hash_points(self, points: PointSet) -> None:
        scan, proc = points.scan, points.procedure
        hasher = ScanHasher(_hashed_base(points.base, points.take), [(a.places, a.values) for a in scan.axes],
                            points.identity, proc.mode, scan.repeat, scan.explicit,
                            points.explicit_repeats if scan.explicit is not None else None)
        known = self.cache.keys("measurements")
        keys, cached = points.keys, points.cached
        for key in hasher.keys():
            keys += key
            cached.append(key in known)

    def _points_node(self, points: PointSet, deps: list[str], calibration: str | None,
                     waiting_cause: Reason | None = None) -> Node:
        name = points.procedure.name
        if points.base is None:
            why = Reason(ReasonKind.WAITING, calibration=points.waiting_for, cause=waiting_cause)
            return Node(f"points:{name}", "points", name, None, WAITING, why, deps)
        if not points.to_acquire:
            why = Reason(ReasonKind.ALL_CACHED, cached=points.total)
            return Node(f"points:{name}", "points", name, None, CACHED, why, deps)
        c = self._compare(points, calibration)
        kind = ReasonKind.CALIBRATION_CHANGED if c is not None and c.calibration_changed else ReasonKind.NEW_POINTS
        changes = tuple(c.changes) if c is not None else ()
        why = Reason(kind, changes, c.more if c else 0, new=points.to_acquire, cached=points.n_cached,
                     calibration=points.procedure.calibration if kind == ReasonKind.CALIBRATION_CHANGED else None)
        return Node(f"points:{name}", "points", name, None, BUILD, why, deps)

    def _compare(self, points: PointSet, calibration: str | None = None) -> Comparison | None:
        """How `points` differ from what the last build of their dataset resolved (None: no record)."""
        if points.comparison is not None:
            return points.comparison
        last = self.cache.last_build("datasets", points.procedure.name)
        if not last:
            return None
        inputs = last.get("inputs") or {}
        proc, scan = points.procedure, points.scan
        resolved = inputs.get("resolved")
        if isinstance(resolved, dict):
            c = compare_resolved(resolved, points.base, scan.axes, points.identity, proc.mode, scan.repeat,
                                 proc.data_columns, points.take)
        else:
            c = Comparison()
        calib_key = calibration
        if calib_key is None and proc.calibration:
            calib_key = self.plan.nodes.get(f"analysis:{proc.calibration}", None)
            calib_key = calib_key.key if calib_key is not None else None
        c.calibration_changed = bool(calib_key and inputs.get("calibration") not in (None, calib_key))
        points.comparison = c
        return c

    def _dataset_node(self, points: PointSet, points_node: Node) -> Node:
        name = points.procedure.name
        node_id = f"dataset:{name}"
        if points.base is None:
            return Node(node_id, "dataset", name, None, WAITING, points_node.why, [points_node.id])
        content = b""
        if not points.to_acquire:  # the measurements' manifests: damaged and re-acquired = new dataset
            content = self.cache.content("measurements", (points.key(i) for i in range(points.total)))
        key = dataset_key(points, content or b"")
        if content is None:
            status, why = BUILD, Reason(ReasonKind.MANIFEST_UNREADABLE)
        elif self.cache.has("datasets", key):
            status, why = CACHED, Reason(ReasonKind.CACHED)
        else:
            status, why = BUILD, self._dataset_reason(points)
        return Node(node_id, "dataset", name, key.hex(), status, why, [points_node.id])

    def _dataset_reason(self, points: PointSet) -> Reason:
        c = self._compare(points)
        if c is None:
            return Reason(ReasonKind.POINTS_CHANGED, new=points.to_acquire) if points.to_acquire \
                else Reason(ReasonKind.NOT_BUILT)
        if c.calibration_changed:
            return Reason(ReasonKind.CALIBRATION_CHANGED, tuple(c.changes), c.more,
                          calibration=points.procedure.calibration)
        if c.changes or points.to_acquire:
            return Reason(ReasonKind.POINTS_CHANGED, tuple(c.changes), c.more, new=points.to_acquire)
        if c.columns is not None:
            return Reason(ReasonKind.COLUMNS_CHANGED, (c.columns,))
        if c.old_values is None:  # a record of an older raffinerie, without what it resolved
            return Reason(ReasonKind.INPUTS_CHANGED)
        return Reason(ReasonKind.MEASUREMENTS_CHANGED)

    def _analysis(self, proc: AnalysisProcedure) -> Node:
        data_node = self.add(proc.daq)
        node_id = f"analysis:{proc.name}"
        if data_node.status == WAITING:
            node = Node(node_id, "analysis", proc.name, None, WAITING, data_node.why, [data_node.id])
        else:
            inputs = analysis_inputs(proc, data_node.key, self.code(proc) if self.code else None)
            key = analysis_key(inputs)
            if self.cache.has("analyses", key):
                status, why = CACHED, Reason(ReasonKind.CACHED)
            else:
                status = BUILD
                why = changed(self.cache.last_build("analyses", proc.name), inputs, data_node)
            node = Node(node_id, "analysis", proc.name, key.hex(), status, why, [data_node.id])
        self.plan.nodes[node_id] = node
        return node


def dataset_key(points: PointSet, content: bytes = b"") -> bytes:
    """Hash of the ordered point keys, the coordinates, the column selection and
    `content`, the digest of the measurements' manifests (what they hold)."""
    proc, scan = points.procedure, points.scan
    # v3: the stored layout (data.zarr, by how each column varies); older datasets are made again
    h = hashlib.sha256(b"raffinerie-dataset-v3\0" + content)
    for axis in scan.axes:
        values = axis.values
        spec = (["range", values.start, values.stop, values.step] if isinstance(values, range)
                else ["values", list(values)])
        h.update(key_bytes(axis.name) + digest(spec))
    h.update(b"%d\0" % scan.repeat + digest(proc.data_columns) + digest(scan.explicit))
    h.update(points.keys)
    return h.digest()


def analysis_inputs(proc: AnalysisProcedure, dataset: str, code: dict | None = None) -> dict:
    """What an analysis key hashes; kept in the build record to explain reruns.

    `parameter_values` (the parameters themselves, for naming what changed)
    is recorded but not hashed: `parameters` (their digest) is.
    """
    return {"dataset": dataset, "module": proc.module,
            "parameters": digest(proc.parameters).hex(), "code": code or {},
            "parameter_values": _json_safe(proc.parameters)}


def analysis_key(inputs: dict) -> bytes:
    hashed = {k: v for k, v in inputs.items() if k != "parameter_values"}
    return hashlib.sha256(b"raffinerie-analysis-v1\0" + digest(hashed)).digest()


def build_record(points: PointSet, node: Node) -> dict:
    """What the build of a dataset keeps beside its calibration: what its scan resolved
    (base config compressed, axes; about 5 kB) and why it was built."""
    proc, scan = points.procedure, points.scan
    return {"resolved": resolved_record(points.base, scan.axes, points.identity, proc.mode, scan.repeat,
                                        proc.data_columns, points.take),
            "reason": node.why.as_dict()}


def _json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _hashable(value: Any) -> Any:
    import json

    return json.dumps(value, separators=(",", ":"), default=str) if isinstance(value, (list, dict)) else value


def changed(last: dict | None, inputs: dict, data_node: Node | None = None) -> Reason:
    """Why an analysis must be rebuilt, from the inputs of its last build: the first kind
    of input that differs (dataset, module, parameters, code), with what differs in it."""
    if not last:
        return Reason(ReasonKind.NOT_BUILT)
    before = last.get("inputs", {})
    if before.get("dataset") != inputs.get("dataset"):
        upstream = data_node.why if data_node is not None and data_node.status == BUILD else None
        if upstream is not None and upstream.changes:
            return Reason(ReasonKind.DATASET_CHANGED, upstream.changes, upstream.more)
        return Reason(ReasonKind.DATASET_CHANGED)
    if before.get("module") != inputs.get("module"):
        return Reason(ReasonKind.MODULE_CHANGED, (Change("module", before.get("module"), inputs.get("module")),))
    if before.get("parameters") != inputs.get("parameters"):
        if "parameter_values" in before:
            changes, more = diff_values(before["parameter_values"], inputs.get("parameter_values") or {})
            return Reason(ReasonKind.PARAMETERS_CHANGED, tuple(changes), more)
        return Reason(ReasonKind.PARAMETERS_CHANGED)
    old_code, new_code = before.get("code", {}), inputs.get("code", {})
    files = sorted(f for f in set(old_code) | set(new_code) if old_code.get(f) != new_code.get(f))
    if files:
        return Reason(ReasonKind.CODE_CHANGED, files=tuple(files))
    return Reason(ReasonKind.INPUTS_CHANGED)
