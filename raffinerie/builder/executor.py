"""`raff build`: bring a procedure up to date, doing only what the plan says.

The executor plans once, then builds what is ready until nothing is left:
acquisitions first (one backend session, points in plan order), then
datasets, then analyses. Readiness is a countdown (`raffinerie.graph.countdown`):
a finished node releases the nodes waiting on it. Only a node whose output
changes keys downstream has that part planned again: a calibration (the keys
of the points that waited for it) and acquired points (what their
measurements hold keys their dataset; the points are not hashed again).

Each node kind has its handler in one table (`Handler`, as Bluesky's
RunEngine dispatches its commands from a registry): a new kind is a new row.

Several targets are one plan (their union): one backend session acquires the
points of all of them, and a point they share is acquired once.

Options (`BuildOptions`): `force` builds the cached datasets and analyses of
the targets again, each once per build; `force_acquire` starts a new take of
their daq procedures' points (new keys; the earlier takes stay in the cache);
`keep_going` lets a failing dataset or analysis stop only what depends on it,
and the report lists the failures (`BuildReport.failed`).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Callable, Sequence

from raffinerie.builder.acquire import DEFAULT_MAX_CORRUPT, Acquisition, Stop, Timer, acquire_points
from raffinerie.builder.backend import Backend
from raffinerie.builder.cluster import assemble as assemble_on_cluster
from raffinerie.builder.datasets import BOARD, dataset_meta, write_dataset
from raffinerie.builder.interrupt import Abort, Interrupted, aborted, kept_points
from raffinerie.builder.outputs import provenance, write_provenance
from raffinerie.config.library import Library
from raffinerie.config.network import DEFAULT_SEED, Network, identity
from raffinerie.config.resolve import ConfigFiles
from raffinerie.errors import RaffError
from raffinerie.graph.countdown import Countdown
from raffinerie.graph.keying import build_record, take_record
from raffinerie.graph.nodes import CACHED, Node, NodeKind, is_calibration
from raffinerie.graph.plan import Plan, force, make_plan, replan
from raffinerie.graph.searchplan import advance, describe, flagged_lines
from raffinerie.records import calibration_record
from raffinerie.store.entries import DamagedEntry
from raffinerie.store.store import Store
from raffinerie.words import count

__all__ = ["Abort", "BuildOptions", "BuildReport", "Builder", "Interrupted", "aborted", "cores_bound"]

if TYPE_CHECKING:  # the runner lives in raffinerie.analysis, loaded when a library has analyses
    from raffinerie.analysis.runner import Submitted


@dataclass(frozen=True)
class BuildOptions:
    force: bool = False          # build the targets' cached datasets and analyses again
    force_acquire: bool = False  # acquire a new take of the targets' points (the old ones are kept)
    keep_going: bool = False     # a failing dataset or analysis stops only what depends on it


@dataclass(frozen=True)
class Failure:
    """A node that failed in a build that kept going (-k)."""

    node: str        # its id, e.g. analysis:gain
    kind: str
    name: str
    message: str


@dataclass
class BuildReport:
    acquired: int = 0
    corrupt_halves: int = 0
    datasets: int = 0
    analyses: int = 0
    seconds: float = 0.0
    acquiring: float = 0.0   # wall seconds spent acquiring points (the pipeline's throughput)
    acquiring_cpu: float = 0.0   # CPU seconds of this process meanwhile (all its threads)
    emulator_cpu: float = 0.0    # CPU seconds of the embedded emulator meanwhile (0 on hardware)
    timer: Timer = field(default_factory=Timer)
    retakes: dict[str, int] = field(default_factory=dict)   # procedure -> its new take (--force-acquire)
    failed: list[Failure] = field(default_factory=list)     # -k: what failed, in order
    skipped: list[str] = field(default_factory=list)        # -k: node ids not built because an input failed
    plans: int = 0           # plans made, whole or in part (one, and one more per calibration built)
    points_hashed: int = 0   # points whose keys those plans computed (a point once, unless recalibrated)

    @property
    def did_nothing(self) -> bool:
        return not (self.acquired or self.datasets or self.analyses or self.failed)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


class Outcome(Enum):
    """What became of a node the executor built."""

    BUILT = "built"
    DAMAGED = "damaged"    # an input failed its check and was quarantined: the cache changed
    FAILED = "failed"      # -k: recorded; what depends on it is left out


@dataclass(frozen=True)
class Handler:
    """How the executor builds the nodes of one kind."""

    build: Callable[[Plan, Node], None]          # build it here, or (in_worker) submit it
    in_worker: bool                              # runs in an analysis worker, -w at a time
    changes_keys: Callable[[Plan, Node], bool]   # its output changes keys downstream: plan them again
    keep_going: bool                             # -k: its failure stops only what depends on it


def _always(plan: Plan, node: Node) -> bool:
    return True


def _never(plan: Plan, node: Node) -> bool:
    return False


def _calibrates(plan: Plan, node: Node) -> bool:
    return is_calibration(plan.nodes, node)


class Builder:
    def __init__(self, lib: Library, files: ConfigFiles, store: Store, progress,
                 network: Network | None = None, seed: int = DEFAULT_SEED, runner=None,
                 readback: bool = False, max_corrupt: float = DEFAULT_MAX_CORRUPT,
                 pipelined: bool = True, options: BuildOptions = BuildOptions()):
        self.lib, self.files, self.store, self.progress = lib, files, store, progress
        self.options = options
        self.identity = identity(network, seed)
        self.backend = Backend(network, seed, store, progress, readback)
        self.runner = runner  # runs analyses (raffinerie.analysis), None: none in this library
        self.stop = Stop()
        self.report = BuildReport()
        self.damaged: set[str] = set()  # keys quarantined during this build
        self.forced: set[str] = set()   # --force: node ids still to build again in this build
        self.final_plan: Plan | None = None  # the plan the build ended with (all cached when done)
        self.failures: dict[str, Failure] = {}  # -k: node id -> its failure
        self.acquisition = Acquisition(store, self.backend, progress, self.stop, self.report.timer,
                                       max_corrupt, pipelined)
        self.handlers = {NodeKind.POINTS: Handler(self._acquire, False, _always, False),
                         NodeKind.DATASET: Handler(self._dataset, False, _never, True),
                         NodeKind.ANALYSIS: Handler(self._submit, True, _calibrates, True)}
        self.running: dict[str, Submitted] = {}   # analyses in their workers, by node id
        self.said: dict = {}  # node id -> the Reason the build's first plan gave for building it

    @property
    def _code(self):
        return self.runner.code if self.runner is not None else None

    def plan(self, name: str | Sequence[str], retake: bool = False) -> Plan:
        """A whole plan of `name`."""
        return self._counted(make_plan(self.lib, name, self.identity, self.store.index(), self.files,
                                       self._code, retake))

    def _replan(self, plan: Plan, finished: Node) -> Plan:
        """The plan after `finished` was built: what is downstream of it planned again."""
        return self._counted(replan(self.lib, plan, finished, self.store.index(), self.files, self._code))

    def _counted(self, plan: Plan) -> Plan:
        self.report.plans += 1
        self.report.points_hashed += plan.points_hashed
        if self.forced:
            force(plan, self.forced)
        return plan

    def build(self, name: str | Sequence[str], signals: bool = True) -> BuildReport:
        """Bring `name` (a procedure or workflow, or several) up to date. `signals`: handle
        Ctrl-C here (only the main thread can; a build of several boards handles it once for
        all, see `raffinerie.builder.boards`)."""
        names = [name] if isinstance(name, str) else list(name)
        t0 = time.monotonic()
        previous = ({sig: signal.signal(sig, self._interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
                    if signals else {})
        try:
            with self.store.cache_lock(exclusive=False, waiting=self._waiting_for_gc), self.backend:
                self.store.clean_tmp()
                self._start(names)
                plan = self._loop(names)
            self.final_plan = plan
            if plan is not None and self.runner is not None:
                for node in plan.nodes.values():  # the latest outputs, in one place, saying whose
                    if node.kind is NodeKind.ANALYSIS and node.status == CACHED:
                        built = self.store.meta("analyses", node.key).get("time")
                        write_provenance(self.runner.materialise(node),
                                         provenance(plan, node, self.identity, built), built)
        except KeyboardInterrupt as exc:  # a second Ctrl-C: stop the analyses in flight too
            if self.runner is not None:
                self.runner.kill()
            if not signals:
                raise  # a build of several boards: `build_boards` says it, once
            raise aborted(names, self.report.acquired, exc) from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.acquisition.close()
            if self.runner is not None:
                self.runner.close()
            self.report.seconds = time.monotonic() - t0
        if self.stop:
            raise Interrupted("interrupted", kept_points(self.report.acquired), names, self.stop.signal)
        return self.report

    def _start(self, names: list[str]) -> None:
        """--force: what to build again; --force-acquire: a new take of every daq procedure's points,
        recorded before anything is acquired (an interrupted retake is finished by the next build)."""
        if self.options.force:
            plan = self.plan(names)
            self.forced = {n.id for n in plan.nodes.values() if n.kind.keyed}
        if not self.options.force_acquire:
            return
        plan = self.plan(names, retake=True)
        for points in plan.points.values():
            proc = points.procedure
            if not points.retakeable:
                self.progress.info(f"{proc.name}: imported runs cannot be acquired again; "
                                   "--force-acquire leaves them as they are")
                continue
            self.store.record("takes", take_record(proc.name, points.identity), str(points.take),
                              {"procedure": proc.name, "identity": points.identity, "take": points.take})
            self.store.journal(event="take", procedure=proc.name, identity=points.identity, take=points.take)
            self.report.retakes[proc.name] = points.take
            self.progress.info(f"{proc.name}: acquiring its {count(points.total, 'point')} "
                               f"again as take {points.take}; the earlier takes stay in the cache")

    def _waiting_for_gc(self) -> None:
        self.progress.info(f"waiting for `raff cache gc` or `verify` on {self.store.root} to finish ...")

    def _loop(self, names: list[str]) -> Plan | None:
        """Plan once, build what is ready; analyses run in worker processes, -w at a time."""
        plan = self.plan(names)
        # why each node is built, as this plan (the one `raff plan` shows) says it: a replan after the
        # points were acquired would say `not built yet` of a dataset whose points were new
        self.said = {n.id: n.why for n in plan.nodes.values() if n.status != CACHED}
        countdown = Countdown(plan.nodes)
        while not self.stop:
            blocked = _blocked(plan, self.failures)
            ready = [n for n in countdown.ready() if n.id not in self.running and n.id not in blocked]
            in_worker = [n for n in ready if self.handlers[n.kind].in_worker]
            free = (self.runner.workers - len(self.running)) if self.runner is not None else 0
            for node in in_worker[:max(free, 0)]:
                self.handlers[node.kind].build(plan, node)
            here = [n for n in ready if not self.handlers[n.kind].in_worker]
            if here:
                plan = self._advance(plan, names, countdown, here[0], self._execute_kept(plan, here[0]))
            elif self.running:
                for node, outcome in self._collect():
                    plan = self._advance(plan, names, countdown, node, outcome)
            elif in_worker and self.runner is None:
                raise RaffError(f"analysis '{in_worker[0].name}' cannot run: no analysis runner")
            else:
                self._check_done(plan, blocked)
                return plan
        while self.running:  # Ctrl-C: the analyses in flight finish (a second Ctrl-C kills them)
            self._collect()
        return plan

    def _advance(self, plan: Plan, names: list[str], countdown: Countdown, node: Node, outcome: Outcome) -> Plan:
        """The plan after `node` was built: its users released, or what its output changes planned again."""
        if outcome is Outcome.FAILED:
            return plan
        if outcome is Outcome.DAMAGED:  # the cache lost an entry: plan it all again
            plan = self.plan(names)
        elif self.handlers[node.kind].changes_keys(plan, node):
            node.status = CACHED
            plan = self._replan(plan, node)
        else:
            countdown.release(node)
            return plan
        countdown.reset(plan.nodes)
        return plan

    def _execute_kept(self, plan: Plan, node: Node) -> Outcome:
        """Build one node; a damaged input is quarantined and made again by the next plan.
        With -k, a node whose kind allows it that fails is recorded and the build goes on without it."""
        try:
            self.handlers[node.kind].build(plan, node)
        except DamagedEntry as exc:
            if exc.key in self.damaged:
                raise RaffError(f"{exc}; it was damaged again right after it was made: "
                                "check the disk under the cache") from None
            self.damaged.add(exc.key)
            self.progress.info(f"warning: {exc}")
            return Outcome.DAMAGED
        except RaffError as exc:
            if not (self.options.keep_going and self.handlers[node.kind].keep_going) or isinstance(exc, Interrupted):
                raise
            self._failed(node, exc)
            return Outcome.FAILED
        return Outcome.BUILT

    def _failed(self, node: Node, exc: RaffError) -> None:
        """-k: remember the failure; what depends on the node is left out of this build."""
        self.failures[node.id] = Failure(node.id, node.kind, node.name, str(exc))
        self.report.failed.append(self.failures[node.id])
        self.forced.discard(node.id)
        self.progress.info(f"{node.name}: {node.kind} failed: {exc}")

    def _check_done(self, plan: Plan, blocked: set[str]) -> None:
        """Everything is up to date, or (-k) what is not failed or depends on a failure."""
        pending = [n for n in plan.nodes.values() if n.status != CACHED and n.id not in blocked]
        if pending:
            stuck = ", ".join(f"{n.id} ({n.reason})" for n in pending)
            raise RaffError(f"nothing more can be built, but these are not up to date: {stuck}")
        self.report.skipped = [node_id for node_id in blocked if node_id not in self.failures]

    def _submit(self, plan: Plan, node: Node) -> None:
        self.running[node.id] = self.runner.submit(plan, node)
        self.progress.info(f"{node.name}: analysis started: {node.reason}")

    def _collect(self) -> list[tuple[Node, Outcome]]:
        """Wait for analyses to finish; what became of each."""
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait([job.future for job in self.running.values()], return_when=FIRST_COMPLETED)
        return [(job.node, self._finish(job)) for node_id, job in list(self.running.items())
                if job.future in done and self.running.pop(node_id, None) is not None]

    def _finish(self, job: Submitted) -> Outcome:
        from concurrent.futures.process import BrokenProcessPool

        from raffinerie.analysis.job import Outputs

        node = job.node
        try:
            result = job.future.result()
        except BrokenProcessPool:  # every job in flight is lost with the pool: they start again
            names = [node.name] + [r.node.name for r in self.running.values()]
            self.running.clear()
            result = self.runner.broken(names)
        try:
            if node.id in self.forced and isinstance(result, Outputs):  # --force: the new outputs
                self._drop(node.kind.store_kind, node.key)               # replace the cached ones
            self.runner.finish(job, result)
        except DamagedEntry as exc:  # its dataset: quarantined, made again by the next plan
            self.damaged.add(exc.key)
            self.progress.info(f"warning: {exc}")
            return Outcome.DAMAGED
        except RaffError as exc:
            if not self.options.keep_going:
                raise
            self._failed(node, exc)
            return Outcome.FAILED
        self.forced.discard(node.id)
        self._built(node)
        self.report.analyses += 1
        self.progress.info(f"{node.name}: analysis finished in {time.monotonic() - job.started:.1f} s")
        return Outcome.BUILT

    def _interrupt(self, signum, _frame) -> None:
        if self.stop:
            raise Abort(signum)  # a second Ctrl-C: give up the point in flight
        self.stop.signal = signum
        self.stop.event.set()
        self.progress.info("stopping after the point in flight (Ctrl-C again to abort it)")

    def _acquire(self, plan: Plan, node: Node) -> None:
        points = plan.points[node.name]
        proc = points.procedure
        if proc.imported is not None:
            raise RaffError(f"{count(points.to_acquire, 'point')} of '{node.name}' "
                            f"{'is' if points.to_acquire == 1 else 'are'} missing from the cache, "
                            "and imported points cannot be acquired again; run `raff import` again "
                            f"from {proc.imported.get('source')}", file=proc.origin.file)
        pod = self.files.target(proc.power_on_default, proc.origin, "power-on default") or {}
        t0, cpu0, emulator0 = time.perf_counter(), time.process_time(), self.acquisition.backend.emulator_cpu()
        try:
            self.report.acquired += acquire_points(points, self.acquisition, pod)
            while points.search is not None and not self.stop:   # its next round, from what this one measured
                points = plan.points[node.name] = advance(points, self.store)
                if points.search.done:
                    self._searched(points)
                    break
                self.progress.info(f"{node.name}: {describe(points.search)}")
                self.report.acquired += acquire_points(points, self.acquisition, pod)
        finally:
            self.report.corrupt_halves = self.acquisition.corrupt_halves
            self.report.acquiring += time.perf_counter() - t0
            self.report.acquiring_cpu += time.process_time() - cpu0
            self.report.emulator_cpu += max(self.acquisition.backend.emulator_cpu() - emulator0, 0.0)

    def _searched(self, points) -> None:
        """Say how a finished search went: its probes, and every cell it could not bring to its target."""
        progress, name = points.search, points.procedure.name
        self.progress.info(f"{name}: {describe(progress)}")
        for line in flagged_lines(points):
            self.progress.info(f"{name}: warning: {line}")

    def _dataset(self, plan: Plan, node: Node) -> None:
        points = plan.points[node.name]
        t0 = time.perf_counter()
        proc = points.procedure
        meta = dataset_meta(node.name, points)
        replace = node.id in self.forced  # --force: this build's table replaces the cached one
        self.forced.discard(node.id)
        cluster = self.runner.cluster if self.runner is not None else None
        if cluster is not None:  # --dask: one task assembles it, reading and writing the cache
            shape = cluster.run(assemble_on_cluster, str(self.store.root), node.key, meta, points,
                                proc.data_columns, proc.origin.at("data_columns"), meta.get(BOARD), replace)
        else:
            shape = self.store.put_dataset(
                bytes.fromhex(node.key), meta,
                lambda folder: write_dataset(points, self.store, folder, proc.data_columns,
                                             proc.origin.at("data_columns"), meta.get(BOARD)), replace)
        calibrations = {plan.nodes[d].name: plan.nodes[d].key for d in plan.nodes[node.depends_on[0]].depends_on}
        self.store.record(node.kind.store_kind, node.name, node.key,
                          {**calibration_record(calibrations), **build_record(points, node)})
        self._built(node)
        self.report.datasets += 1
        self.progress.info(f"{node.name}: dataset of {shape['rows']} rows x {len(shape['columns'])} columns "
                           f"({time.perf_counter() - t0:.2f} s)")

    def _built(self, node: Node) -> None:
        """Journal why this node was built, as the plan said it (`raff report` shows it, by key)."""
        why = self.said.get(node.id) or node.why
        self.store.journal(event="built", kind=str(node.kind), name=node.name, key=node.key,
                           identity=self.identity, reason=why.as_dict())

    def _drop(self, kind: str, key: str) -> None:
        """Take a cached entry out, so that the one this build makes replaces it."""
        if self.store.has(kind, key):
            self.store.remove(kind, key)


def _blocked(plan: Plan, failures: dict[str, Failure]) -> set[str]:
    """The failed nodes (-k) and every node that depends on one."""
    out: set[str] = set()
    if not failures:
        return out
    for node in plan.nodes.values():  # dependency order
        if node.id in failures or any(d in out for d in node.depends_on):
            out.add(node.id)
    return out


def cores_bound(ms_per_point: float) -> tuple[int, float]:
    """(cores this process may run on, the points/s they allow at most at this CPU per point)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores, cores * 1e3 / max(ms_per_point, 1e-3)  # a coarse CPU clock may read 0 for a short build
