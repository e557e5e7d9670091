"""Protocol overhead per point, beyond moving the data, in each hexactrl-sw generation.

    python benchmarks/bench_protocol.py [--points N]

Each point changes one register (Calib) and takes a run of one event, so
what its wall time measures is the protocol: the slow-control write, the
daq server's start (and, 2021, `run_done` and `stop`), waiting for the end
of the run, and the readout path (stream or daq-client file). The
emulator's `--log` counts the status polls (`status`, `run_done`) a run
costs. Goals: median <= 5 ms per point; while a run goes on, status polling
under 100 requests/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from raffinerie.config.daqconfig import Generation
from raffinerie.config.network import Readout
from raffinerie.daq.session import DaqSession
from raffinerie.emulator.process import EmulatorProcess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
COMBOS = [(Generation.MENUS, Readout.PULL), (Generation.MENUS, Readout.DAQ_CLIENT),
          (Generation.Y2021, Readout.PULL), (Generation.Y2021, Readout.DAQ_CLIENT)]
POLLS = {"status", "run_done"}


def daq_config(generation: Generation, events: int) -> dict:
    if generation is Generation.MENUS:
        return {"server": {"NChips": 3, "zmqPushPull_port": 8888, "active_menu": "calibAndL1A",
                           "menus": {"calibAndL1A": {"NEvents": events, "bxCalib": 10, "bxL1A": 32}}},
                "client": {}}
    return {"server": {"NEvents": events, "NChips": 3, "zmqPushPull_port": 8888, "l1a_generator_settings": [
        {"name": "A", "enable": 1, "BX": 16, "flavor": "CALPULINT"}]}, "client": {}}


def measure(generation: Generation, readout: Readout, points: int, events: int, rate: float | None):
    target = yaml.safe_load((EXAMPLES / "init" / "injection.yaml").read_text())
    daq = daq_config(generation, events)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "emu.log"
        extra = ["--log", str(log)] + (["--trigger-rate", str(rate)] if rate else [])
        with EmulatorProcess(generation=generation, extra_args=extra) as emu:
            net = dataclasses.replace(emu.network, readout=readout, client_output=Path(tmp) / "out")
            with DaqSession(net, net.data, net.protocols(daq)) as s:
                s.acquire(target, daq)  # connect, full configuration
                walls = []
                for i in range(points):
                    for chip in target.values():
                        chip["ReferenceVoltage"][0]["Calib"] = chip["ReferenceVoltage"][1]["Calib"] = 1 + i % 2000
                    t0 = time.perf_counter()
                    s.acquire(target, daq)
                    walls.append(time.perf_counter() - t0)
        lines = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    polls = [l["t"] for l in lines if l.get("command") in POLLS]
    runs = max(sum(1 for l in lines if l.get("event") == "run"), 1)
    return walls, len(polls) / runs, _worst_rate(polls)


def _worst_rate(times: list[float], window: float = 0.1) -> float:
    """The highest polling rate over any 100 ms window (requests/s)."""
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best / window


def main() -> None:
    from raffinerie.tuning import tune_allocator

    tune_allocator()  # as `raff build` does
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200)
    args = ap.parse_args()
    print("per point: one register changed, a run of 1 event (protocol only)")
    for generation, readout in COMBOS:
        walls, per_run, worst = measure(generation, readout, args.points, 1, None)
        ms = sorted(1000 * w for w in walls)
        print(f"  {generation.value:5} {readout.value:10} median {statistics.median(ms):5.2f} ms, "
              f"p90 {ms[int(0.9 * len(ms))]:5.2f} ms; {per_run:4.2f} status polls per run", flush=True)
    print("runs paced at 2 kHz, 200 events (0.1 s of hardware): polling while the run goes on")
    for generation, readout in COMBOS:
        walls, per_run, worst = measure(generation, readout, 20, 200, 2000.0)
        print(f"  {generation.value:5} {readout.value:10} median {1000 * statistics.median(walls):6.1f} ms "
              f"(hardware 100 ms); {per_run:4.2f} status polls per run, at most {worst:5.1f}/s "
              "in any 100 ms", flush=True)
    print("goals: median overhead <= 5 ms per point; status polling < 100 requests/s")


if __name__ == "__main__":
    main()
