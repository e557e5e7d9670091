"""Measurement entries: zarr-python's write and read against the direct ones.

A measurement is one Zarr v3 zip (raffinerie/store/pointfile.py). Dataset
assembly reads the summary of every point, so that read is the hot path:
this prints zarr-python's read beside the direct read of the zip member that
`pointfile.read_summary` does. The commit worker writes one per point while
the next is acquired: this prints the direct write (zarr-python's metadata
documents, members zipped as its ZipStore does) beside the same file made
through zarr-python's API.

    .venv/bin/python benchmarks/bench_store.py [POINTS]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from raffinerie.store import pointfile
from raffinerie.store.store import Store
from raffinerie.tuning import tune_allocator


def main(points: int = 500) -> None:
    tune_allocator()
    rng = np.random.default_rng(1)
    rows, columns = 234, 22
    summary = {f"c{i}": rng.normal(100, 3, rows) for i in range(columns)}
    raw = rng.integers(0, 1 << 16, 2_000 * 3 * 40, dtype=np.uint16).tobytes()  # ~1000 events x 3 chips
    meta = {"kind": "measurement", "procedure": "bench", "coordinates": {"Calib": 0},
            "target_diff": {"roc_s0": {"ch": {str(c): {"Inputdac": 31} for c in range(72)}}}}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        keys = [os.urandom(32) for _ in range(points)]
        packed = pointfile.compress(raw)
        t0 = time.perf_counter()
        for key in keys:
            store.put_measurement(key, summary, raw, meta, raw_compressed=packed)
        write = (time.perf_counter() - t0) / points
        names, table = list(summary), np.vstack(list(summary.values()))
        t0 = time.perf_counter()
        for i in range(points):
            pointfile.write_with_zarr(Path(tmp) / f"z{i}.zip", meta, table, packed, len(raw), None,
                                      (names, ["<f8"] * len(names)))
        write_zarr = (time.perf_counter() - t0) / points
        files = [store.path("measurements", keys[0]) / name
                 for name in os.listdir(store.path("measurements", keys[0]))]
        paths = [store.path("measurements", k) / pointfile.FILE for k in keys]
        t0 = time.perf_counter()
        for path in paths:
            group = pointfile.open_group(path)
            group["summary"][...]
            group.store.close()
        with_zarr = (time.perf_counter() - t0) / points
        t0 = time.perf_counter()
        for path in paths:
            pointfile.read_summary(path)
        direct = (time.perf_counter() - t0) / points
        t0 = time.perf_counter()
        for key in keys:
            store.read_summary(key, check=True)
        through_store = (time.perf_counter() - t0) / points
    print(f"measurement entries: {points} points of {columns} x {rows} summary + "
          f"{len(raw) / 1e3:.0f} kB raw ({len(packed) / 1e3:.0f} kB zstd)")
    print(f"  files per measurement:                    {len(files)} ({', '.join(sorted(f.name for f in files))})")
    print(f"  write, direct (Store.put_measurement):    {write * 1e3:6.2f} ms/point (in the commit worker, "
          f"with manifest and rename)")
    print(f"  write, zarr-python API (file only):       {write_zarr * 1e3:6.2f} ms/point")
    print(f"  read summary, zarr-python:                {with_zarr * 1e3:6.2f} ms/point")
    print(f"  read summary, direct zip member:          {direct * 1e3:6.2f} ms/point "
          f"({with_zarr / direct:.1f}x faster)")
    print(f"  Store.read_summary (direct, CRC checked): {through_store * 1e3:6.2f} ms/point")
    print(f"  131,072 points at that rate:              {through_store * 131072:6.1f} s of reading "
          f"(zarr-python: {with_zarr * 131072:.1f} s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
