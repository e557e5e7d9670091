"""The DAQ session against the real emulator process, over loopback sockets, in both generations."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES

from raffinerie.config.daqconfig import Generation
from raffinerie.config.network import Host, Network, Protocols, Readout, SlowControl
from raffinerie.daq.readout import ClientReadout
from raffinerie.daq.runs import characterisation_modes, decode_run
from raffinerie.daq.session import BackendError, DaqSession, config_diff
from raffinerie.daq.slowcontrol import changes_phase, differences
from raffinerie.emulator.process import EmulatorProcess
from raffinerie.errors import RaffError

TARGET = yaml.safe_load((EXAMPLES / "init" / "injection.yaml").read_text())
DAQ_2021 = {"server": {"NEvents": 300, "NChips": 3, "zmqPushPull_port": 8888, "l1a_generator_settings": [
    {"name": "A", "enable": 1, "BX": 16, "flavor": "CALPULINT"}]}, "client": {}}
DAQ_MENUS = {"server": {"NChips": 3, "zmqPushPull_port": 8888, "active_menu": "calibAndL1A", "menus": {
    "calibAndL1A": {"NEvents": 300, "bxCalib": 10, "bxL1A": 32},
    "randomL1A": {"NEvents": 300, "bx_min": 45}}}, "client": {"hw_type": "LDv3"}}
DAQ = {Generation.MENUS: DAQ_MENUS, Generation.Y2021: DAQ_2021}
GENERATIONS = [Generation.MENUS, Generation.Y2021]


def with_calib(calib: int) -> dict:
    target = yaml.safe_load(yaml.safe_dump(TARGET))
    for chip in target.values():
        for half in (0, 1):
            chip["ReferenceVoltage"][half]["Calib"] = calib
    return target


def session(emulator: EmulatorProcess, timeout: float = 5.0, readout: Readout = Readout.PULL,
            output: Path | None = None, readback: bool = False) -> DaqSession:
    net = dataclasses.replace(emulator.network, timeout=timeout, readout=readout, client_output=output)
    return DaqSession(net, net.data, net.protocols(DAQ[net.generation]), readback)


@pytest.fixture(scope="module", params=GENERATIONS, ids=lambda g: g.value)
def emulator(request):
    with EmulatorProcess(seed=1, generation=request.param) as emu:
        yield emu


def decode(raw: bytes, target: dict):
    return decode_run(raw, "stream", characterisation_modes(target, 3))


def test_config_diff_sends_only_changes():
    current = {"roc_s0": {"Top": {0: {"phase_strobe": 1, "RunL": 1}}, "ch": {1: {"trim_inv": 3}}}}
    wanted = {"roc_s0": {"Top": {0: {"phase_strobe": 2, "RunL": 1}}, "ch": {1: {"trim_inv": 3}}}}
    assert config_diff(current, wanted) == {"roc_s0": {"Top": {0: {"phase_strobe": 2}}}}
    assert config_diff(wanted, wanted) == {}
    assert config_diff({"a": 1}, {"a": True}) == {"a": True}


def test_phase_changes_and_readback_differences():
    assert changes_phase({"roc_s1": {"Top": {0: {"phase_ck": 3}}}})
    assert changes_phase({"roc_s0": {"Top": {0: {"phase_strobe": 3}}}})
    assert not changes_phase({"roc_s0": {"ReferenceVoltage": {0: {"Calib": 3}}}})
    wrote = {"roc_s0": {"ReferenceVoltage": {0: {"Calib": 3, "IntCtest": 1}}}}
    read = {"roc_s0": {"ReferenceVoltage": {"0": {"Calib": 0, "IntCtest": 1}}}}
    assert differences(wrote, read) == ["roc_s0.ReferenceVoltage.0.Calib: wrote 3, read 0"]


def test_acquire_points_over_real_sockets(emulator):
    gen = emulator.network.generation
    with session(emulator) as s:
        runs = [s.acquire(with_calib(calib), DAQ[gen]) for calib in (0, 512, 512)]
        state = s.target.read({"roc_s2": {"ReferenceVoltage": {1: {"Calib": None}}}})
        assert s.tdc_resets == 1  # after the power-on configuration; no phase change since
    tables = [decode(r.raw, TARGET).summary() for r in runs]
    for t in tables:
        assert len(t["chip"]) == 234 and (t["n_events"] == 300).all()
    assert state["roc_s2"]["ReferenceVoltage"][1]["Calib"] == 512
    assert tables[1]["tot_efficiency"].max() == 1 and tables[0]["tot_efficiency"].max() == 0
    assert runs[1].raw != runs[2].raw  # a repeat has its own noise


@pytest.mark.parametrize("gen", GENERATIONS, ids=lambda g: g.value)
def test_readout_through_the_daq_client(gen, tmp_path):
    # its own emulator: once initialized, a daq-client stays connected and takes its share
    with EmulatorProcess(seed=1, generation=gen) as emu, \
            session(emu, readout=Readout.DAQ_CLIENT, output=tmp_path / "daq") as s:
        runs = [s.acquire(with_calib(calib), DAQ[gen]) for calib in (0, 512)]
    tables = [decode(r.raw, TARGET).summary() for r in runs]
    assert all((t["n_events"] == 300).all() for t in tables)
    assert tables[1]["tot_efficiency"].max() == 1
    assert list((tmp_path / "daq").iterdir()) == []  # each run's folder was emptied and removed


def test_readback_passes_on_a_sound_board(emulator):
    gen = emulator.network.generation
    with session(emulator, readback=True) as s:
        s.acquire(with_calib(100), DAQ[gen])
        s.acquire(with_calib(200), DAQ[gen])


def test_refused_configuration_names_the_problem(emulator):
    gen = emulator.network.generation
    bad = with_calib(0)
    bad["roc_s0"]["ReferenceVoltage"][0]["Calib"] = 5000
    with session(emulator) as s:
        with pytest.raises(RaffError, match="Calib = 5000 does not fit.*nothing was sent"):
            s.acquire(bad, DAQ[gen])  # the session checks registers before it sends them
        with pytest.raises(BackendError) as err:
            s.target.initialize(bad)  # the board refuses what reaches it anyway
    text = str(err.value)
    assert "slow control at 127.0.0.1:" in text and "refused" in text
    assert "Calib" in text


def test_start_is_retried_while_links_align():
    for gen in GENERATIONS:
        with EmulatorProcess(generation=gen, extra_args=["--align-retries", "3"]) as emu:
            with session(emu) as s:
                run = s.acquire(TARGET, DAQ[gen])
                run2 = s.acquire(with_calib(256), DAQ[gen])
        assert decode(run.raw, TARGET).halves.good.all() and run2.messages > 0


def test_dropped_stream_is_an_error_not_a_hang():
    with EmulatorProcess(extra_args=["--drop-after", "100"]) as emu:
        with session(emu, timeout=1.0) as s:
            t0 = time.monotonic()
            with pytest.raises(BackendError, match=r"data stream from 127.0.0.1:\d+ stopped after \d+ data messages"):
                s.acquire(TARGET, DAQ_MENUS)
            assert time.monotonic() - t0 < 10


def test_bit_slipped_halves_are_recorded_as_corruption():
    with EmulatorProcess(extra_args=["--bitslip", "0.05"]) as emu:
        with session(emu) as s:
            run = s.acquire(TARGET, DAQ_MENUS)
    decoded = decode(run.raw, TARGET)
    bad = ~decoded.halves.good
    assert 0 < bad.sum() < 0.15 * bad.size
    assert set(decoded.halves.corruption[bad]) <= {3, 7}
    table = decoded.summary()
    assert (table["n_events"] < 300).any() and (table["n_events"] > 250).all()


@pytest.mark.parametrize("gen,command,message", [
    (Generation.MENUS, "set", r"slow control at 127.0.0.1:\d+ refused 'set'"),
    (Generation.Y2021, "resettdc", r"slow control at 127.0.0.1:\d+ answered 'resettdc' with [\"']E: "),
    (Generation.Y2021, "configure", r"daq server at 127.0.0.1:\d+ answered 'configure' with \"error: "),
    (Generation.MENUS, "configure", r"daq server at 127.0.0.1:\d+ answered 'configure' with 'error'"),
])
def test_backend_answering_with_an_error(gen, command, message):
    with EmulatorProcess(generation=gen, extra_args=["--error-on", command]) as emu:
        with session(emu) as s:
            with pytest.raises(BackendError, match=message):
                s.acquire(TARGET, DAQ[gen])
                s.acquire(with_calib(64), DAQ[gen])


def test_backend_that_stops_answering():
    with EmulatorProcess(extra_args=["--silent-after", "8"]) as emu:
        with session(emu, timeout=0.5) as s:
            t0 = time.monotonic()
            # silent, its data stream stops too: under load either timer may see it first
            with pytest.raises(BackendError, match=r"did not answer '.*' within 0.5 s|nothing for 0.5 s"):
                for calib in range(0, 1000, 100):
                    s.acquire(with_calib(calib), DAQ_MENUS)
            assert time.monotonic() - t0 < 5


def test_backend_that_is_not_there():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = Host("127.0.0.1", port)
    net = Network(None, host, host, None, "nobody", 0.3, host)
    with DaqSession(net, host, net.protocols(DAQ_MENUS)) as s:
        with pytest.raises(BackendError, match=rf"slow control at 127.0.0.1:{port} did not answer 'describe'"):
            s.acquire(TARGET, DAQ_MENUS)


@pytest.mark.parametrize("speaks,told,setting", [
    (Generation.MENUS, Generation.Y2021, "slow_control"), (Generation.Y2021, Generation.MENUS, "slow_control"),
    (Generation.MENUS, Generation.Y2021, "generation"), (Generation.Y2021, Generation.MENUS, "generation")])
def test_a_server_of_the_other_generation_is_named(speaks, told, setting):
    """One line, bounded time, naming the host, the command and the setting to try."""
    daq = DAQ[told]
    with EmulatorProcess(generation=speaks) as emu:
        slow = None if setting == "slow_control" else emu.network.slow_control
        net = dataclasses.replace(emu.network, timeout=0.7, generation=told, slow_control=slow)
        with DaqSession(net, net.data, net.protocols(daq)) as s:
            t0 = time.monotonic()
            with pytest.raises(BackendError) as err:
                s.acquire(TARGET, daq)
            assert time.monotonic() - t0 < 5
    text = str(err.value)
    assert "\n" not in text and "127.0.0.1:" in text
    assert f"set `{setting}: " in text, text


def test_daq_client_that_writes_two_files_or_none(tmp_path):
    class Client:
        def stop(self):
            pass
    readout = ClientReadout(Client(), tmp_path, 0.3)
    readout.folder = tmp_path / "run"
    readout.folder.mkdir()
    with pytest.raises(BackendError, match=r"wrote no file into .*run within 0.3 s"):
        readout.collect()
    (readout.folder / "raff0.raw").write_bytes(b"x")
    (readout.folder / "raff1.raw").write_bytes(b"y")
    with pytest.raises(BackendError, match=r"wrote 2 files for one run into .*run \(raff0.raw, raff1.raw\)"):
        readout.collect()


def test_raff_emulator_command_serves_on_chosen_ports(tmp_path):
    import json
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "emulator", "--server-port", "0",
                             "--target-port", "0", "--data-port", "0", "--client-port", "0",
                             "--announce", "--seed", "5", "--generation", "2021"],
                            stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(proc.stdout.readline())
        assert ports["generation"] == "2021" and ports["slow_control"] == "zmq-i2c"
        net = Network(None, Host("127.0.0.1", ports["server"]), Host("127.0.0.1", ports["target"]),
                      None, "emu", 5.0)
        protocols = net.protocols(DAQ_2021)
        assert protocols == Protocols(Generation.Y2021, SlowControl.ZMQ_I2C, Readout.PULL)
        with DaqSession(net, Host("127.0.0.1", ports["data"]), protocols) as s:
            assert s.acquire(TARGET, DAQ_2021).messages > 0
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


@pytest.fixture
def fake_server():
    """A REP socket on loopback that answers every request with the frames given."""
    import threading

    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    frames: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            if sock.poll(50):
                sock.recv_multipart()
                sock.send_multipart(frames)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield Host("127.0.0.1", port), frames
    stop.set()
    thread.join(2)
    sock.close(0)
    ctx.term()


@pytest.mark.parametrize("reply,needle", [
    ([b"configured\x1b[31m\nraff: error: all points lost"], r"\x1b[31m\nraff: error"),
    ([b"status: success", b"extra"], "2-part message"),
])
def test_a_hostile_reply_cannot_forge_lines(fake_server, reply, needle):
    host, frames = fake_server
    frames[:] = reply
    net = Network(None, host, host, None, "fake", 1.0, host)
    with DaqSession(net, host, net.protocols(DAQ_MENUS)) as s:
        with pytest.raises(BackendError) as err:
            s.acquire(TARGET, DAQ_MENUS)
    text = str(err.value)
    assert "\n" not in text and "\x1b" not in text and needle in text, text
