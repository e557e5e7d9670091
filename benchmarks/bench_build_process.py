"""A paced build as a user runs it: the whole `raff build` process against the hardware's time.

    python benchmarks/bench_build_process.py [--points 40] [--events 1000] [--rate 2000] [--repeat 3]

A scan of Calib (the example injection run) on a fresh cache, on the
embedded emulator paced like hardware (`RAFF_EMULATOR_TRIGGER_RATE`): its
runs last NEvents / rate seconds, 1000 events at 2 kHz = 0.5 s a point, so
40 points are 20 s of hardware. Each build is a `raff build` process;
its progress lines are timestamped as they arrive on stderr, which gives
the fixed costs around the hardware time:

- start-up to the first point: the first "1/N points" line minus that
  point's own hardware time (interpreter, loading, plan, emulator start,
  configuration);
- last point to exit: from the "N/N points" line to the process's end
  (dataset, records, shutting the emulator down).

Prints the median of `--repeat` builds. Goal (issue 23): whole process
<= 1.10 x the hardware time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import scan_library


def one_build(main: Path, points: int, rate: float) -> tuple[float, float, float]:
    """(wall, time of the first point's line, time of the last point's line) of one build."""
    for old in (main.parent / ".raffinerie-cache", main.parent / "raff-out"):
        shutil.rmtree(old, ignore_errors=True)
    env = dict(os.environ, RAFF_EMULATOR_TRIGGER_RATE=str(rate))
    first = last = None
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "scan", "-c", str(main)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stderr:
        done = re.search(r"scan: (\d+)/(\d+) points", line)
        if done and first is None:
            first = time.perf_counter() - t0
        if done and int(done.group(1)) == points:
            last = time.perf_counter() - t0
    if proc.wait() != 0 or first is None or last is None:
        sys.exit(f"the build failed (exit {proc.returncode})")
    return time.perf_counter() - t0, first, last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=40)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    per_point = args.events / args.rate
    hardware = args.points * per_point
    with tempfile.TemporaryDirectory() as tmp:
        main = scan_library(Path(tmp), args.points, args.events)
        runs = [one_build(main, args.points, args.rate) for _ in range(args.repeat)]
    wall = statistics.median(r[0] for r in runs)
    start = statistics.median(r[1] - per_point for r in runs)
    closing = statistics.median(r[0] - r[2] for r in runs)
    print(f"{args.points} points x {args.events} events x 3 chips, paced at {args.rate:g} Hz: "
          f"{hardware:.1f} s of hardware")
    print(f"whole raff build process: {wall:.2f} s (median of {args.repeat}: "
          f"{', '.join(f'{r[0]:.2f}' for r in runs)})")
    print(f"  start-up to the first point: {start:.2f} s")
    print(f"  last point to exit:          {closing:.2f} s")
    print(f"whole process / hardware time: {wall / hardware:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
