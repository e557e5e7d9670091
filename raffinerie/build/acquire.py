"""Acquiring the missing points of a daq procedure, one committed point at a time.

Each point is locked, acquired, decoded, summarised and committed before the
next one starts, so an interrupt or a crash loses at most the point in
flight. Points locked by another process are left to it and checked again at
the end; if that process died, they are acquired here.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from raffinerie.build.backend import Backend
from raffinerie.config.resolve import resolve_point, server_setting
from raffinerie.config.tree import merge
from raffinerie.daq.runs import characterisation_modes, decode_run
from raffinerie.daq.session import BackendError, config_diff
from raffinerie.errors import RaffError
from raffinerie.graph.plan import PointSet
from raffinerie.store.store import Store
from raffinerie.store.zarrio import compress


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
    acquired: int = 0
    corrupt_halves: int = 0


def acquire_points(points: PointSet, job: Acquisition, pod: dict) -> int:
    """Acquire every point of `points` the cache lacks; the number acquired here."""
    proc, store = points.procedure, job.store
    todo = points.missing()
    job.progress.start(proc.name, len(todo))
    base_diff = config_diff(pod, points.base["target"])
    before, done, deferred = job.acquired, 0, []
    for i in todo:
        if job.stop:
            break
        with store.lock(points.key(i).hex()) as mine:
            if not mine:
                deferred.append(i)  # another build is acquiring it
                continue
            _acquire_one(points, i, job, base_diff)
        done += 1
        job.progress.step(done)
    for i in deferred:  # wait for the other build; take over if it died
        if job.stop:
            break
        with store.lock(points.key(i).hex(), wait=True):
            _acquire_one(points, i, job, base_diff)
        done += 1
        job.progress.step(done)
    return job.acquired - before


def _acquire_one(points: PointSet, i: int, job: Acquisition, base_diff: dict) -> None:
    key, store = points.key(i), job.store
    if store.has("measurements", key):
        return
    proc, scan = points.procedure, points.scan
    coordinate, repeat = points.coordinate(i)
    patch = scan.patch(coordinate)
    config = resolve_point(points.base, patch)
    target, daq = config["target"], config["daq"]
    t = time.perf_counter()
    session = job.backend.open(daq)
    started = time.time()
    run = session.acquire(target, daq)
    t = job.timer.add("backend (configure, run, receive)", t)
    packed = _compressor().submit(compress, run.raw)  # in parallel with decoding
    where = f"{proc.name} point {i} ({_coordinates(scan, coordinate)})"
    decoded = _decode(run.raw, where, target, server_setting(daq, "NChips", 3))
    bad = _check_quality(decoded, where, job)
    summary = decoded.summary()
    events = decoded.events() if proc.mode == "events" else None
    t = job.timer.add("decode and summary", t)
    meta = {
        "kind": "measurement", "procedure": proc.name, "index": i, "identity": points.identity,
        "mode": proc.mode, "repeat": repeat,
        "coordinates": dict(zip((a.name for a in scan.axes), coordinate)),
        "target_diff": merge(base_diff, _patch_tree(patch, "target")),
        "daq": daq, "start": started, "end": time.time(), "raw_bytes": len(run.raw),
        "events": int(len(decoded.frames) // max(decoded.n_chips, 1)),
        "corrupt_halves": bad, "corruption": decoded.corruption_report(),
    }
    store.put_measurement(key, summary, run.raw, meta, events, raw_compressed=packed.result())
    if not store.has("measurements", key):
        raise RaffError(f"{where}: its measurement disappeared right after it was committed to "
                        f"{store.root} (is another program deleting cache entries?)")
    store.journal(event="acquired", procedure=proc.name, key=key.hex(), index=i)
    job.timer.add("store (compress, write, commit)", t)
    job.acquired += 1


def _decode(raw: bytes, where: str, target: dict, chips: int):
    try:
        return decode_run(raw, where, characterisation_modes(target, chips), chips)
    except RaffError as exc:  # bytes that are not a hexactrl run: the backend's fault
        raise BackendError(f"{where}: the backend sent data that do not decode: "
                           f"{exc.diagnostic.message}") from None


def _check_quality(decoded, where: str, job: Acquisition) -> int:
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
    if fractions[worst] > job.max_corrupt or total == bad.size:
        raise BackendError(f"{where}: chip {worst} has {fractions[worst]:.1%} corrupt halves (limit "
                           f"{job.max_corrupt:.1%}, --max-corrupt); the point was not committed "
                           "(a bad link or a bit-slipping fibre?)")
    for line in decoded.corruption_report():
        job.progress.info(f"warning: {where}: {line}, left out")
    job.corrupt_halves += total
    return total


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

