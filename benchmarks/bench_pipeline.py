"""Pipelined acquisition against plain point-after-point acquisition, in one run.

    python benchmarks/bench_pipeline.py [--points 40] [--unpaced-points 200] [--events 1000] [--rate 2000]
                                        [--repeat 3]

1. Paced like hardware: the embedded emulator's runs last NEvents / rate
   seconds (`RAFF_EMULATOR_TRIGGER_RATE`), 1000 events x 3 chips at 2 kHz =
   0.5 s of "hardware" per point. Prints wall / pure hardware time, both
   ways. Goal: pipelined <= 1.10.
2. Unpaced: the emulator as fast as it goes; points/s both ways. Goal:
   pipelined >= 1.5 x plain. The throughput is that of the acquisition
   (points / wall time of acquiring them, `BuildReport.acquiring`); the
   whole build's rate, with the emulator's start, the plan and the dataset,
   is printed beside it. The ways take turns, `--repeat` times, and the
   median of each is compared: this machine's speed drifts from run to run.
   It also prints the CPU a point costs raff and the emulator (which share
   the cores), and the rate the cores allow at most, whatever the overlap:
   the ceiling a pipelined build on this machine can reach.

Each measurement is a real build (`raffinerie.builder.executor.Builder`) of a
scan of Calib on a fresh cache, on the embedded emulator process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import scan_library


def build(main: Path, cache: Path, pipelined: bool, processes: bool = False):
    """(wall of the build, its report) of one build on a fresh cache; threads unless `processes`."""
    from raffinerie.builder.executor import Builder
    from raffinerie.builder.progress import Progress
    from raffinerie.config.checks import validate
    from raffinerie.config.library import load_library
    from raffinerie.config.resolve import ConfigFiles
    from raffinerie.store.store import Store

    lib, files = load_library(main), ConfigFiles()
    assert not [d for d in validate(lib, files=files) if d.severity == "error"]
    builder = Builder(lib, files, Store(cache), Progress(quiet=True), pipelined=pipelined)
    builder.acquisition.processes = processes
    t0 = time.perf_counter()
    report = builder.build("scan")
    return time.perf_counter() - t0, report


def main() -> None:
    from raffinerie.builder.executor import cores_bound
    from raffinerie.tuning import tune_allocator

    tune_allocator()  # as `raff build` does
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=40)
    ap.add_argument("--unpaced-points", type=int, default=200,
                    help="points of the unpaced runs (more than paced: a build's fixed costs, the "
                         "emulator's start and the dataset, are spread over them)")
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--repeat", type=int, default=3, help="turns of the unpaced ways (medians compared)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        main_config = scan_library(Path(tmp), args.points, args.events)
        hardware = args.points * args.events / args.rate
        print(f"{args.points} points x {args.events} events x 3 chips")
        os.environ["RAFF_EMULATOR_TRIGGER_RATE"] = str(args.rate)
        paced = {}
        for pipelined in (False, True):
            wall, _ = build(main_config, Path(tmp) / f"paced-{pipelined}", pipelined)
            paced[pipelined] = wall
            print(f"  paced at {args.rate:g} Hz ({hardware:.1f} s of hardware), "
                  f"{'pipelined' if pipelined else 'plain    '}: {wall:6.2f} s wall, "
                  f"ratio wall/hardware {wall / hardware:.3f}", flush=True)
        del os.environ["RAFF_EMULATOR_TRIGGER_RATE"]
        fast_config = scan_library(Path(tmp) / "unpaced", args.unpaced_points, args.events)
        print(f"unpaced: {args.unpaced_points} points x {args.events} events x 3 chips")
        ways = (("plain", False, False), ("pipelined", True, False), ("pipelined, process", True, True))
        rates: dict[str, list] = {name: [] for name, _, _ in ways}
        cpu: dict[str, list] = {name: [] for name, _, _ in ways}
        for turn in range(args.repeat):
            for name, pipelined, processes in ways:
                wall, report = build(fast_config, Path(tmp) / f"fast-{name}-{turn}", pipelined, processes)
                n = args.unpaced_points
                rates[name].append((n / report.acquiring, n / wall))
                cpu[name].append((report.acquiring_cpu + report.emulator_cpu) * 1e3 / n)
                profile = ", ".join(f"{k.split(' (')[0]} {v:.2f} s" for k, v in report.timer.seconds.items())
                print(f"  unpaced, {name:18}: acquisition {n / report.acquiring:5.1f} points/s; whole build "
                      f"{wall:5.2f} s, {n / wall:5.1f} points/s ({profile}); CPU per point: raff "
                      f"{report.acquiring_cpu * 1e3 / n:.1f} ms{' (its worker process not counted)' * processes}, "
                      f"emulator {report.emulator_cpu * 1e3 / n:.1f} ms",
                      flush=True)
        median = {name: [statistics.median(r[i] for r in rs) for i in (0, 1)] for name, rs in rates.items()}
        for name, (acq, whole) in median.items():
            print(f"  median of {args.repeat}, {name:18}: acquisition {acq:5.1f} points/s, whole build "
                  f"{whole:5.1f} points/s")
        gain = median["pipelined"][0] / median["plain"][0]
        # No schedule beats the cores: CPU per point (raff and the emulator, which share them) caps
        # the pipelined rate whatever the overlap. (The worker process's CPU is not counted.)
        ms = statistics.median(cpu["pipelined"])
        cores, bound = cores_bound(ms)
        print(f"  the cores' bound: pipelined, a point costs {ms:.1f} ms of CPU (raff and emulator); on "
              f"{cores} cores at most {bound:.1f} points/s, {bound / median['plain'][0]:.2f} x plain even "
              f"with perfect overlap; got {median['pipelined'][0] / bound:.0%} of it")
        print(f"goals: paced pipelined ratio <= 1.10 (got {paced[True] / hardware:.3f}); unpaced "
              f"acquisition pipelined >= 1.5 x plain (got {gain:.2f} x; whole build "
              f"{median['pipelined'][1] / median['plain'][1]:.2f} x)")


if __name__ == "__main__":
    main()
