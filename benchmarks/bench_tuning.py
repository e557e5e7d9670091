"""The tuning chain (`raff build hexaboard_tuning`): one board, then three in one build.

    python benchmarks/bench_tuning.py [--rate 2000] [--no-paced]

Each build is a whole `raff build` process on a fresh copy of the example library
and a fresh cache. After it, the chain is planned again (everything cached, so every
scan's configuration is resolved) to count its points and events, and the "hardware
time" those events take at `--rate` L1As per second: what a real board would spend
triggering, without configuration or readout.

Twice: on the embedded emulator (`--seed`), which runs as fast as the cores let it, so
three boards share two cores with raff; and on standalone emulators paced at `--rate`
(`raff emulator --trigger-rate`, one per board, `--network`), as hardware is. Goal:
three boards in one build take at most 1.3 x the wall time of one.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import EXAMPLES


def build(main: Path, args: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "raffinerie", "build", "hexaboard_tuning", "-c", str(main),
                           "-w", "2", "--quiet", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"bench_tuning: the build failed:\n{done.stderr}")
    return seconds


def count(main: Path, seed: int) -> tuple[int, int]:
    """(points, events) of the chain for one board, from a plan of the built cache."""
    from raffinerie.analysis.code import code_provider
    from raffinerie.config.library import load_library
    from raffinerie.config.network import identity
    from raffinerie.graph.plan import make_plan
    from raffinerie.store.layout import CacheIndex

    lib = load_library(main)
    plan = make_plan(lib, "hexaboard_tuning", identity(None, seed), CacheIndex(main.parent / ".raffinerie-cache"),
                     code=code_provider(main, None))
    assert all(p.base is not None for p in plan.points.values()), "the chain is not built"
    points = sum(p.total for p in plan.points.values())
    events = sum(p.total * p.events_per_point() for p in plan.points.values())
    return points, events


def paced(folder: Path, seeds: list[int], rate: float) -> float:
    """A build over standalone emulators paced at `rate`, one per seed."""
    import contextlib

    import yaml

    from raffinerie.config.daqconfig import Generation
    from raffinerie.emulator.process import EmulatorProcess

    with contextlib.ExitStack() as stack:
        args = []
        for seed in seeds:
            emu = stack.enter_context(EmulatorProcess(seed=seed, generation=Generation.Y2021,
                                                      extra_args=["--trigger-rate", str(rate)]))
            net = folder / f"board-{seed}.yaml"
            net.write_text(yaml.safe_dump({k: {"hostname": "127.0.0.1", "port": emu.ports[k]}
                                           for k in ("server", "target", "data")} | {"board": f"paced-{seed}"}))
            args += ["--network", str(net)]
        return build(folder / "main_config.yaml", args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="L1A rate of the hardware compared (Hz)")
    ap.add_argument("--no-paced", action="store_true", help="only the embedded emulator's builds")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("embedded", "paced")[:1 if args.no_paced else 2]:
            for seeds in ([1], [1, 2, 3]):
                folder = Path(tmp) / f"{kind}-{len(seeds)}"
                shutil.copytree(EXAMPLES, folder)
                main_config = folder / "main_config.yaml"
                if kind == "embedded":
                    wall = build(main_config, [a for s in seeds for a in ("--seed", str(s))])
                    points, events = count(main_config, seeds[0])
                else:
                    wall = paced(folder, seeds, args.rate)
                rows.append((kind, len(seeds), points * len(seeds), events * len(seeds), wall))
    print(f"{'emulator':>9} {'boards':>6} {'points':>7} {'events':>9} {'hardware at %g Hz' % args.rate:>20} "
          f"{'wall':>8}")
    for kind, boards, points, events, wall in rows:
        print(f"{kind:>9} {boards:>6} {points:>7} {events:>9,} {events / args.rate / boards:>18.1f} s "
              f"{wall:>6.1f} s")
    for kind in dict.fromkeys(r[0] for r in rows):
        one, three = (r[4] for r in rows if r[0] == kind)
        print(f"{kind}: three boards / one board: {three / one:.2f} x wall (goal at most 1.3)")
    print("hardware: the trigger time of one board's events (the boards take theirs at once)")


if __name__ == "__main__":
    main()
