"""Several boards in one build against one board, paced like hardware.

    python benchmarks/bench_boards.py [--boards 4] [--points 20] [--events 1000] [--rate 2000]

Each board is its own `raff emulator` process (a seed per board), paced at
`--rate` L1As per second, so a point is `events / rate` seconds of
"hardware". One `raff build --network ... --network ...` drives them all.
Goal: the wall time of 4 boards is at most 1.25 x that of one board.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from raffinerie.config.daqconfig import Generation
from raffinerie.emulator.process import EmulatorProcess

from common import scan_library


def network(path: Path, emu: EmulatorProcess, board: str) -> Path:
    p = emu.ports
    path.write_text(yaml.safe_dump({"server": {"hostname": "127.0.0.1", "port": p["server"]},
                                    "target": {"hostname": "127.0.0.1", "port": p["target"]},
                                    "data": {"hostname": "127.0.0.1", "port": p["data"]},
                                    "board": board}))
    return path


def build(main: Path, cache: Path, nets: list[Path]) -> float:
    args = [a for net in nets for a in ("--network", str(net))]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "raffinerie", "build", "scan", "-c", str(main), "--cache",
                    str(cache), "--quiet", *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", type=int, default=4)
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=2000.0)
    args = ap.parse_args()
    hardware = args.points * args.events / args.rate
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        main_config = scan_library(tmp, args.points, args.events)
        emulators = [EmulatorProcess(seed=s, generation=Generation.Y2021,
                                     extra_args=["--trigger-rate", str(args.rate)]).start()
                     for s in range(1, args.boards + 1)]
        try:
            nets = [network(tmp / f"b{i}.yaml", e, f"LD-{i}") for i, e in enumerate(emulators, 1)]
            one = build(main_config, tmp / "one", nets[:1])
            many = build(main_config, tmp / "many", nets)
        finally:
            for e in emulators:
                e.stop()
    print(f"{args.points} points x {args.events} events x 3 chips per board, paced at {args.rate:g} Hz "
          f"({hardware:.1f} s of hardware per board)")
    print(f"  1 board:  {one:6.2f} s wall")
    print(f"  {args.boards} boards: {many:6.2f} s wall, {many / one:.2f} x one board (goal <= 1.25)")


if __name__ == "__main__":
    main()
