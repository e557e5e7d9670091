"""The planner: every node a build would touch, with its key, status and reason.

Pure: it reads the library and what the cache holds (through a `CacheView`)
and returns plain data. `raff plan` prints it; `raff build` executes it.

Nodes: `points:NAME` (the measurements of a daq procedure), `dataset:NAME`
(its table) and `analysis:NAME`. A daq procedure with a calibration depends
on that analysis; until it is built, the keys of its points are unknown and
its points wait.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from raffinerie.config.expand import Scan, expand
from raffinerie.config.keys import ScanHasher, digest, key_bytes
from raffinerie.config.library import AnalysisProcedure, DaqProcedure, Library, Workflow
from raffinerie.config.resolve import ConfigFiles, base_config, server_setting
from raffinerie.errors import ConfigErrors, RaffError

CACHED, BUILD, WAITING = "cached", "build", "waiting"
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
    status: str        # cached | build | waiting
    reason: str
    depends_on: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "name": self.name, "key": self.key,
                "status": self.status, "reason": self.reason, "depends_on": self.depends_on}


@dataclass
class Plan:
    target: str
    kind: str
    identity: str
    nodes: dict[str, Node] = field(default_factory=dict)     # dependency order
    points: dict[str, PointSet] = field(default_factory=dict)

    @property
    def todo(self) -> bool:
        return any(n.status != CACHED for n in self.nodes.values())

    def summary(self) -> dict:
        sets = self.points.values()
        return {
            "total": sum(p.total for p in sets),
            "cached": sum(p.n_cached for p in sets),
            "to_acquire": sum(p.to_acquire for p in sets),
            "waiting": sum(p.total for p in sets if p.base is None),
            "nodes_to_build": sum(n.status == BUILD for n in self.nodes.values()),
        }


def make_plan(lib: Library, target: str, identity: str, cache: CacheView,
              files: ConfigFiles | None = None, code=None) -> Plan:
    """Plan `target` (a procedure or workflow) of `lib`. Raises ConfigErrors.

    `code(procedure)` gives the digests of an analysis's code ({file: digest});
    without it analyses are keyed by their data and parameters only.
    """
    node = lib.get(target)
    if node is None:
        raise RaffError(f"unknown procedure '{target}'; known: {', '.join(lib.names()) or 'none'}",
                        file=lib.main)
    plan = Plan(target, node.kind, identity)
    _Planner(lib, plan, cache, files or ConfigFiles(), code).add(target)
    return plan


class _Planner:
    def __init__(self, lib: Library, plan: Plan, cache: CacheView, files: ConfigFiles, code=None):
        self.lib, self.plan, self.cache, self.files = lib, plan, cache, files
        self.code = code
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
        if proc.calibration:
            calib_node = self.add(proc.calibration)
            deps.append(calib_node.id)
            if calib_node.status == CACHED:
                calibration = self.cache.calibration(bytes.fromhex(calib_node.key))
            if calibration is None:
                waiting = proc.calibration
                if calib_node.reason not in ("not built yet", "cached"):
                    waiting += f" ({calib_node.reason})"
        base = None
        if waiting is None:
            base = base_config(proc, self.files, calibration)
            if base is None:
                raise ConfigErrors(self.files.diagnostics)
        points = PointSet(proc, expand(proc), base, waiting_for=waiting,
                          identity=proc.identity or self.plan.identity)
        if base is not None:
            self._hash_points(points)
        self.plan.points[proc.name] = points
        points_node = self._points_node(points, deps, calib_node.key if proc.calibration else None)
        self.plan.nodes[points_node.id] = points_node
        data_node = self._dataset_node(points, points_node)
        self.plan.nodes[data_node.id] = data_node
        return data_node

    def _hash_points(self, points: PointSet) -> None:
        scan, proc = points.scan, points.procedure
        hasher = ScanHasher(points.base, [(a.places, a.values) for a in scan.axes],
                            points.identity, proc.mode, scan.repeat, scan.explicit,
                            points.explicit_repeats if scan.explicit is not None else None)
        known = self.cache.keys("measurements")
        keys, cached = points.keys, points.cached
        for key in hasher.keys():
            keys += key
            cached.append(key in known)

    def _points_node(self, points: PointSet, deps: list[str], calibration: str | None) -> Node:
        name = points.procedure.name
        if points.base is None:
            status, reason = WAITING, (f"calibration {points.waiting_for} not built yet"
                                       if "(" not in points.waiting_for
                                       else f"waiting for calibration {points.waiting_for}")
        elif points.to_acquire:
            status = BUILD
            reason = (f"{points.to_acquire} new point{'s' * (points.to_acquire != 1)}, "
                      f"{points.n_cached} cached")
            last = self.cache.last_build("datasets", name)
            if calibration and last and last.get("inputs", {}).get("calibration") not in (None, calibration):
                reason = f"calibration changed: {reason}"
        else:
            status, reason = CACHED, f"all {points.total} points cached"
        return Node(f"points:{name}", "points", name, None, status, reason, deps)

    def _dataset_node(self, points: PointSet, points_node: Node) -> Node:
        name = points.procedure.name
        node_id = f"dataset:{name}"
        if points.base is None:
            return Node(node_id, "dataset", name, None, WAITING, points_node.reason, [points_node.id])
        content = b""
        if not points.to_acquire:  # the measurements' manifests: damaged and re-acquired = new dataset
            content = self.cache.content("measurements", (points.key(i) for i in range(points.total)))
        key = dataset_key(points, content or b"")
        if content is None:
            status, reason = BUILD, "a measurement's manifest is unreadable"
        elif self.cache.has("datasets", key):
            status, reason = CACHED, "cached"
        elif points.to_acquire:
            status, reason = BUILD, "new points"
        else:
            status, reason = BUILD, _changed(self.cache.last_build("datasets", name), {})
        return Node(node_id, "dataset", name, key.hex(), status, reason, [points_node.id])

    def _analysis(self, proc: AnalysisProcedure) -> Node:
        data_node = self.add(proc.daq)
        node_id = f"analysis:{proc.name}"
        if data_node.status == WAITING:
            node = Node(node_id, "analysis", proc.name, None, WAITING, data_node.reason, [data_node.id])
        else:
            inputs = analysis_inputs(proc, data_node.key, self.code(proc) if self.code else None)
            key = analysis_key(inputs)
            if self.cache.has("analyses", key):
                status, reason = CACHED, "cached"
            else:
                status = BUILD
                reason = _changed(self.cache.last_build("analyses", proc.name), inputs)
            node = Node(node_id, "analysis", proc.name, key.hex(), status, reason, [data_node.id])
        self.plan.nodes[node_id] = node
        return node


def dataset_key(points: PointSet, content: bytes = b"") -> bytes:
    """Hash of the ordered point keys, the coordinates, the column selection and
    `content`, the digest of the measurements' manifests (what they hold)."""
    proc, scan = points.procedure, points.scan
    h = hashlib.sha256(b"raffinerie-dataset-v2\0" + content)
    for axis in scan.axes:
        values = axis.values
        spec = (["range", values.start, values.stop, values.step] if isinstance(values, range)
                else ["values", list(values)])
        h.update(key_bytes(axis.name) + digest(spec))
    h.update(b"%d\0" % scan.repeat + digest(proc.data_columns) + digest(scan.explicit))
    h.update(points.keys)
    return h.digest()


def analysis_inputs(proc: AnalysisProcedure, dataset: str, code: dict | None = None) -> dict:
    """What an analysis key hashes; kept in the build record to explain reruns."""
    return {"dataset": dataset, "module": proc.module,
            "parameters": digest(proc.parameters).hex(), "code": code or {}}


def analysis_key(inputs: dict) -> bytes:
    return hashlib.sha256(b"raffinerie-analysis-v1\0" + digest(inputs)).digest()


def _changed(last: dict | None, inputs: dict) -> str:
    """Why a node must be rebuilt, from the inputs of its last build."""
    if not last:
        return "not built yet"
    before = last.get("inputs", {})
    if before.get("dataset") != inputs.get("dataset"):
        return "input dataset changed"
    if before.get("parameters") != inputs.get("parameters") or before.get("module") != inputs.get("module"):
        return "parameters changed"
    old_code, new_code = before.get("code", {}), inputs.get("code", {})
    changed = sorted(f for f in set(old_code) | set(new_code) if old_code.get(f) != new_code.get(f))
    if changed:
        return f"code changed ({', '.join(changed)})"
    return "inputs changed"
