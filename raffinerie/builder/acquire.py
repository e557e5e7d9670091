"""Acquiring the missing points of a daq procedure: a pipeline behind each point.

The backend session is strictly serial: configure, run, receive, point after
point, in plan order. While point i+1 is acquired, point i is decoded,
summarised and committed in a worker thread (the decoder and zstd release
the GIL, the session mostly waits on sockets), so on a test stand raffinerie
adds almost nothing to the hardware's pace. At most two points are in
flight, one being acquired and one being committed: that is all a crash can
lose. Ctrl-C finishes both. A point's lock is held from its acquisition to
its commit. Points locked by another process are left to it and checked
again at the end; if that process died, they are acquired here.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from raffinerie.builder.backend import Backend
from raffinerie.config.resolve import resolve_point, server_setting, written_at
from raffinerie.config.tree import merge
from raffinerie.daq.runs import characterisation_modes, decode_run
from raffinerie.daq.session import BackendError, config_diff
from raffinerie.errors import RaffError
from raffinerie.graph.points import PointSet
from raffinerie.hgcroc import DEFAULT_CHIPS
from raffinerie.records import MeasurementRecord
from raffinerie.store.store import Store
from raffinerie.store.pointfile import compress


DEFAULT_MAX_CORRUPT = 0.05  # corrupt halves per chip above which a point is refused


class Stop:
    """Set by Ctrl-C: finish the point in flight, then stop."""

    def __init__(self):
        self.event = threading.Event()
        self.signal = 2  # SIGINT, or SIGTERM when that was the signal

    def __bool__(self) -> bool:
        return self.event.is_set()


class Timer:
    """Wall time per stage of acquisition, for the profile `raff build` prints."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, t0: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - t0
        return now


@dataclass
class Acquisition:
    """What acquiring points needs, and what it counts for the build summary."""

    store: Store
    backend: Backend
    progress: object
    stop: Stop
    timer: Timer = field(default_factory=Timer)
    max_corrupt: float = DEFAULT_MAX_CORRUPT
    pipelined: bool = True   # commit in a worker while the next point is acquired
    acquired: int = 0
    corrupt_halves: int = 0
    done: int = 0            # points of the current procedure, for the progress line
    counting: threading.Lock = field(default_factory=threading.Lock)
    # decode in a worker process instead of the committing thread: measured slower here
    # (bench_pipeline: 46 against 63 points/s; the cores, not the GIL, are the limit)
    processes: bool = False
    _pool: object = None

    def process_pool(self):
        """One worker process for decoding, started on first use (None when disabled)."""
        if not (self.processes and self.pipelined):
            return None
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def acquire_points(points: PointSet, job: Acquisition, pod: dict) -> int:
    """Acquire every point of `points` the cache lacks; the number acquired here."""
    proc, store = points.procedure, job.store
    todo = points.missing()
    job.progress.start(proc.name, len(todo))
    job.done = 0
    base_diff = config_diff(pod, points.base["target"])
    before, deferred = job.acquired, []
    with Pipeline(job.pipelined) as pipe:
        for i in todo:
            if job.stop or pipe.failed:
                break
            lock = store.hold(points.key(i).hex())
            if lock is None:
                deferred.append(i)  # another build is acquiring it
                continue
            _acquire_one(points, i, job, base_diff, lock, pipe)
        for i in deferred:  # wait for the other build; take over if it died
            if job.stop or pipe.failed:
                break
            _acquire_one(points, i, job, base_diff, store.hold(points.key(i).hex(), wait=True), pipe)
    return job.acquired - before


@dataclass
class Acquired:
    """A point's run, as the backend gave it: what committing it needs."""

    points: PointSet
    index: int
    target: dict
    daq: dict
    patch: list
    raw: bytes
    started: float
    ended: float


class Pipeline:
    """One worker thread that commits what the serial backend acquired.

    `submit` waits while the worker still commits the previous point, so
    at most two points are in flight. The first error of the worker stops
    the acquisition loop (`failed`) and is raised when the pipeline closes,
    after the points in flight are committed.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="raff-commit") if enabled else None
        self.pending = None
        self.error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.pending is not None and self.pending.done()
                                          and self.pending.exception() is not None)

    def submit(self, fn, *args) -> None:
        if not self.enabled:
            fn(*args)
            return
        self._wait()
        self.pending = self.pool.submit(fn, *args)

    def _wait(self) -> None:
        if self.pending is not None:
            try:
                self.pending.result()
            except BaseException as exc:  # noqa: BLE001 - kept, raised when the pipeline closes
                self.error = self.error or exc
            self.pending = None

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self._wait()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.error is not None and exc[0] is None:
            raise self.error


def _acquire_one(points: PointSet, i: int, job: Acquisition, base_diff: dict, lock, pipe: Pipeline) -> None:
    """Run point i on the backend (serial), then hand it to the pipeline to commit."""
    try:
        key = points.key(i)
        if job.store.has("measurements", key):  # another build committed it meanwhile
            lock.release()
            with job.counting:
                job.done += 1
            return
        coordinate, _ = points.coordinate(i)
        patch = points.scan.patch(coordinate)
        config = resolve_point(points.base, patch)
        target, daq = config["target"], config["daq"]
        t = time.perf_counter()
        session = job.backend.open(daq)
        started = time.time()
        run = session.acquire(target, daq)
        job.timer.add("backend (configure, run, receive)", t)
    except BackendError as exc:
        lock.release()
        raise _blamed(exc, points) from None
    except BaseException:
        lock.release()
        raise
    pipe.submit(_commit, Acquired(points, i, target, daq, patch, run.raw, started, time.time()),
                job, base_diff, lock)


def _blamed(exc: BackendError, points: PointSet) -> BackendError:
    """A backend's refusal of a register, at the file and line where the procedure writes it.

    The backend knows only the register's place; the user knows the key they wrote. A
    refusal naming no register of the procedure's keys is placed at the procedure.
    """
    diag, proc = exc.diagnostic, points.procedure
    if diag.file is not None:
        return exc
    found = written_at(proc, points.scan.axes, diag.message)
    if found is not None:
        register, origin = found
        return BackendError(f"{diag.message} (procedure '{proc.name}' writes {register} here)",
                            origin.file, origin.line)
    if " refused '" in diag.message:  # a slow-control refusal, not a connection's
        return BackendError(f"{diag.message} (while running procedure '{proc.name}')",
                            proc.origin.file, proc.origin.line)
    return exc


def _commit(point: Acquired, job: Acquisition, base_diff: dict, lock) -> None:
    """Decode, check, summarise and commit one acquired point (in the pipeline's worker).

    The work runs in this thread (numpy and zstd release the GIL, the
    session waits on sockets), or in a worker process with `job.processes`,
    which `benchmarks/bench_pipeline.py` compares.
    """
    try:
        points, i, store = point.points, point.index, job.store
        proc, scan = points.procedure, points.scan
        key = points.key(i)
        coordinate, repeat = points.coordinate(i)
        where = f"{proc.name} point {i} ({_coordinates(scan, coordinate)})"
        record = MeasurementRecord(
            procedure=proc.name, index=i, identity=points.identity, mode=proc.mode, repeat=repeat,
            coordinates=dict(zip((a.name for a in scan.axes), coordinate)), daq=point.daq,
            start=point.started, end=point.ended, raw_bytes=len(point.raw),
            target_diff=merge(base_diff, _patch_tree(point.patch, "target")))
        work = Commit(str(store.root), key, point.raw, record, point.target,
                      server_setting(point.daq, "NChips", DEFAULT_CHIPS), proc.mode == "events", job.max_corrupt, where)
        pool = job.process_pool()
        done = pool.submit(work).result() if pool is not None else work()
        for stage, seconds in done.seconds.items():
            job.timer.seconds[stage] = job.timer.seconds.get(stage, 0.0) + seconds
        for line in done.corruption:
            job.progress.info(f"warning: {where}: {line}, left out")
        if not store.has("measurements", key):
            raise RaffError(f"{where}: its measurement disappeared right after it was committed to "
                            f"{store.root} (is another program deleting cache entries?)")
        store.journal(event="acquired", procedure=proc.name, key=key.hex(), index=i)
    finally:
        lock.release()
    with job.counting:
        job.acquired += 1
        job.done += 1
        job.corrupt_halves += done.corrupt_halves
        job.progress.step(job.done)


@dataclass
class Committed:
    corrupt_halves: int
    corruption: list[str]
    seconds: dict[str, float]


@dataclass
class Commit:
    """Decode, check and store one point: picklable, for a worker process."""

    root: str
    key: bytes
    raw: bytes
    record: MeasurementRecord
    target: dict
    chips: int
    events: bool
    max_corrupt: float
    where: str

    def __call__(self) -> Committed:
        t0 = time.perf_counter()
        packed = _compressor().submit(compress, self.raw)  # in parallel with decoding
        decoded = _decode(self.raw, self.where, self.target, self.chips)
        bad = _check_quality(decoded, self.where, self.max_corrupt)
        summary = decoded.summary()
        events = decoded.events() if self.events else None
        t1 = time.perf_counter()
        record = self.record.with_run(decoded.n_events, bad, decoded.corruption_report())
        Store(self.root).put_measurement(self.key, summary, self.raw, record.meta(), events,
                                         raw_compressed=packed.result())
        return Committed(bad, record.corruption if bad else [],
                         {"decode and summary": t1 - t0, "store (compress, write, commit)": time.perf_counter() - t1})


def _decode(raw: bytes, where: str, target: dict, chips: int):
    try:
        return decode_run(raw, where, characterisation_modes(target, chips), chips)
    except RaffError as exc:  # bytes that are not a hexactrl run: the backend's fault
        raise BackendError(f"{where}: the backend sent data that do not decode: "
                           f"{exc.diagnostic.message}") from None


def _check_quality(decoded, where: str, max_corrupt: float) -> int:
    """Corrupt halves of a run: reported; above the limit on any chip, the point is refused."""
    if len(decoded.frames) == 0:
        raise BackendError(f"{where}: the run holds no events; the point was not committed")
    bad = ~decoded.halves.good
    total = int(bad.sum())
    if not total:
        return 0
    chips = decoded.frames.chip
    fractions = np.bincount(chips, weights=bad.sum(axis=1), minlength=decoded.n_chips) \
        / np.maximum(2 * np.bincount(chips, minlength=decoded.n_chips), 1)
    worst = int(np.argmax(fractions))
    if fractions[worst] > max_corrupt or total == bad.size:
        raise BackendError(f"{where}: chip {worst} has {fractions[worst]:.1%} corrupt halves (limit "
                           f"{max_corrupt:.1%}, --max-corrupt); the point was not committed "
                           "(a bad link or a bit-slipping fibre?)")
    return total


def _worker_init() -> None:
    import signal

    from raffinerie.tuning import tune_allocator

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # raff decides what Ctrl-C does
    tune_allocator()


def _coordinates(scan, coordinate) -> str:
    pairs = [f"{a.name} {v}" for a, v in zip(scan.axes, coordinate)]
    return ", ".join(pairs) if pairs else "the only point"


@lru_cache(maxsize=1)
def _compressor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="raff-compress")


def _patch_tree(patch: list, root: str) -> dict:
    tree: dict = {}
    for place, value in patch:
        if place[0] != root:
            continue
        node = tree
        for part in place[1:-1]:
            node = node.setdefault(part, {})
        node[place[-1]] = value
    return tree

