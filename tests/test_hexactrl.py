"""`raff build --network` against `raff emulator` in a separate process, in all four ways
test stands run: menus + hcc and 2021 + zmq-i2c, each pulling the stream or through the daq-client.

The emulator plays the real servers (hexactrl-protocol.md); its `--log` lets
a test see from the server's side what raffinerie sent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml



from raffinerie.config.daqconfig import Generation
from raffinerie.config.network import SlowControl
from raffinerie.emulator.process import EmulatorProcess

COMBOS = [("menus", "hcc", "pull"), ("menus", "hcc", "daq-client"),
          ("2021", "zmq-i2c", "daq-client"), ("2021", "zmq-i2c", "pull")]
INJECTED = (10, 20, 40, 50)

DAQ_2021 = """\
server:
  NChips: 3
  NEvents: 40
  zmqPushPull_port: 8888
  l1a_generator_settings:
    - {name: A, enable: 1, BX: 16, length: 1, flavor: CALPULINT, prescale: 0, followMode: DISABLE}
    - {name: B, enable: 1, BX: 38, length: 1, flavor: L1A, prescale: 0, followMode: A}
client: {hw_type: LD, serverIP: localhost, data_push_port: 8888}
"""
DAQ_MENUS = """\
server:
  NChips: 3
  zmqPushPull_port: 8888
  active_menu: calibAndL1A
  elinks_daq: [{name: link0, polarity: 1, idcode: 0}]
  menus:
    calibAndL1A: {NEvents: 40, bxCalib: 10, bxL1A: 32, lengthCalib: 1, lengthL1A: 1, prescale: 0, repeatOffset: 200}
    randomL1A: {NEvents: 40, bx_min: 45, log2_rand_bx_period: 10}
client: {hw_type: LDv3, serverIP: localhost, zmqPushPull_port: 8888}
"""
INJECTION = """\
roc_s0: &chip
  DigitalHalf: {0: {CalibrationSC: 1}, 1: {CalibrationSC: 1}}
  ReferenceVoltage: {0: {IntCtest: 1}, 1: {IntCtest: 1}}
  ch: {10: {HighRange: 1}, 20: {HighRange: 1}, 40: {HighRange: 1}, 50: {HighRange: 1}}
roc_s1: *chip
roc_s2: *chip
"""
SCAN = """\
- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
  values: [0, 600]
- key: [[roc_s0, roc_s1, roc_s2], Top, 0, phase_strobe]
  values: [0, 8]
"""


def library(libdir, generation: str, name: str = "scan", parameters: str = SCAN):
    libdir.write("defaults/daq.yaml", DAQ_MENUS if generation == "menus" else DAQ_2021)
    libdir.write("init/injection.yaml", INJECTION)
    proc = textwrap.dedent(f"""\
        - name: {name}
          type: daq
          target_settings:
            power_on_default: ./defaults/pod.yaml
            initial_config: ./init/injection.yaml
          daq_settings:
            default: ./defaults/daq.yaml
          parameters:
        """) + textwrap.indent(textwrap.dedent(parameters), "    ")
    return libdir.main(proc)


def network_file(path: Path, emu: EmulatorProcess, readout: str, output: Path, timeout: float = 5) -> Path:
    p = emu.ports
    doc = {"server": {"hostname": "127.0.0.1", "port": p["server"]},
           "target": {"hostname": "127.0.0.1", "port": p["target"]},
           "client": {"hostname": "127.0.0.1", "port": p["client"]},
           "data": {"hostname": "127.0.0.1", "port": p["data"]},
           "generation": p["generation"], "slow_control": p["slow_control"], "readout": readout,
           "client_output": str(output), "board": "LD-test", "timeout": timeout}
    path.write_text(yaml.safe_dump(doc))
    return path


def start_emulator(generation: str, slow: str, log: Path, *extra: str) -> EmulatorProcess:
    return EmulatorProcess(seed=3, generation=Generation(generation), slow_control=SlowControl(slow),
                           extra_args=["--log", str(log), *extra]).start()


def log_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def dataset(raff, main: Path, cache: Path, out: Path, net: Path, name: str = "scan"):
    import pandas as pd

    r = raff("export", name, "-o", out, "-c", main, "--cache", cache, "--network", net)
    assert r.code == 0, r.err
    return pd.read_csv(out)


@pytest.mark.parametrize("generation,slow,readout", COMBOS)
def test_build_rebuild_and_tdc_resets(libdir, tmp_path, raff, generation, slow, readout):
    main = library(libdir, generation)
    log, cache = tmp_path / "emu.log", tmp_path / "cache"
    emu = start_emulator(generation, slow, log)
    try:
        net = network_file(tmp_path / "net.yaml", emu, readout, tmp_path / "daq-out")
        r = raff("build", "scan", "-c", main, "--cache", cache, "--network", net)
        assert r.code == 0, r.out + r.err
        assert "4 points acquired" in r.out
        again = raff("build", "scan", "-c", main, "--cache", cache, "--network", net)
        assert again.code == 0 and "scan is up to date" in again.out, again.out + again.err
        lines = log_lines(log)
    finally:
        emu.stop()
    data = dataset(raff, main, cache, tmp_path / "scan.csv", net)
    assert len(data) == 4 * 3 * 78  # points x chips x (72 channels + 2 calib + 4 cm)
    assert sorted(data.groupby(["Calib", "phase_strobe"]).size().index.tolist()) == \
        [(0, 0), (0, 8), (600, 0), (600, 8)]
    normal = data[data.channeltype == 0]
    injected = normal[normal.channel.isin(INJECTED)]
    at = injected.groupby("Calib").adc_mean.mean()
    assert at[600] > at[0] + 100  # the injected charge shows in the ADC
    assert (data.n_events == 40).all()
    runs = [line for line in lines if line.get("event") == "run"]
    assert len(runs) == 4 and all(all(run["tdc_ok"]) for run in runs), runs
    # no daq-client traffic when raffinerie pulls; the daq-client drives every run otherwise
    client_commands = [l["command"] for l in lines if l.get("server") == "client" and "command" in l]
    assert (readout == "pull") == (not client_commands)
    if readout == "daq-client":
        assert not any((tmp_path / "daq-out").rglob("*.raw"))  # every file was taken into the cache


@pytest.mark.parametrize("generation,slow", [("menus", "hcc"), ("2021", "zmq-i2c")])
def test_tdc_reset_after_every_phase_change(libdir, tmp_path, raff, generation, slow):
    """Seen from the emulator: after each phase change, a TDC reset before the next `start`."""
    main = library(libdir, generation, parameters="""\
        - key: [[roc_s0, roc_s1, roc_s2], Top, 0, phase_strobe]
          values: [0, 4, 4, 12]
        - key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
          values: [100, 700]
        """)
    log = tmp_path / "emu.log"
    emu = start_emulator(generation, slow, log)
    try:
        net = network_file(tmp_path / "net.yaml", emu, "pull", tmp_path / "out")
        r = raff("build", "scan", "-c", main, "--cache", tmp_path / "cache", "--network", net)
        assert r.code == 0, r.err
    finally:
        emu.stop()
    lines = log_lines(log)
    phase_changed, stale = 0, set()
    for line in lines:
        if line.get("phase_changed"):
            phase_changed += 1
            stale |= set(line["phase_changed"])
        stale -= set(line.get("tdc_reset") or ())
        if line.get("command") == "start" and line.get("server") == "daq":
            assert not stale, f"a run started after a phase change of chips {stale} without a TDC reset"
    assert phase_changed >= 2  # 0 -> 4, 4 -> 12 (and on some boards the power-on write)
    runs = [line for line in lines if line.get("event") == "run"]
    assert len(runs) == 6 and all(all(run["tdc_ok"]) for run in runs)  # phase 4 twice: one point


@pytest.mark.parametrize("generation,slow,readout", COMBOS)
def test_interrupted_build_resumes(libdir, tmp_path, raff, generation, slow, readout):
    main = library(libdir, generation)
    cache = tmp_path / "cache"
    emu = start_emulator(generation, slow, tmp_path / "emu.log", "--trigger-rate", "100")
    try:
        net = network_file(tmp_path / "net.yaml", emu, readout, tmp_path / "daq-out")
        env = {k: v for k, v in os.environ.items() if k not in ("RAFF_CACHE", "RAFF_CONFIG")}
        proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "scan", "-c", str(main),
                                 "--cache", str(cache), "--network", str(net)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        journal = cache / "journal.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (journal.exists() and journal.read_text().strip()):
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, out + err
        first = sum(json.loads(l)["event"] == "acquired" for l in journal.read_text().splitlines())
        assert 1 <= first < 4
        r = raff("build", "scan", "-c", main, "--cache", cache, "--network", net)
        assert r.code == 0, r.err
        assert f"{4 - first} points acquired" in r.out or (4 - first == 1 and "1 point acquired" in r.out)
        keys = [e["key"] for e in map(json.loads, journal.read_text().splitlines()) if e["event"] == "acquired"]
        assert len(keys) == len(set(keys)) == 4  # every point once
    finally:
        emu.stop()


@pytest.mark.parametrize("generation,slow", [("menus", "hcc"), ("2021", "zmq-i2c")])
def test_moving_the_emulator_to_other_ports_keeps_the_cache(libdir, tmp_path, raff, generation, slow):
    main = library(libdir, generation)
    cache = tmp_path / "cache"
    first = start_emulator(generation, slow, tmp_path / "a.log")
    try:
        net = network_file(tmp_path / "a.yaml", first, "pull", tmp_path / "out")
        assert raff("build", "scan", "-c", main, "--cache", cache, "--network", net).code == 0
    finally:
        first.stop()
    second = start_emulator(generation, slow, tmp_path / "b.log")
    try:
        assert second.ports["server"] != first.ports["server"] or second.ports["data"] != first.ports["data"]
        net = network_file(tmp_path / "b.yaml", second, "daq-client", tmp_path / "elsewhere")
        r = raff("plan", "scan", "-c", main, "--cache", cache, "--network", net, "--check")
        assert r.code == 0, r.out + r.err
        r = raff("build", "scan", "-c", main, "--cache", cache, "--network", net)
        assert r.code == 0 and "up to date" in r.out, r.out + r.err
    finally:
        second.stop()
