"""Decoder throughput on the 49 real hexactrl runs, one core, files in the page cache.

    python benchmarks/bench_decode.py [--folder DIR]

Prints MB/s for decode + CRC check, and for decode + CRC + the full summary
table (best of 5 passes over all files, each pass reading the files). Goals:
>= 250 MB/s and >= 100 MB/s. Without ../shared/data it measures emulated runs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from raffinerie.daq.rawformat import check_halves, read_frames
from raffinerie.daq.summary import summarize

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "hexactrl-timewalk"


def emulated_runs(folder: Path) -> list[Path]:
    from raffinerie.emulator.model import Board, RunSettings, raw_file
    from raffinerie.emulator.registers import RegisterFile

    folder.mkdir(parents=True, exist_ok=True)
    board, regs = Board(0), RegisterFile()
    paths = []
    for i in range(49):
        regs.write({f"roc_s{c}": {"ReferenceVoltage": {0: {"Calib": 64 * i}}} for c in range(3)})
        event, chip, words = board.run(regs, RunSettings(400, False), 0)
        path = folder / f"emulated_{i}.raw"
        path.write_bytes(raw_file(event, chip, words))
        paths.append(path)
    return paths


def best_of(paths: list[Path], with_summary: bool, passes: int = 5) -> float:
    char = np.ones((3, 2), dtype=bool)
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        for path in paths:
            frames = read_frames(path.read_bytes())
            halves = check_halves(frames)
            if with_summary:
                summarize(frames, char, halves)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=DEFAULT)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    paths = sorted(args.folder.glob("*.raw"))
    label = f"{len(paths)} real runs in {args.folder}"
    if not paths:
        import tempfile

        paths = emulated_runs(Path(tempfile.mkdtemp()) / "runs")
        label = f"{len(paths)} emulated runs (no real data at {args.folder})"
    size = sum(p.stat().st_size for p in paths)
    for p in paths:
        p.read_bytes()  # into the page cache
    best_of(paths[:2], True, 1)  # warm up: CRC tables
    print(f"{label}: {size / 1e6:.2f} MB, one core, best of 5")
    t = best_of(paths, False)
    print(f"decode + CRC check:            {t:.3f} s  {size / t / 1e6:7.1f} MB/s  (goal >= 250)")
    t = best_of(paths, True)
    print(f"decode + CRC + summary table:  {t:.3f} s  {size / t / 1e6:7.1f} MB/s  (goal >= 100)")


if __name__ == "__main__":
    main()
