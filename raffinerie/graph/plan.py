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

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from raffinerie.config.expand import expand, settle
from raffinerie.config.library import AnalysisProcedure, DaqProcedure, Library, Workflow
from raffinerie.config.resolve import ConfigFiles, base_config
from raffinerie.errors import ConfigErrors, RaffError
from raffinerie.graph.keying import CacheView, analysis_inputs, analysis_key, current_take, dataset_key
from raffinerie.graph.nodes import BUILD, CACHED, WAITING, Node, NodeKind, downstream, node_id
from raffinerie.graph.points import KEY_SIZE, PointSet, hash_points
from raffinerie.graph.reasons import (Change, Comparison, Reason, ReasonKind, calibrations_changed, compare_resolved,
                                     diff_values)


@dataclass
class Plan:
    target: str        # what was asked for: a name, or several names joined by ", "
    kind: str          # its kind; for several names, theirs joined by ", "
    identity: str
    nodes: dict[str, Node] = field(default_factory=dict)     # dependency order
    points: dict[str, PointSet] = field(default_factory=dict)
    targets: tuple[str, ...] = ()    # the names asked for, in order
    kinds: tuple[str, ...] = ()      # their kinds
    points_hashed: int = 0           # points whose keys this plan computed (not kept from the one before)

    @property
    def todo(self) -> bool:
        return any(n.status != CACHED for n in self.nodes.values())

    def final_node(self, name: str) -> Node | None:
        """The node that stands for target `name` (None for a workflow)."""
        return self.nodes.get(node_id(NodeKind.ANALYSIS, name)) or self.nodes.get(node_id(NodeKind.DATASET, name))

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
            raise RaffError(lib.unknown([name]), file=lib.main)
        kinds.append(node.kind)
    plan = Plan(", ".join(names), ", ".join(dict.fromkeys(kinds)), identity,
                targets=tuple(names), kinds=tuple(kinds))
    planner = _Planner(lib, plan, cache, files or ConfigFiles(), code, retake)
    for name in names:
        planner.add(name)
    return plan


def replan(lib: Library, plan: Plan, finished: Node, cache: CacheView, files: ConfigFiles | None = None,
           code=None) -> Plan:
    """The plan after `finished` was built, planning again only what its output may change: the nodes
    downstream of it (the keys of a calibration's points; a dataset's key, which hashes what its
    measurements hold, once they are acquired). The acquired points keep their keys: they are not
    hashed again, only looked up. Nodes keep their order."""
    stale = downstream(plan.nodes, finished.id)
    kept = {}
    if finished.kind is NodeKind.POINTS:
        stale.add(finished.id)
        kept[finished.name] = plan.points[finished.name]
    new = Plan(plan.target, plan.kind, plan.identity, targets=plan.targets, kinds=plan.kinds)
    new.nodes = {i: n for i, n in plan.nodes.items() if i not in stale}
    new.points = {name: p for name, p in plan.points.items() if node_id(NodeKind.POINTS, name) not in stale}
    planner = _Planner(lib, new, cache, files or ConfigFiles(), code, kept=kept)
    for name in plan.targets:
        planner.add(name)
    order = list(plan.nodes) + [i for i in new.nodes if i not in plan.nodes]
    new.nodes = {i: new.nodes[i] for i in order if i in new.nodes}
    return new


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
        if node.kind is NodeKind.POINTS:
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


class _Planner:
    def __init__(self, lib: Library, plan: Plan, cache: CacheView, files: ConfigFiles, code=None,
                 retake: bool = False, kept: dict[str, PointSet] | None = None):
        self.lib, self.plan, self.cache, self.files = lib, plan, cache, files
        self.code, self.retake = code, retake
        self.kept = kept or {}   # procedure -> its point set of the plan before, whose keys still hold
        self.active: list[str] = []

    def add(self, name: str) -> Node | None:
        """Plan `name` and its dependencies; its final node."""
        for kind in (NodeKind.ANALYSIS, NodeKind.DATASET):
            if node_id(kind, name) in self.plan.nodes:
                return self.plan.nodes[node_id(kind, name)]
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
        points_id = node_id(NodeKind.POINTS, proc.name)
        if points_id in self.plan.nodes:  # kept from the plan before: only its dataset is planned again
            points_node = self.plan.nodes[points_id]
            return self._add(self._dataset_node(self.plan.points[proc.name], points_node))
        calib_nodes, calibrations, pending = [], [], None
        for name in proc.calibrations:
            node, calibration = self._calibration(name)
            calib_nodes.append(node)
            calibrations.append(calibration)
            if calibration is None and pending is None:
                pending = node   # the first not ready: the one a plan says it waits for
        points = self._kept_keys(proc) or self._points(proc, calibrations, pending)
        self.plan.points[proc.name] = points
        deps = [n.id for n in calib_nodes]
        keys = {n.name: n.key for n in calib_nodes}
        points_node = self._add(self._points_node(points, deps, keys, pending.why if pending else None))
        return self._add(self._dataset_node(points, points_node))

    def _calibration(self, name: str) -> tuple[Node, dict | None]:
        """The node of calibration `name` and its output, if it is built and intact."""
        node = self.add(name)
        if node.status != CACHED:
            return node, None
        calibration = self.cache.calibration(bytes.fromhex(node.key))
        if calibration is None and not self.cache.has("analyses", bytes.fromhex(node.key)):
            node = self._damaged(node)  # checked, quarantined: never used, made again
        return node, calibration

    def _add(self, node: Node) -> Node:
        self.plan.nodes[node.id] = node
        return node

    def _points(self, proc: DaqProcedure, calibrations: list[dict | None], pending: Node | None) -> PointSet:
        """The points of `proc`, their keys hashed (unless they wait for a calibration, `pending`)."""
        base = None
        if pending is None:
            base = base_config(proc, self.files, calibrations)
            if base is None:
                raise ConfigErrors(self.files.diagnostics)
        scan = expand(proc)
        if base is not None:
            scan, missing = settle(scan, base)
            if missing:
                raise ConfigErrors([axis.origin.at("template").error(
                    f"the template sets {'.'.join(map(str, place[1:] if place[0] == 'target' else place))} "
                    "for some of its values only, and the configuration has no value there for the others")
                    for axis, place in missing[:5]])
        points = PointSet(proc, scan, base, waiting_for=pending.name if pending else None,
                          identity=proc.identity or self.plan.identity)
        points.take = current_take(self.cache, proc.name, points.identity)
        if self.retake and points.retakeable:
            points.take += 1
        if base is not None:
            if proc.search is not None:   # its points so far and the next round, from the cache
                from raffinerie.graph.searchplan import plan_search

                plan_search(points, scan, self.cache.keys("measurements"), self.cache.summary)
            hash_points(points, self.cache.keys("measurements"))
            self.plan.points_hashed += points.total
        return points

    def _kept_keys(self, proc: DaqProcedure) -> PointSet | None:
        """The points of `proc` in the plan before, if their keys still hold (they were just acquired):
        only which of them are cached is looked up again, nothing is hashed."""
        before = self.kept.get(proc.name)
        if before is None or before.base is None:
            return None
        known = self.cache.keys("measurements")
        cached = bytearray(key in known for key in before.all_keys())
        return replace(before, cached=cached)

    def _damaged(self, node: Node) -> Node:
        """A cached node whose entry failed its check on reading (and left the cache): to build."""
        problem = getattr(self.cache, "damaged", {}).get(node.key, "it left the cache")
        return self._add(replace(node, status=BUILD, why=Reason(ReasonKind.DAMAGED, problem=problem)))

    def _points_node(self, points: PointSet, deps: list[str], calibrations: dict[str, str | None],
                     waiting_cause: Reason | None = None) -> Node:
        name = points.procedure.name
        points_id = node_id(NodeKind.POINTS, name)
        if points.base is None:
            why = Reason(ReasonKind.WAITING, calibration=points.waiting_for, cause=waiting_cause)
            return Node(points_id, NodeKind.POINTS, name, None, WAITING, why, deps)
        if not points.to_acquire:
            why = Reason(ReasonKind.ALL_CACHED, cached=points.total)
            return Node(points_id, NodeKind.POINTS, name, None, CACHED, why, deps)
        c = self._compare(points, calibrations)
        changed = c.calibrations_changed if c is not None else ()
        kind = ReasonKind.CALIBRATION_CHANGED if changed else ReasonKind.NEW_POINTS
        changes = tuple(c.changes) if c is not None else ()
        why = Reason(kind, changes, c.more if c else 0, new=points.to_acquire, cached=points.n_cached,
                     calibration=", ".join(changed) or None)
        return Node(points_id, NodeKind.POINTS, name, None, BUILD, why, deps)

    def _compare(self, points: PointSet, calibrations: dict[str, str | None] | None = None) -> Comparison | None:
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
        if calibrations is None:
            calibrations = {name: getattr(self.plan.nodes.get(node_id(NodeKind.ANALYSIS, name)), "key", None)
                            for name in proc.calibrations}
        c.calibrations_changed = calibrations_changed(inputs, calibrations)
        points.comparison = c
        return c

    def _dataset_node(self, points: PointSet, points_node: Node) -> Node:
        name = points.procedure.name
        data_id = node_id(NodeKind.DATASET, name)
        if points.base is None:
            return Node(data_id, NodeKind.DATASET, name, None, WAITING, points_node.why, [points_node.id])
        content = b""
        if not points.to_acquire:  # the measurements' manifests: damaged and re-acquired = new dataset
            content = self.cache.content(NodeKind.POINTS.store_kind, points.all_keys())
        key = dataset_key(points, content or b"")
        if content is None:
            status, why = BUILD, Reason(ReasonKind.MANIFEST_UNREADABLE)
        elif self.cache.has(NodeKind.DATASET.store_kind, key):
            status, why = CACHED, Reason(ReasonKind.CACHED)
        else:
            status, why = BUILD, self._dataset_reason(points)
        return Node(data_id, NodeKind.DATASET, name, key.hex(), status, why, [points_node.id])

    def _dataset_reason(self, points: PointSet) -> Reason:
        c = self._compare(points)
        if c is None:
            return Reason(ReasonKind.POINTS_CHANGED, new=points.to_acquire) if points.to_acquire \
                else Reason(ReasonKind.NOT_BUILT)
        if c.calibrations_changed:
            return Reason(ReasonKind.CALIBRATION_CHANGED, tuple(c.changes), c.more,
                          calibration=", ".join(c.calibrations_changed))
        if c.changes or points.to_acquire:
            return Reason(ReasonKind.POINTS_CHANGED, tuple(c.changes), c.more, new=points.to_acquire)
        if c.columns is not None:
            return Reason(ReasonKind.COLUMNS_CHANGED, (c.columns,))
        if c.old_values is None:  # a record of an older raffinerie, without what it resolved
            return Reason(ReasonKind.INPUTS_CHANGED)
        return Reason(ReasonKind.MEASUREMENTS_CHANGED)

    def _analysis(self, proc: AnalysisProcedure) -> Node:
        data_node = self.add(proc.daq)
        used = [self.add(name) for name in proc.uses]
        deps = [data_node.id] + [u.id for u in used]   # the dataset first: runner and executor read it there
        analysis_id = node_id(NodeKind.ANALYSIS, proc.name)
        waiting = next((n for n in [data_node, *used] if n.status == WAITING), None)
        if waiting is not None:
            return self._add(Node(analysis_id, NodeKind.ANALYSIS, proc.name, None, WAITING, waiting.why, deps))
        inputs = analysis_inputs(proc, data_node.key, self.code(proc) if self.code else None,
                                 {u.name: u.key for u in used})
        key = analysis_key(inputs)
        if self.cache.has("analyses", key):
            status, why = CACHED, Reason(ReasonKind.CACHED)
        else:
            status = BUILD
            why = changed(self.cache.last_build("analyses", proc.name), inputs, data_node)
        return self._add(Node(analysis_id, NodeKind.ANALYSIS, proc.name, key.hex(), status, why, deps))


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
    old_uses, new_uses = before.get("uses", {}), inputs.get("uses", {})
    used = sorted(n for n in set(old_uses) | set(new_uses) if old_uses.get(n) != new_uses.get(n))
    if used:
        return Reason(ReasonKind.USED_CHANGED, used=tuple(used))
    return Reason(ReasonKind.INPUTS_CHANGED)
