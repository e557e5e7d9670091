"""Points per second through the whole backend path, for each way a test stand runs.

    python benchmarks/bench_acquire.py [--points N] [--events E] [--only menus/hcc/pull]

The emulator runs as its own process and plays one hexactrl-sw generation;
each point is configured over zmq REQ/REP in that generation's protocol,
its data reach raffinerie either over the stream it pulls itself or as the
.raw file the emulated daq-client writes, then they are decoded and
summarised. Goal: >= 25 points/s for points of 1000 events x 3 chips.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import yaml

from raffinerie.config.daqconfig import Generation
from raffinerie.config.network import Readout
from raffinerie.daq.runs import characterisation_modes, decode_run
from raffinerie.daq.session import DaqSession
from raffinerie.emulator.process import EmulatorProcess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
COMBOS = [(Generation.MENUS, Readout.PULL), (Generation.MENUS, Readout.DAQ_CLIENT),
          (Generation.Y2021, Readout.DAQ_CLIENT), (Generation.Y2021, Readout.PULL)]


def daq_config(generation: Generation, events: int) -> dict:
    if generation is Generation.MENUS:
        return {"server": {"NChips": 3, "zmqPushPull_port": 8888, "active_menu": "calibAndL1A",
                           "menus": {"calibAndL1A": {"NEvents": events, "bxCalib": 10, "bxL1A": 32}}},
                "client": {"hw_type": "LDv3"}}
    return {"server": {"NEvents": events, "NChips": 3, "zmqPushPull_port": 8888, "l1a_generator_settings": [
        {"name": "A", "enable": 1, "BX": 16, "flavor": "CALPULINT"}]}, "client": {"hw_type": "LD"}}


def session(emu: EmulatorProcess, readout: Readout, daq: dict, folder: Path) -> DaqSession:
    net = dataclasses.replace(emu.network, readout=readout, client_output=folder)
    return DaqSession(net, net.data, net.protocols(daq))


def measure(generation: Generation, readout: Readout, points: int, events: int) -> str:
    target = yaml.safe_load((EXAMPLES / "init" / "injection.yaml").read_text())
    daq = daq_config(generation, events)
    modes = characterisation_modes(target, 3)
    with tempfile.TemporaryDirectory() as tmp, EmulatorProcess(generation=generation) as emu, \
            session(emu, readout, daq, Path(tmp)) as s:
        s.acquire(target, daq)  # warm up
        t0 = time.perf_counter()
        size = 0
        for i in range(points):
            for chip in target.values():
                chip["ReferenceVoltage"][0]["Calib"] = chip["ReferenceVoltage"][1]["Calib"] = 16 * i
            run = s.acquire(target, daq)
            decode_run(run.raw, Path("stream"), modes).summary()
            size += len(run.raw)
        dt = time.perf_counter() - t0
    name = f"{generation.value}/{s.protocols.slow_control.value}/{readout.value}"
    return (f"{name:28} {points} points x {events} events x 3 chips: {dt:6.2f} s, "
            f"{points / dt:5.1f} points/s, {size / dt / 1e6:5.1f} MB/s raw")


def main() -> None:
    from raffinerie.tuning import tune_allocator

    tune_allocator()  # as `raff build` does
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=60)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--only", help="one combination, e.g. menus/pull or 2021/daq-client")
    args = ap.parse_args()
    for generation, readout in COMBOS:
        if args.only and args.only.replace("/hcc", "").replace("/zmq-i2c", "") != \
                f"{generation.value}/{readout.value}":
            continue
        print(measure(generation, readout, args.points, args.events), flush=True)
    print("goal: >= 25 points/s")


if __name__ == "__main__":
    main()
