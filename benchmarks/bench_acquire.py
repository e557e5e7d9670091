"""Points per second through the whole backend path.

    python benchmarks/bench_acquire.py [--points N] [--events E]

The emulator runs as its own process; each point is configured over zmq
REQ/REP, its raw stream is pushed over loopback, then decoded and
summarised. Goal: >= 25 points/s for points of 1000 events x 3 chips.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from raffinerie.daq.runs import characterisation_modes, decode_run
from raffinerie.daq.session import DaqSession
from raffinerie.emulator.process import EmulatorProcess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=60)
    ap.add_argument("--events", type=int, default=1000)
    args = ap.parse_args()
    target = yaml.safe_load((EXAMPLES / "init" / "injection.yaml").read_text())
    daq = {"server": {"NEvents": args.events, "NChips": 3, "l1a_generator_settings": [
        {"name": "A", "enable": 1, "BX": 16, "flavor": "CALPULINT"}]}}
    modes = characterisation_modes(target, 3)
    with EmulatorProcess() as emu, DaqSession(emu.network, emu.network.data) as session:
        session.acquire(target, daq)  # warm up
        t0 = time.perf_counter()
        size = 0
        for i in range(args.points):
            for chip in target.values():
                chip["ReferenceVoltage"][0]["Calib"] = chip["ReferenceVoltage"][1]["Calib"] = 16 * i
            run = session.acquire(target, daq)
            decode_run(run.raw, Path("stream"), modes).summary()
            size += len(run.raw)
        dt = time.perf_counter() - t0
    print(f"{args.points} points x {args.events} events x 3 chips: {dt:.2f} s, "
          f"{args.points / dt:.1f} points/s, {size / dt / 1e6:.1f} MB/s raw (goal >= 25 points/s)")


if __name__ == "__main__":
    main()
