"""Published clients that test stands run today, against the emulator.

The clients are not raffinerie's: `pip install --no-deps -r tests/clients.txt`
installs them (datenraffinerie 0.1.2 goes beside the venv, see that file);
each test skips cleanly when its client is absent. The clients block forever
on a server that does not answer, so every client session runs in a
subprocess with a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from test_emulator_protocol import MENU_CONFIG, free_port, running_emulator

from raffinerie.daq.rawformat import read_frames
from raffinerie.emulator.model import Board, RunSettings, settings_identity
from raffinerie.emulator.registers import RegisterFile

CLIENT_TIMEOUT = 90
DR012 = Path(os.environ.get("RAFF_DR012_PATH", Path(sys.prefix) / "datenraffinerie-0.1.2"))


def run_client(script: str, pythonpath: Path | None = None, **values) -> dict:
    """Run a client script in a subprocess; it prints one JSON line last."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    prelude = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], env=env,
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def expected_words(n_events: int, settings: RunSettings, tdc_ok=(False, False, False)) -> np.ndarray:
    """The first run of a fresh emulated board (seed 0) at power-on registers."""
    return Board(0).run(RegisterFile(), settings, 0, tdc_ok=np.array(tdc_ok))[2]


# --- hgcroc-configuration-client (HCC) ------------------------------------------------------

def test_hcc_client_describe_set_get_reset(tmp_path):
    pytest.importorskip("hgcroc_configuration_client.client")
    with running_emulator(tmp_path) as emu:
        out = run_client("""
            import json
            from hgcroc_configuration_client.client import Client
            c = Client("127.0.0.1", port)
            description = c.describe()
            (board, layout), = description.items()
            c.reset()
            c.set({"roc_s0": {"ReferenceVoltage": {0: {"Calib": 333}}}}, readback=True)
            one = c.get({"roc_s0": {"ReferenceVoltage": {0: {"Calib": 0}}}})
            everything = c.get()
            try:
                c.set({"roc_s1": {"Top": {0: {"phase_strobe": 99}}}})
                refused = None
            except ValueError as err:
                refused = str(err)
            # the master-TDC reset as HCC's i2cController.resettdc does it: two sets
            for value in (0, 1):
                c.set({roc: {"MasterTdc": {i: {"START_COUNTER": value} for i in layout[roc]["MasterTdc"]}}
                       for roc in layout})
            print(json.dumps({"rocs": sorted(layout), "calib": one["roc_s0"]["ReferenceVoltage"][0]["Calib"],
                              "all_calib": everything["roc_s0"]["ReferenceVoltage"][0]["Calib"],
                              "n_ch": len(everything["roc_s2"]["ch"]), "refused": refused}))
            """, port=emu.ports["target"])
        assert out["rocs"] == ["roc_s0", "roc_s1", "roc_s2"]
        assert out["calib"] == out["all_calib"] == 333 and out["n_ch"] == 72
        assert "phase_strobe" in out["refused"]
        assert emu.wait_log(lambda e: e.get("tdc_reset") == [0, 1, 2])


def test_hcc_compatibility_layer_i2c_controller(tmp_path):
    # needs hgcal_utilities.hgcal_utilities, which no published hgcal-utilities has
    pytest.importorskip("hgcroc_configuration_client.zmq_compatibility_layer", exc_type=ImportError)
    with running_emulator(tmp_path) as emu:
        out = run_client("""
            import json
            from hgcroc_configuration_client.zmq_compatibility_layer import i2cController
            i2c = i2cController("127.0.0.1", port)
            i2c.configure(yamlNode={"roc_s0": {"sc": {"Top": {"all": {"phase_ck": 2}}}}})
            print(json.dumps({"reset": i2c.resettdc()}))
            """, port=emu.ports["target"])
        assert out["reset"] == "masterTDCs reset."
        assert emu.wait_log(lambda e: e.get("tdc_reset") == [0, 1, 2])


# --- datenraffinerie 1.0.15 (menu generation) ------------------------------------------------

DR10_SESSION = """
    import json, yaml
    from datenraffinerie.control_adapter import DAQSystem
    system = DAQSystem(server_hostname="127.0.0.1", server_port=server, data_port=data,
                       client_hostname="127.0.0.1", client_port=client)
    initial = {"daq": {"active_menu": "calibAndL1A", "menus": menus, "elinks_daq": [], "elinks_trg": [],
                       "zmqPushPull_port": 8888},
               "client": {"hw_type": "LDv3", "serverIP": "hc640259", "zmqPushPull_port": 8888}}
    system.initialize(initial)
    system.setup_data_taking_context()
    for i, n in enumerate(events):
        system.configure({"daq": {"active_menu": "calibAndL1A", "menus": {"calibAndL1A": {"NEvents": n}}}})
        system.take_data(f"{out}/run{i}.raw")
    system.tear_down_data_taking_context()
    print(json.dumps({"done": True}))
"""


def test_datenraffinerie_1_0_daq_system_takes_data_through_the_daq_client(tmp_path):
    pytest.importorskip("datenraffinerie.control_adapter")
    pytest.importorskip("datenraffinerie.dict_utils")
    data = free_port()
    with running_emulator(tmp_path) as emu:
        run_client(DR10_SESSION, server=emu.ports["server"], client=emu.ports["client"], data=data,
                   menus=MENU_CONFIG, events=[50, 80], out=str(tmp_path))
        # DR moves a file as soon as the server is `configured`: wait until the client closed it
        emu.wait_log(lambda e: e.get("event") == "file" and e["records"] == 240)
        commands = [(e["server"], e["command"]) for e in emu.log() if "command" in e]
        assert ("client", "initialize") in commands and ("daq", "status") in commands
    first = read_frames((tmp_path / "run0.raw").read_bytes(), "run0.raw")
    second = read_frames((tmp_path / "run1.raw").read_bytes(), "run1.raw")
    assert np.array_equal(first.event, np.repeat(np.arange(50), 3))
    assert np.array_equal(second.event, np.repeat(np.arange(80), 3))
    menu = {**MENU_CONFIG["calibAndL1A"], "NEvents": 50}
    expected = expected_words(50, RunSettings(50, True, settings_identity(menu, "calibAndL1A")))
    assert np.array_equal(first.words, expected)


# --- datenraffinerie 0.1.2 (2021 generation) ---------------------------------------------------

DR012_SESSION = """
    import json, yaml
    from datenraffinerie.control_adapter import DAQSystem, TargetAdapter
    target = TargetAdapter("127.0.0.1", target_port)
    target.configure({"roc_s0": {"ReferenceVoltage": {0: {"Calib": 256}}}})
    tdc = target.resettdc()
    power = target.read_pwr()
    daq_config = {
        "server": {"NEvents": 40, "zmqPushPull_port": str(data), "l1a_generator_settings": [
            {"name": "A", "enable": 1, "BX": 16, "flavor": "CALPULINT", "length": 1, "prescale": 0,
             "followMode": "DISABLE"}], "l1a_settings": {"bx_spacing": 43}},
        "client": {"hw_type": "LD", "serverIP": "127.0.0.1", "data_push_port": data}}
    system = DAQSystem("127.0.0.1", server, "127.0.0.1", client, daq_config)
    system.take_data(f"{out}/run0.raw")
    system.configure({"server": {"NEvents": 25}})
    system.take_data(f"{out}/run1.raw")
    system.tear_down_data_taking_context()
    print(json.dumps({"tdc": tdc, "power": sorted(power)}))
"""


def test_datenraffinerie_0_1_2_target_adapter_and_daq_system(tmp_path):
    if not (DR012 / "datenraffinerie" / "control_adapter.py").exists():
        pytest.skip(f"datenraffinerie 0.1.2 not installed at {DR012} (see tests/clients.txt)")
    pytest.importorskip("luigi.freezing")  # its config_utilities imports luigi
    data = free_port()
    with running_emulator(tmp_path, "--generation", "2021") as emu:
        out = run_client(DR012_SESSION, pythonpath=DR012, server=emu.ports["server"],
                         client=emu.ports["client"], target_port=emu.ports["target"], data=data,
                         out=str(tmp_path))
        assert sorted(out["tdc"]) == ["roc_s0", "roc_s1", "roc_s2"] and out["power"] == sorted(out["tdc"])
        emu.wait_log(lambda e: e.get("event") == "file" and e["records"] == 75)
        assert [r["tdc_ok"] for r in emu.runs()] == [[True] * 3, [True] * 3]
        handshakes = [e for e in emu.log() if e.get("handshake") == "yaml"]
        assert {e["server"] for e in handshakes} == {"daq", "client", "slow_control"}
    assert np.array_equal(read_frames((tmp_path / "run0.raw").read_bytes()).event, np.repeat(np.arange(40), 3))
    assert np.array_equal(read_frames((tmp_path / "run1.raw").read_bytes()).event, np.repeat(np.arange(25), 3))
