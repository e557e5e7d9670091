"""The summaries of a grid dataset's measurements, read one block of points at a time.

Reading a summary is ~0.25 ms of mostly Python (zip directory, JSON, CRC,
zstd): on a large scan, two reader processes read the halves of each block
while the builder writes the block before, so assembly is not bound to one
core. A damaged measurement is quarantined (DamagedEntry), as on every read.

A reader process answers with a `BlockRead`; the builder turns it into the
block, a quarantine, or `Irregular` (the points do not share one set of
readout slots and columns: the dataset falls back to the `rows` layout).
"""

from __future__ import annotations

import enum
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raffinerie.store import pointfile
from raffinerie.store.dataset import SLOT_COLUMNS
from raffinerie.store.entries import READ_ERRORS, DamagedEntry


class Irregular(Exception):
    """A point whose readout slots or columns differ from the first's: use the `rows` layout."""


class BlockStatus(enum.Enum):
    READ = "read"
    DAMAGED = "damaged"          # a summary that does not read: `path`, `problem`
    IRREGULAR = "irregular"      # summaries of different columns or slots
    OLD_LAYOUT = "old layout"    # an entry of the old folder layout (or none): read through the store


@dataclass(frozen=True)
class BlockRead:
    """What a reader found in one block of measurements (picklable: it crosses processes)."""

    status: BlockStatus
    names: list[str] | None = None
    table: np.ndarray | None = None     # (points, columns, slots)
    path: str | None = None
    problem: str = ""


def summary_blocks(points, store, blocks, first: dict, parallel: bool):
    """(start, column names, summaries as one (points, columns, slots) array) per block."""
    ranges = list(blocks.ranges())
    pool = _reader_pool() if parallel else None
    try:
        pending = _submit(pool, points, store, ranges[0]) if ranges else None
        for i, (start, _) in enumerate(ranges):
            halves = pending
            pending = _submit(pool, points, store, ranges[i + 1]) if i + 1 < len(ranges) else None
            results = [h.result() if hasattr(h, "result") else h for h in halves[1:]]
            if any(r.status is BlockStatus.OLD_LAYOUT for r in results):  # read here, through the store
                results = [read_block(halves[0], store)]
            yield start, *_joined(results, store, first)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _submit(pool, points, store, span: tuple[int, int]) -> list:
    """[the block's paths, then its reads: done here, or futures of one or two reader processes]."""
    start, stop = span
    paths = [str(store.path("measurements", points.key(i)) / pointfile.FILE) for i in range(start, stop)]
    if pool is None:
        return [paths, read_block(paths, store)]
    middle = len(paths) // 2
    halves = [paths[:middle], paths[middle:]] if middle else [paths]  # a 1-point block: one half
    return [paths] + [pool.submit(read_block, half) for half in halves]


def _joined(results: list[BlockRead], store, first: dict) -> tuple[list[str], np.ndarray]:
    for result in results:
        if result.status is BlockStatus.DAMAGED:
            key = Path(result.path).parent.name
            store.quarantine("measurements", key, result.problem)
            raise DamagedEntry("measurements", key, Path(result.path).parent, result.problem)
        if result.status is BlockStatus.IRREGULAR or result.names != list(first):
            raise Irregular()
    columns = results[0].names
    table = np.concatenate([r.table for r in results]) if len(results) > 1 else results[0].table
    for name in SLOT_COLUMNS:  # every point must have the first one's readout slots
        if not (table[:, columns.index(name), :] == first[name]).all():
            raise Irregular()
    return columns, table


def read_block(paths: list[str], store=None) -> BlockRead:
    """Summaries of `paths` stacked, or why they cannot be.

    Runs in a reader process (picklable arguments), or here with `store`,
    which also reads entries of the old folder layout."""
    tables, names = [], None
    for path in paths:
        if store is None and not os.path.isfile(path):
            return BlockRead(BlockStatus.OLD_LAYOUT)  # or not there at all: the parent's read says which
        try:
            if store is not None and not os.path.isfile(path):
                summary = store.read_summary(Path(path).parent.name, check=True)
                columns, table = list(summary), np.vstack([np.asarray(v, dtype=np.float64)
                                                            for v in summary.values()])
            else:
                columns, _, table = pointfile.read_summary(Path(path))
        except DamagedEntry:
            raise
        except READ_ERRORS as exc:
            return BlockRead(BlockStatus.DAMAGED, path=path,
                             problem=f"unreadable: {' '.join(str(exc).split())[:200]}")
        if names is None:
            names = list(columns)
        elif list(columns) != names or table.shape != tables[0].shape:
            return BlockRead(BlockStatus.IRREGULAR)
        tables.append(table)
    return BlockRead(BlockStatus.READ, names, np.stack(tables))


def _reader_pool():
    import multiprocessing

    if multiprocessing.current_process().daemon:  # a dask worker, say: no children allowed
        return None
    return ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_quiet_worker)


def _quiet_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # raff decides what Ctrl-C does
