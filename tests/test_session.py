"""The DAQ session against the real emulator process, over loopback sockets."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest
import yaml

from conftest import EXAMPLES

from raffinerie.config.network import Host, Network
from raffinerie.daq.runs import characterisation_modes, decode_run
from raffinerie.daq.session import BackendError, DaqSession, config_diff
from raffinerie.emulator.process import EmulatorProcess

TARGET = yaml.safe_load((EXAMPLES / "init" / "injection.yaml").read_text())
DAQ = {"server": {"NEvents": 300, "NChips": 3, "l1a_generator_settings": [
    {"name": "A", "enable": 1, "BX": 16, "flavor": "CALPULINT"}]}, "client": {}}


def with_calib(calib: int) -> dict:
    target = yaml.safe_load(yaml.safe_dump(TARGET))
    for chip in target.values():
        for half in (0, 1):
            chip["ReferenceVoltage"][half]["Calib"] = calib
    return target


def session(emulator: EmulatorProcess, timeout: float = 5.0) -> DaqSession:
    net = dataclasses.replace(emulator.network, timeout=timeout)
    return DaqSession(net, net.data)


@pytest.fixture(scope="module")
def emulator():
    with EmulatorProcess(seed=1) as emu:
        yield emu


def decode(raw: bytes, target: dict):
    return decode_run(raw, "stream", characterisation_modes(target, 3))


def test_config_diff_sends_only_changes():
    current = {"roc_s0": {"Top": {0: {"phase_strobe": 1, "RunL": 1}}, "ch": {1: {"trim_inv": 3}}}}
    wanted = {"roc_s0": {"Top": {0: {"phase_strobe": 2, "RunL": 1}}, "ch": {1: {"trim_inv": 3}}}}
    assert config_diff(current, wanted) == {"roc_s0": {"Top": {0: {"phase_strobe": 2}}}}
    assert config_diff(wanted, wanted) == {}
    assert config_diff({"a": 1}, {"a": True}) == {"a": True}


def test_acquire_points_over_real_sockets(emulator):
    with session(emulator) as s:
        runs = [s.acquire(with_calib(calib), DAQ) for calib in (0, 512, 512)]
        state = s.target.request("read", {"roc_s2": {"ReferenceVoltage": {1: None}}})
    tables = [decode(r.raw, TARGET).summary() for r in runs]
    for t in tables:
        assert len(t["chip"]) == 234 and (t["n_events"] == 300).all()
    assert yaml.safe_load(state)["roc_s2"]["ReferenceVoltage"][1]["Calib"] == 512
    assert tables[1]["tot_efficiency"].max() == 1 and tables[0]["tot_efficiency"].max() == 0
    assert runs[1].raw != runs[2].raw  # a repeat has its own noise


def test_refused_configuration_names_the_problem(emulator):
    bad = with_calib(0)
    bad["roc_s0"]["ReferenceVoltage"][0]["Calib"] = 5000
    with session(emulator) as s:
        with pytest.raises(BackendError) as err:
            s.acquire(bad, DAQ)
    text = str(err.value)
    assert "target at 127.0.0.1:" in text and "refused 'initialize'" in text
    assert "roc_s0.ReferenceVoltage.0.Calib" in text and "12-bit" in text


def test_start_is_retried_while_links_align():
    with EmulatorProcess(extra_args=["--align-retries", "3"]) as emu:
        with session(emu) as s:
            run = s.acquire(TARGET, DAQ)
            run2 = s.acquire(with_calib(256), DAQ)
    assert decode(run.raw, TARGET).halves.good.all() and run2.messages > 0


def test_dropped_stream_is_an_error_not_a_hang():
    with EmulatorProcess(extra_args=["--drop-after", "100"]) as emu:
        with session(emu, timeout=1.0) as s:
            t0 = time.monotonic()
            with pytest.raises(BackendError, match=r"data stream from 127.0.0.1:\d+ stopped after \d+ data messages"):
                s.acquire(TARGET, DAQ)
            assert time.monotonic() - t0 < 10


def test_bit_slipped_halves_are_recorded_as_corruption():
    with EmulatorProcess(extra_args=["--bitslip", "0.05"]) as emu:
        with session(emu) as s:
            run = s.acquire(TARGET, DAQ)
    decoded = decode(run.raw, TARGET)
    bad = ~decoded.halves.good
    assert 0 < bad.sum() < 0.15 * bad.size
    assert set(decoded.halves.corruption[bad]) <= {3, 7}
    table = decoded.summary()
    assert (table["n_events"] < 300).any() and (table["n_events"] > 250).all()


def test_backend_answering_with_an_error():
    with EmulatorProcess(extra_args=["--error-on", "configure"]) as emu:
        with session(emu) as s:
            s.acquire(TARGET, DAQ)  # initialize is fine
            with pytest.raises(BackendError, match=r"target at 127.0.0.1:\d+ refused 'configure'"):
                s.acquire(with_calib(64), DAQ)


def test_backend_that_stops_answering():
    with EmulatorProcess(extra_args=["--silent-after", "2"]) as emu:
        with session(emu, timeout=0.5) as s:
            with pytest.raises(BackendError, match=r"did not answer 'start' within 0.5 s"):
                s.acquire(TARGET, DAQ)


def test_backend_that_is_not_there():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = Host("127.0.0.1", port)
    net = Network(None, host, host, None, "nobody", 0.3, host)
    with DaqSession(net, host) as s:
        with pytest.raises(BackendError, match=rf"target at 127.0.0.1:{port} did not answer 'initialize'"):
            s.acquire(TARGET, DAQ)


def test_raff_emulator_command_serves_on_chosen_ports(raff, tmp_path):
    import json
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "emulator", "--server-port", "0",
                             "--target-port", "0", "--data-port", "0", "--announce", "--seed", "5"],
                            stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(proc.stdout.readline())
        net = Network(None, Host("127.0.0.1", ports["server"]), Host("127.0.0.1", ports["target"]),
                      None, "emu", 5.0)
        with DaqSession(net, Host("127.0.0.1", ports["data"])) as s:
            assert s.acquire(TARGET, DAQ).messages > 0
    finally:
        proc.terminate()
        assert proc.wait(5) == 0
