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
from functools import lru_cache

from raffinerie.build.backend import Backend
from raffinerie.config.resolve import resolve_point, server_setting
from raffinerie.config.tree import merge
from raffinerie.daq.runs import characterisation_modes, decode_run
from raffinerie.daq.session import config_diff
from raffinerie.graph.plan import PointSet
from raffinerie.store.store import Store
from raffinerie.store.zarrio import compress


class Stop:
    """Set by Ctrl-C: finish the point in flight, then stop."""

    def __init__(self):
        self.event = threading.Event()

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


def acquire_points(points: PointSet, store: Store, backend: Backend, progress, stop: Stop,
                   pod: dict, timer: Timer | None = None) -> int:
    """Acquire every point of `points` the cache lacks; the number acquired here."""
    timer = timer or Timer()
    proc = points.procedure
    todo = points.missing()
    progress.start(proc.name, len(todo))
    base_diff = config_diff(pod, points.base["target"])
    acquired, done, deferred = 0, 0, []
    for i in todo:
        if stop:
            break
        with store.lock(points.key(i).hex()) as mine:
            if not mine:
                deferred.append(i)  # another build is acquiring it
                continue
            acquired += _acquire_one(points, i, store, backend, base_diff, timer)
        done += 1
        progress.step(done)
    for i in deferred:  # wait for the other build; take over if it died
        if stop:
            break
        with store.lock(points.key(i).hex(), wait=True):
            acquired += _acquire_one(points, i, store, backend, base_diff, timer)
        done += 1
        progress.step(done)
    return acquired


def _acquire_one(points: PointSet, i: int, store: Store, backend: Backend, base_diff: dict,
                 timer: Timer) -> int:
    key = points.key(i)
    if store.has("measurements", key):
        return 0
    proc, scan = points.procedure, points.scan
    coordinate, repeat = points.coordinate(i)
    patch = scan.patch(coordinate)
    config = resolve_point(points.base, patch)
    target, daq = config["target"], config["daq"]
    t = time.perf_counter()
    session = backend.open(daq)
    started = time.time()
    run = session.acquire(target, daq)
    t = timer.add("backend (configure, run, receive)", t)
    packed = _compressor().submit(compress, run.raw)  # in parallel with decoding
    chips = server_setting(daq, "NChips", 3)
    decoded = decode_run(run.raw, proc.name, characterisation_modes(target, chips), chips)
    summary = decoded.summary()
    events = decoded.events() if proc.mode == "events" else None
    t = timer.add("decode and summary", t)
    bad = ~decoded.halves.good
    meta = {
        "kind": "measurement", "procedure": proc.name, "index": i, "identity": points.identity,
        "mode": proc.mode, "repeat": repeat,
        "coordinates": dict(zip((a.name for a in scan.axes), coordinate)),
        "target_diff": merge(base_diff, _patch_tree(patch, "target")),
        "daq": daq, "start": started, "end": time.time(), "raw_bytes": len(run.raw),
        "events": int(len(decoded.frames) // max(decoded.n_chips, 1)),
        "corrupt_halves": int(bad.sum()), "corruption": decoded.corruption_report(),
    }
    store.put_measurement(key, summary, run.raw, meta, events, raw_compressed=packed.result())
    store.journal(event="acquired", procedure=proc.name, key=key.hex(), index=i)
    timer.add("store (compress, write, commit)", t)
    return 1


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

