"""Network files, protocol defaults, menu-generation daq configs, and keys that ignore locations."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import EXAMPLES, assert_clean_error, shared

from raffinerie.config.daqconfig import (Generation, active_settings, daq_setting, server_override,
                                         without_locations)
from raffinerie.config.keys import ScanHasher, point_key
from raffinerie.config.network import Readout, SlowControl, load_network
from raffinerie.errors import RaffError

MENUS = {"server": {"active_menu": "calibAndL1A", "zmqPushPull_port": 8888,
                    "menus": {"calibAndL1A": {"NEvents": 5000, "bxCalib": 10}, "randomL1A": {"NEvents": 10}}},
         "client": {"serverIP": "hc640259", "zmqPushPull_port": 8888, "hw_type": "LDv3"}}
OLD = {"server": {"NEvents": 1000, "zmqPushPull_port": "8888", "delayScanData_port": "8889"},
       "client": {"serverIP": "hc640256", "data_push_port": 8888, "hw_type": "LD"}}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "network.yaml"
    path.write_text(text)
    return path


def test_datenraffinerie_network_files_load_with_defaults():
    net = load_network(shared("reference", "datenraffinerie-0.1.2", "tests", "configuration",
                              "network_config.yml"))
    assert net.generation is None and net.readout is Readout.PULL and net.board == "board@hc640256.cern.ch"
    assert net.protocols(OLD).generation is Generation.Y2021
    assert net.protocols(OLD).slow_control is SlowControl.ZMQ_I2C
    assert net.protocols(MENUS).generation is Generation.MENUS
    assert net.protocols(MENUS).slow_control is SlowControl.HCC


def test_example_network_files_load():
    menus = load_network(EXAMPLES / "network" / "testbeam-menus.yaml")
    assert (menus.generation, menus.slow_control, menus.readout) == \
        (Generation.MENUS, SlowControl.HCC, Readout.DAQ_CLIENT)
    assert menus.client_output == Path("/tmp/raffinerie-daq") and menus.board == "LD-0042"
    old = load_network(EXAMPLES / "network" / "emulator-2021.yaml")
    assert old.protocols(MENUS).generation is Generation.Y2021  # the file says so, whatever the config


def test_daq_client_readout_needs_a_client_and_its_folder(tmp_path):
    base = "server: {hostname: h, port: 6000}\ntarget: {hostname: h, port: 5555}\nreadout: daq-client\n"
    with pytest.raises(RaffError, match="needs `client:`"):
        load_network(write(tmp_path, base))
    with pytest.raises(RaffError, match="needs `client_output:`"):
        load_network(write(tmp_path, base + "client: {hostname: localhost, port: 6001}\n"))
    net = load_network(write(tmp_path, base + "client: {hostname: localhost, port: 6001}\n"
                                              "client_output: out\n"))
    assert net.client_output == tmp_path / "out"


def test_bad_protocol_settings_are_one_line_each(tmp_path, raff, libdir):
    main = libdir.main(libdir.daq())
    path = write(tmp_path, "server: {hostname: h, port: 6000}\ntarget: {hostname: h, port: 5555}\n"
                           "generation: 2022\nslow_control: i2c\nreadout: push\n")
    r = raff("plan", "scan", "-c", main, "--network", path)
    assert_clean_error(r, "generation", "slow_control", "readout")
    assert len([l for l in r.err.splitlines() if str(path) in l]) == 3


def test_menu_settings_are_read_from_the_active_menu():
    assert active_settings(MENUS) == {"NEvents": 5000, "bxCalib": 10}
    assert daq_setting(MENUS, "NEvents") == 5000 and daq_setting(OLD, "NEvents") == 1000
    routed = server_override(MENUS["server"], {"NEvents": 200, "zmqPushPull_port": 9})
    assert routed == {"zmqPushPull_port": 9, "menus": {"calibAndL1A": {"NEvents": 200}}}
    assert server_override(OLD["server"], {"NEvents": 200}) == {"NEvents": 200}


def test_location_settings_are_not_hashed():
    target = {"roc_s0": {"Top": {0: {"phase_strobe": 2}}}}
    moved = {"server": {**MENUS["server"], "zmqPushPull_port": 7777},
             "client": {**MENUS["client"], "serverIP": "daq-pc-2", "outputDirectory": "/data",
                        "run_type": "x"}}
    assert point_key(target, MENUS, "b", "summary") == point_key(target, moved, "b", "summary")
    other = {"server": {**MENUS["server"], "active_menu": "randomL1A"}, "client": MENUS["client"]}
    assert point_key(target, MENUS, "b", "summary") != point_key(target, other, "b", "summary")
    assert "zmqPushPull_port" not in without_locations(MENUS)["server"]
    places = [("target", "roc_s0", "Top", 0, "phase_strobe")]
    fast = list(ScanHasher({"target": target, "daq": moved}, [(places, [1, 2])], "b", "summary").keys())
    slow = [point_key({"roc_s0": {"Top": {0: {"phase_strobe": v}}}}, MENUS, "b", "summary") for v in (1, 2)]
    assert fast == slow


def test_menus_example_plans_with_the_menu_settings(raff, tmp_path):
    r = raff("plan", "pedestal_run_menus", "-c", EXAMPLES / "main_config.yaml", "--json",
             "--cache", tmp_path / "cache")
    assert r.code == 0, r.err
    assert '"to_acquire": 1' in r.out
