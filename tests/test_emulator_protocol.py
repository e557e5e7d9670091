"""The emulator speaks the real hexactrl-sw protocols (hexactrl-protocol.md).

Every test starts the real `raff emulator` process and drives it with plain
pyzmq over loopback, exactly as the protocol document says: handshakes,
wrappers, replies, states, self-ending runs, per-message archives, the
daq-client's files, PUSH round-robin, the master TDC, faults. Every socket
has a timeout and every process is killed at the end.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
import zmq

from conftest import EXAMPLES

from raffinerie.daq.rawformat import (ARCHIVE_HEADER, PREAMBLE, RECORD_BYTES, Frames, RawFormatError,
                                      channel_fields, check_halves, read_frames)

TIMEOUT_MS = 5000
MENU_CONFIG = {"calibAndL1A": {"NEvents": 100, "bxCalib": 10, "bxL1A": 32, "lengthCalib": 1,
                               "lengthL1A": 1, "prescale": 0, "repeatOffset": 200},
               "randomL1A": {"NEvents": 60, "bx_min": 45, "log2_rand_bx_period": 10}}
INJECTION = yaml.safe_load((EXAMPLES / "init" / "injection.yaml").read_text())
# chip-wide injected channels 10, 20, 40, 50 as (half, slot)
INJECTED_SLOTS = [(0, 10), (0, 20), (1, 4), (1, 14)]


# --- the emulator process and plain zmq clients ----------------------------------------

class Emulator:
    def __init__(self, proc: subprocess.Popen, ports: dict, log: Path):
        self.proc, self.ports, self.log_path = proc, ports, log
        self.ctx = zmq.Context()
        self.stderr = ""

    def req(self, which: str, timeout_ms: int = TIMEOUT_MS) -> "Req":
        return Req(self.ctx, self.ports[which], timeout_ms)

    def pull(self, port: int | None = None) -> zmq.Socket:
        sock = self.ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{port or self.ports['data']}")
        return sock

    def log(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def wait_log(self, predicate, timeout: float = 5.0) -> list[dict]:
        """Log entries matching `predicate`, once there is at least one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.log() if predicate(e)]
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no such log entry within {timeout} s:\n{self.log()}")

    def runs(self) -> list[dict]:
        return [e for e in self.log() if e.get("event") == "run"]


class Req:
    """A REQ socket with timeouts: a server that does not answer fails the test."""

    def __init__(self, ctx: zmq.Context, port: int, timeout_ms: int):
        self.sock = ctx.socket(zmq.REQ)
        for opt, value in ((zmq.RCVTIMEO, timeout_ms), (zmq.SNDTIMEO, timeout_ms), (zmq.LINGER, 0)):
            self.sock.setsockopt(opt, value)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def ask(self, *frames) -> str:
        self.sock.send_multipart([f if isinstance(f, bytes) else str(f).encode() for f in frames])
        return self.sock.recv_string()

    def ask_yaml(self, command: str, document) -> str:
        """menus: the command and its YAML as one two-frame message."""
        return self.ask(command, yaml.safe_dump(document))

    def handshake(self, command: str, document) -> str:
        """2021: the READY handshake, two exchanges."""
        ready = self.ask(command)
        assert "ready" in ready.lower(), ready
        return self.ask(document if isinstance(document, str) else yaml.safe_dump(document))

    def hcc(self, kind: str, args: dict | None = None, **flags) -> dict:
        request = {"type": kind, "status": "send", "args": args or {}, **flags}
        return yaml.safe_load(self.ask(yaml.safe_dump(request)))

    def silent(self, *frames, wait_ms: int = 700) -> bool:
        """True when the request gets no answer within `wait_ms`."""
        self.sock.setsockopt(zmq.RCVTIMEO, wait_ms)
        self.sock.send_multipart([f if isinstance(f, bytes) else str(f).encode() for f in frames])
        try:
            self.sock.recv()
            return False
        except zmq.Again:
            return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise AssertionError(f"the emulator did not announce itself within {timeout} s")
    return proc.stdout.readline()


@contextmanager
def running_emulator(tmp_path: Path, *args: str, ports: tuple[str, ...] = ("--server-port", "--target-port",
                                                                          "--client-port")):
    """`raff emulator --announce` on free ports, logging to tmp_path; killed at the end."""
    log = tmp_path / f"emulator-{time.monotonic_ns()}.jsonl"
    cmd = [sys.executable, "-m", "raffinerie", "emulator", "--announce", "--log", str(log)]
    for option in ports:
        cmd += [option, "0"]
    proc = subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    emu = None
    try:
        emu = Emulator(proc, json.loads(_first_line(proc, 20)), log)
        yield emu
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if emu is not None:
            emu.stderr = err
            emu.ctx.destroy(linger=0)


def menus_daq(port: int, active: str = "calibAndL1A", **menu) -> dict:
    menus = {name: dict(settings) for name, settings in MENU_CONFIG.items()}
    menus[active].update(menu)
    return {"daq": {"active_menu": active, "zmqPushPull_port": port, "menus": menus,
                    "elinks_daq": [{"idcode": 0, "name": "link0", "polarity": 0}]},
            "client": {"hw_type": "LDv3", "serverIP": "localhost", "zmqPushPull_port": port}}


def collect_run(pull: zmq.Socket, limit: int = 10000) -> list[bytes]:
    """Messages up to and including END_OF_RUN."""
    out = []
    for _ in range(limit):
        out.append(pull.recv())
        if out[-1] == b"END_OF_RUN":
            return out
    raise AssertionError("no END_OF_RUN")


def poll_until(req: Req, command: str, done, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = req.ask(command)
        if done(reply):
            return reply
        time.sleep(0.01)
    raise AssertionError(f"'{command}' never gave the wanted reply; last: {reply!r}")


def records(messages: list[bytes]):
    """Every data message decoded alone, then all records together (event, chip, words)."""
    frames = [read_frames(m, "message") for m in messages]
    return (np.concatenate([f.event for f in frames]), np.concatenate([f.chip for f in frames]),
            np.concatenate([f.words for f in frames]))


def toa_spread(words: np.ndarray, chips: np.ndarray, chip: int) -> float:
    """Median over the injected channels of one chip of the circular TOA spread (LSB)."""
    mine = chips == chip
    frames = Frames(chips[mine], chips[mine], words[mine])
    _, _, _, toa, _ = channel_fields(frames, np.ones((3, 2), bool))
    spreads = []
    for half, slot in INJECTED_SLOTS:
        angle = toa[:, half, slot].astype(float) * 2 * np.pi / 1024  # TOA wraps at 1024
        r = min(abs(np.exp(1j * angle).mean()), 1 - 1e-12)
        spreads.append(np.sqrt(-2 * np.log(r)) * 1024 / (2 * np.pi))
    return float(np.median(spreads))


def start_menus_run(daq: Req, config: dict) -> None:
    assert daq.ask_yaml("initialize", config) == "initialized"
    assert daq.ask_yaml("configure", config) == "configured"


# --- menus: daq server ---------------------------------------------------------------------

def test_announce_line_names_every_port_and_the_protocols(tmp_path):
    with running_emulator(tmp_path) as emu:
        a = emu.ports
        assert set(a) == {"host", "server", "target", "data", "client", "generation", "slow_control", "board", "pid"}
        assert a["data"] is None and a["generation"] == "menus" and a["slow_control"] == "hcc"
        assert a["pid"] == emu.proc.pid and len({a["server"], a["target"], a["client"]}) == 3
    with running_emulator(tmp_path, "--generation", "2021", "--data-port", "0") as emu:
        assert emu.ports["generation"] == "2021" and emu.ports["slow_control"] == "zmq-i2c"
        assert isinstance(emu.ports["data"], int) and emu.ports["data"] > 0


def test_menus_run_ends_by_itself_and_every_message_is_an_archive(tmp_path):
    port = free_port()
    with running_emulator(tmp_path) as emu:
        daq = emu.req("server")
        assert daq.ask("status") == "created"
        start_menus_run(daq, menus_daq(port))
        pull = emu.pull(port)  # bound on the config's zmqPushPull_port at initialize
        time.sleep(0.2)
        assert daq.ask("STATUS") == "configured"  # commands are lower-cased
        assert daq.ask("start") == "running"
        messages = collect_run(pull)
        assert daq.ask("status") == "configured"  # the state changes when END_OF_RUN is sent
        assert messages[0] == b"START_RUN_HGCROC" and messages[-1] == b"END_OF_RUN"
        data = messages[1:-1]
        assert len(data) > 1
        for m in data:  # each a complete archive whose records all keep their tail
            assert m.startswith(ARCHIVE_HEADER + PREAMBLE) and (len(m) - 45) % RECORD_BYTES == 0
        event, chip, words = records(data)
        assert np.array_equal(event, np.repeat(np.arange(100), 3)) and np.array_equal(chip, np.tile([0, 1, 2], 100))
        with pytest.raises(RawFormatError):
            read_frames(b"".join(data))  # concatenated messages are not one archive
        assert emu.runs()[-1]["events"] == 100


def test_menus_runs_use_the_active_menu_only(tmp_path):
    port = free_port()
    with running_emulator(tmp_path) as emu:
        daq = emu.req("server")
        config = menus_daq(port, active="randomL1A")
        start_menus_run(daq, config)
        pull = emu.pull(port)
        time.sleep(0.2)
        assert daq.ask("start") == "running"
        event, _, _ = records(collect_run(pull)[1:-1])
        assert event.max() == 59  # randomL1A's NEvents
        config["daq"]["active_menu"] = "calibAndL1A"
        config["daq"]["menus"] = {"calibAndL1A": {"NEvents": 30}}  # configure sends only this menu
        assert daq.ask_yaml("configure", config) == "configured"
        assert daq.ask("start") == "running"
        event, _, _ = records(collect_run(pull)[1:-1])
        assert event.max() == 29
        runs = emu.runs()
        assert [r["injecting"] for r in runs] == [False, True]


def test_menus_state_machine_like_daqfsm(tmp_path):
    with running_emulator(tmp_path, "--data-port", "0") as emu:
        daq = emu.req("server")
        config = menus_daq(free_port())
        assert daq.ask_yaml("initialize", config) == "initialized"
        assert daq.ask("start") == "error"         # no menu configured since initialize
        assert daq.ask_yaml("configure", config) == "error"   # only destroy leaves error
        assert daq.ask("destroy") == "created"
        assert daq.ask("stop") == "created"        # no transition: state stays
        assert daq.ask_yaml("initialize", config) == "initialized"
        assert daq.ask_yaml("configure", config) == "configured"
        assert daq.ask("frobnicate") == "error"    # unknown command
        assert daq.ask("destroy") == "created"
        assert daq.ask_yaml("initialize", {"nodaq": 1}) == "initialized"  # only the daq key is read
        assert daq.ask_yaml("configure", {"daq": {"active_menu": "nosuchmenu"}}) == "configured"
        assert daq.ask("start") == "error"


def test_menus_stop_ends_a_run_early(tmp_path):
    port = free_port()
    with running_emulator(tmp_path, "--trigger-rate", "200") as emu:
        daq = emu.req("server")
        start_menus_run(daq, menus_daq(port, NEvents=2000))
        pull = emu.pull(port)
        time.sleep(0.2)
        assert daq.ask("start") == "running"
        messages = [pull.recv()]                        # START_RUN_HGCROC
        while len(messages) < 2 or records(messages[1:])[0].max() < 1:
            messages.append(pull.recv())                # until a second event has been sent
        assert daq.ask("stop") == "configured"
        messages += collect_run(pull)
        event, _, _ = records(messages[1:-1])
        assert 0 < event.max() < 1999


def test_config_command_without_its_yaml_frame_kills_the_menus_server(tmp_path):
    with running_emulator(tmp_path) as emu:
        assert emu.req("server", 700).silent("initialize")
        assert emu.req("server", 700).silent("status")            # dead for everyone
        assert emu.req("target").hcc("reset")["status"] == "success"  # the others live on
    assert "died" in emu.stderr and "YAML frame" in emu.stderr


def test_menus_initialize_rebinds_the_data_port_unless_fixed(tmp_path):
    first, second = free_port(), free_port()
    with running_emulator(tmp_path) as emu:
        daq = emu.req("server")
        start_menus_run(daq, menus_daq(first))
        config = menus_daq(second, NEvents=10)
        start_menus_run(daq, config)
        pull = emu.pull(second)
        time.sleep(0.3)
        assert daq.ask("start") == "running"
        assert len(collect_run(pull)) > 2
        start_menus_run(daq, config)      # the same port again: unbound and bound anew
        time.sleep(0.3)                   # the puller reconnects by itself
        assert daq.ask("start") == "running"
        assert len(collect_run(pull)) > 2
    with running_emulator(tmp_path, "--data-port", "0") as emu:
        daq = emu.req("server")
        start_menus_run(daq, menus_daq(first, NEvents=10))   # the config's port is ignored
        pull = emu.pull()
        time.sleep(0.2)
        assert daq.ask("start") == "running"
        assert collect_run(pull)[0] == b"START_RUN_HGCROC"


def test_trigger_rate_paces_the_run_and_the_server_stays_responsive(tmp_path):
    port = free_port()
    with running_emulator(tmp_path, "--trigger-rate", "400") as emu:
        daq = emu.req("server")
        start_menus_run(daq, menus_daq(port, NEvents=400))
        pull = emu.pull(port)
        time.sleep(0.2)
        start = time.monotonic()
        assert daq.ask("start") == "running"
        assert pull.recv() == b"START_RUN_HGCROC"
        pull.recv()
        first_data = time.monotonic() - start
        t = time.monotonic()
        assert daq.ask("status") == "running"
        assert time.monotonic() - t < 0.2          # answered while the run goes on
        assert emu.req("target").hcc("get", {"roc_s0": {"Top": {0: None}}})["status"] == "success"
        reply = poll_until(daq, "status", lambda r: r != "running")
        took = time.monotonic() - start
        assert reply == "configured"
        assert first_data < 0.4 and 0.9 < took < 2.5   # 400 events at 400 Hz: one second


# --- menus: daq-client and the stream ---------------------------------------------------------

def client_up(emu: Emulator, port: int, out: Path, run_type: str = "run") -> Req:
    client = emu.req("client")
    assert client.ask("status") == "created"
    assert client.ask_yaml("initialize", {"client": {"serverIP": "127.0.0.1", "zmqPushPull_port": port}}) \
        == "initialized"
    assert client.ask_yaml("configure", {"client": {"outputDirectory": str(out), "run_type": run_type}}) \
        == "configured"
    assert client.ask("start") == "running"
    return client


def wait_files(emu: Emulator, n: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        files = [e for e in emu.log() if e.get("event") == "file"]
        if len(files) >= n:
            return files
        time.sleep(0.02)
    raise AssertionError(f"the daq-client closed fewer than {n} files: {emu.log()}")


def test_menus_daq_client_writes_one_raw_file_per_run(tmp_path):
    port, out = free_port(), tmp_path / "out"
    out.mkdir()
    with running_emulator(tmp_path) as emu:
        daq = emu.req("server")
        start_menus_run(daq, menus_daq(port, NEvents=50))
        client = client_up(emu, port, out)
        time.sleep(0.3)
        for _ in range(2):
            assert daq.ask("start") == "running"
            poll_until(daq, "status", lambda r: r == "configured")
        files = wait_files(emu, 2)
        assert [Path(f["path"]).name for f in files] == ["run0.raw", "run1.raw"]
        assert all(f["complete"] and f["records"] == 150 for f in files)
        for name in ("run0.raw", "run1.raw"):
            data = (out / name).read_bytes()
            assert len(data) == 45 + 150 * RECORD_BYTES - 40   # the last record without its tail
            frames = read_frames(data, name)
            assert np.array_equal(frames.event, np.repeat(np.arange(50), 3))
        assert client.ask("status") == "running"
        assert client.ask("stop") == "configured"
        assert client.ask("start") == "running"   # N counts from 0 again since start
        assert daq.ask("start") == "running"
        assert Path(wait_files(emu, 3)[-1]["path"]).name == "run0.raw"


def test_push_round_robin_splits_a_run_between_two_pullers(tmp_path):
    port, out = free_port(), tmp_path / "out"
    out.mkdir()
    with running_emulator(tmp_path) as emu:
        daq = emu.req("server")
        start_menus_run(daq, menus_daq(port, NEvents=400))
        client_up(emu, port, out)
        ours = emu.pull(port)
        time.sleep(0.4)
        assert daq.ask("start") == "running"
        poll_until(daq, "status", lambda r: r == "configured")
        got = []
        ours.setsockopt(zmq.RCVTIMEO, 1000)
        try:
            while True:
                got.append(ours.recv())
        except zmq.Again:
            pass
        mine = [m for m in got if m.startswith(ARCHIVE_HEADER)]
        theirs = wait_files(emu, 1)[0]["records"]
        mine_records = sum(len(read_frames(m)) for m in mine)
        assert mine_records > 0 and theirs > 0               # each got part of the run
        assert mine_records + theirs == 1200


# --- master TDC ---------------------------------------------------------------------------------

def hcc_tdc_reset(sc: Req) -> None:
    for value in (0, 1):
        counters = {f"roc_s{c}": {"MasterTdc": {0: {"START_COUNTER": value}, 1: {"START_COUNTER": value}}}
                    for c in range(3)}
        assert sc.hcc("set", counters)["status"] == "success"


def calib(value: int, phase: int = 2) -> dict:
    return {f"roc_s{c}": {"ReferenceVoltage": {0: {"Calib": value}, 1: {"Calib": value}},
                          "Top": {0: {"phase_strobe": phase}}} for c in range(3)}


def menus_run_words(daq: Req, pull: zmq.Socket):
    assert daq.ask("start") == "running"
    event, chip, words = records(collect_run(pull)[1:-1])
    return chip, words


def test_toa_is_garbage_after_a_phase_change_until_the_tdc_reset(tmp_path):
    port = free_port()
    with running_emulator(tmp_path) as emu:
        sc, daq = emu.req("target"), emu.req("server")
        assert sc.hcc("reset")["status"] == "success"
        assert sc.hcc("set", INJECTION)["status"] == "success"
        assert sc.hcc("set", calib(1024))["status"] == "success"
        start_menus_run(daq, menus_daq(port, NEvents=200))
        pull = emu.pull(port)
        time.sleep(0.2)
        chip, words = menus_run_words(daq, pull)          # after power-on: not reset yet
        assert emu.runs()[-1]["tdc_ok"] == [False, False, False]
        assert toa_spread(words, chip, 0) > 100
        hcc_tdc_reset(sc)
        assert emu.wait_log(lambda e: e.get("tdc_reset") == [0, 1, 2])
        chip, words = menus_run_words(daq, pull)
        assert emu.runs()[-1]["tdc_ok"] == [True, True, True]
        assert all(toa_spread(words, chip, c) < 10 for c in range(3))
        phase = {"roc_s1": {"Top": {0: {"phase_strobe": 4}}}}
        assert sc.hcc("set", phase)["status"] == "success"
        assert emu.log()[-1]["phase_changed"] == [1]
        chip, words = menus_run_words(daq, pull)
        assert emu.runs()[-1]["tdc_ok"] == [True, False, True]
        assert toa_spread(words, chip, 0) < 10 and toa_spread(words, chip, 1) > 100
        assert sc.hcc("set", phase)["status"] == "success"   # the same value: no change
        assert emu.log()[-1]["phase_changed"] == []
        hcc_tdc_reset(sc)
        chip, words = menus_run_words(daq, pull)
        assert emu.runs()[-1]["tdc_ok"] == [True, True, True]
        assert toa_spread(words, chip, 1) < 10


# --- HCC slow control ----------------------------------------------------------------------------

def test_hcc_describe_set_get_reset_and_errors(tmp_path):
    with running_emulator(tmp_path) as emu:
        sc = emu.req("target", 20000)
        reply = sc.hcc("describe")
        assert reply["status"] == "success" and reply["type"] == "describe"
        (board, layout), = reply["args"].items()
        assert sorted(layout) == ["roc_s0", "roc_s1", "roc_s2"]
        assert layout["roc_s0"]["ch"][71]["trim_inv"] == {"min": 0, "max": 63}
        assert layout["roc_s2"]["MasterTdc"][1]["START_COUNTER"] == {"min": 0, "max": 1}
        reply = sc.hcc("set", {"roc_s0": {"ReferenceVoltage": {1: {"Calib": 700}}}}, read_back=True)
        assert reply == {"type": "set", "status": "success", "args": {}}
        reply = sc.hcc("get", {"roc_s0": {"ReferenceVoltage": {1: {"Calib": None, "IntCtest": None}}}})
        assert reply["args"] == {"roc_s0": {"ReferenceVoltage": {1: {"Calib": 700, "IntCtest": 0}}}}
        bad = sc.hcc("set", {"roc_s0": {"ReferenceVoltage": {1: {"Calib": 5000, "IntCtest": 1}}}})
        assert bad["status"] == "error" and "roc_s0.ReferenceVoltage.1.Calib" in bad["errmsg"]
        assert sc.hcc("get", {"roc_s0": {"ReferenceVoltage": {1: {"IntCtest": None}}}})["args"] \
            == {"roc_s0": {"ReferenceVoltage": {1: {"IntCtest": 0}}}}   # all or nothing
        assert "roc_s9" in sc.hcc("set", {"roc_s9": {"Top": {0: {"phase_ck": 1}}}})["errmsg"]
        assert sc.hcc("get", {"roc_s0": {"Nope": None}})["status"] == "error"
        assert sc.hcc("reset")["status"] == "success"
        assert sc.hcc("get", {"roc_s0": {"ReferenceVoltage": {1: {"Calib": None}}}})["args"] \
            == {"roc_s0": {"ReferenceVoltage": {1: {"Calib": 0}}}}
        schema = yaml.safe_load(sc.ask(yaml.safe_dump({"type": "get", "args": {}})))  # no status
        assert schema["status"] == "error" and schema["type"] == "get"
        assert sc.hcc("stop")["status"] == "success"
        assert emu.req("target", 700).silent(yaml.safe_dump({"type": "reset", "status": "send", "args": {}}))


def test_a_text_command_kills_the_hcc_server(tmp_path):
    with running_emulator(tmp_path) as emu:
        assert emu.req("target", 700).silent("initialize")
        assert emu.req("server").ask("status") == "created"
    assert "slow_control server died" in emu.stderr


# --- generation 2021 ----------------------------------------------------------------------------

def daq_2021(port: int, events: int = 40, inject: bool = True) -> dict:
    return {"NEvents": events, "zmqPushPull_port": str(port), "l1a_generator_settings": [
        {"name": "A", "enable": int(inject), "BX": 16, "flavor": "CALPULINT", "length": 1, "prescale": 0,
         "followMode": "DISABLE"}], "l1a_settings": {"bx_spacing": 43}}


def test_2021_daq_server_handshake_run_done_and_stop(tmp_path):
    port = free_port()
    with running_emulator(tmp_path, "--generation", "2021") as emu:
        daq = emu.req("server")
        assert daq.handshake("configure", {"daq": daq_2021(port)}) == "Configured"
        pull = emu.pull(port)
        time.sleep(0.2)
        assert daq.ask("status") == "configured"
        assert "running" in daq.ask("start")
        messages = collect_run(pull)
        assert messages[0] == b"START_RUN_HGCROC"
        event, _, _ = records(messages[1:-1])
        assert event.max() == 39
        poll_until(daq, "run_done", lambda r: r == "done")
        assert "configured" in daq.ask("status")
        assert daq.ask("stop") == "Stopped"


def test_2021_run_done_says_notdone_while_the_run_goes_on(tmp_path):
    port = free_port()
    with running_emulator(tmp_path, "--generation", "2021", "--trigger-rate", "200") as emu:
        daq = emu.req("server")
        assert daq.handshake("Configure", {"daq": daq_2021(port, events=100)}) == "Configured"
        pull = emu.pull(port)  # noqa: F841 - with no puller the stream (and the run) would wait
        time.sleep(0.2)
        assert daq.ask("start") == "running"
        assert daq.ask("run_done") == "notdone"
        poll_until(daq, "run_done", lambda r: r == "done")


def test_a_two_frame_message_kills_a_2021_server(tmp_path):
    with running_emulator(tmp_path, "--generation", "2021") as emu:
        assert emu.req("server", 700).silent("configure", yaml.safe_dump({"daq": daq_2021(free_port())}))
        assert emu.req("server", 700).silent("status")
        sc = emu.req("target")
        assert sc.handshake("configure", {"roc_s0": {"Top": {0: {"phase_ck": 1}}}}) == "ROC(s) CONFIGURED\n...\n"
        assert emu.req("target", 700).silent("read", "")
    assert emu.stderr.count("died") == 2


def test_2021_client_writes_files_and_stops(tmp_path):
    port, out = free_port(), tmp_path / "out"
    out.mkdir()
    with running_emulator(tmp_path, "--generation", "2021") as emu:
        daq, client = emu.req("server"), emu.req("client")
        conf = {"global": {"outputDirectory": str(out), "run_type": "stem", "serverIP": "127.0.0.1",
                           "data_push_port": port, "hw_type": "LD"}}
        assert client.handshake("configure", conf) == "Configured"
        assert daq.handshake("configure", {"daq": daq_2021(port, events=20)}) == "Configured"
        time.sleep(0.3)
        assert "running" in client.ask("start")
        assert "running" in daq.ask("start")
        poll_until(daq, "run_done", lambda r: "notdone" not in r)
        assert daq.ask("stop") == "Stopped"
        path = Path(wait_files(emu, 1)[0]["path"])
        assert path == out / "stem0.raw"
        assert len(read_frames(path.read_bytes())) == 60
        assert client.ask("stop") == "Data puller stopped"


def test_2021_slow_control_commands(tmp_path):
    with running_emulator(tmp_path, "--generation", "2021") as emu:
        sc = emu.req("target", 20000)
        assert sc.handshake("initialize", INJECTION) == "ROC(s) CONFIGURED\n...\n"
        assert sc.handshake("configure", {"roc_s1": {"Top": {0: {"phase_strobe": 5}}}}) \
            == "ROC(s) CONFIGURED\n...\n"
        assert emu.log()[-1]["phase_changed"] == [1]
        refused = sc.handshake("configure", {"roc_s0": {"Top": {0: {"phase_strobe": 99}}}})
        assert refused.startswith("E:") and "phase_strobe" in refused
        values = yaml.safe_load(sc.handshake("read", ""))
        assert values["roc_s1"]["Top"][0]["phase_strobe"] == 5 and len(values) == 3
        named = yaml.safe_load(sc.handshake("read", {"roc_s1": {"Top": {0: None}}}))
        assert named["roc_s1"]["Top"][0]["phase_strobe"] == 5 and list(named) == ["roc_s1"]
        assert isinstance(yaml.safe_load(sc.ask("RESETTDC")), dict)
        assert emu.log()[-1]["tdc_reset"] == [0, 1, 2]
        assert isinstance(yaml.safe_load(sc.ask("reset_tdc")), dict)
        assert "roc_s0" in yaml.safe_load(sc.ask("read_pwr"))
        assert isinstance(yaml.safe_load(sc.handshake("measadc", {"roc_s0": None})), dict)
        assert emu.req("target", 700).silent("frobnicate")
    assert "unknown command" in emu.stderr


def test_2021_tdc_is_valid_after_resettdc(tmp_path):
    port = free_port()
    with running_emulator(tmp_path, "--generation", "2021") as emu:
        sc, daq = emu.req("target"), emu.req("server")
        sc.handshake("configure", INJECTION)
        sc.handshake("configure", calib(1024))
        assert daq.handshake("configure", {"daq": daq_2021(port, events=100)}) == "Configured"
        pull = emu.pull(port)
        time.sleep(0.2)
        chip, words = menus_run_words(daq, pull)
        assert toa_spread(words, chip, 2) > 100
        sc.ask("resettdc")
        chip, words = menus_run_words(daq, pull)
        assert toa_spread(words, chip, 2) < 10
        assert [r["tdc_ok"] for r in emu.runs()] == [[False] * 3, [True] * 3]


# --- fault switches ---------------------------------------------------------------------------------

def test_align_retries_keep_the_state_until_links_align(tmp_path):
    port = free_port()
    with running_emulator(tmp_path, "--align-retries", "2") as emu:
        daq = emu.req("server")
        start_menus_run(daq, menus_daq(port, NEvents=10))
        pull = emu.pull(port)  # noqa: F841
        time.sleep(0.2)
        assert [daq.ask("start") for _ in range(3)] == ["configured", "configured", "running"]
        poll_until(daq, "status", lambda r: r == "configured")
        assert [daq.ask("start") for _ in range(3)] == ["configured", "configured", "running"]  # per run
    with running_emulator(tmp_path, "--generation", "2021", "--align-retries", "1") as emu:
        daq = emu.req("server")
        daq.handshake("configure", {"daq": daq_2021(port)})
        assert [daq.ask("start") for _ in range(2)] == ["configured", "running"]


def test_error_on_fails_each_server_its_own_way(tmp_path):
    with running_emulator(tmp_path, "--error-on", "configure", "--error-on", "set") as emu:
        daq = emu.req("server")
        assert daq.ask_yaml("initialize", menus_daq(free_port())) == "initialized"
        assert daq.ask_yaml("configure", menus_daq(free_port())) == "error"
        bad = emu.req("target").hcc("set", {"roc_s0": {"Top": {0: {"phase_ck": 1}}}})
        assert bad["status"] == "error" and "set" in bad["errmsg"]
    with running_emulator(tmp_path, "--generation", "2021", "--error-on", "configure") as emu:
        assert emu.req("target").ask("configure").startswith("E:")
        assert emu.req("server").ask("configure").startswith("error")


def test_drop_after_loses_the_rest_of_the_stream(tmp_path):
    port = free_port()
    with running_emulator(tmp_path, "--drop-after", "10") as emu:
        daq = emu.req("server")
        start_menus_run(daq, menus_daq(port, NEvents=100))
        pull = emu.pull(port)
        time.sleep(0.2)
        assert daq.ask("start") == "running"
        poll_until(daq, "status", lambda r: r == "configured")
        pull.setsockopt(zmq.RCVTIMEO, 500)
        got = []
        try:
            while True:
                got.append(pull.recv())
        except zmq.Again:
            pass
        assert got[0] == b"START_RUN_HGCROC" and b"END_OF_RUN" not in got
        event, _, _ = records(got[1:])
        assert event.max() == 9


def test_bitslip_corrupts_records(tmp_path):
    port = free_port()
    with running_emulator(tmp_path, "--bitslip", "0.5") as emu:
        daq = emu.req("server")
        start_menus_run(daq, menus_daq(port, NEvents=50))
        pull = emu.pull(port)
        time.sleep(0.2)
        chip, words = menus_run_words(daq, pull)
        bad = ~check_halves(Frames(np.zeros(len(chip), np.int32), chip, words)).good
        assert 0.2 < bad.any(axis=1).mean() < 0.8


def test_silent_after_stops_answering(tmp_path):
    with running_emulator(tmp_path, "--silent-after", "2") as emu:
        daq = emu.req("server")
        assert daq.ask("status") == "created"
        assert emu.req("target").hcc("reset")["status"] == "success"
        assert emu.req("server", 700).silent("status")
        assert emu.log()[-1]["ignored"] is True


# --- the process ----------------------------------------------------------------------------------

def test_sigterm_stops_the_emulator_promptly(tmp_path):
    with running_emulator(tmp_path) as emu:
        start = time.monotonic()
        emu.proc.send_signal(signal.SIGTERM)
        assert emu.proc.wait(timeout=3) == 0
        assert time.monotonic() - start < 1.0


def test_the_emulator_exits_when_its_parent_dies(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', "
         "'raffinerie', 'emulator', '--announce', '--server-port', '0', '--target-port', '0', "
         "'--client-port', '0'], stdout=subprocess.PIPE, text=True); print(p.pid, flush=True); "
         "p.stdout.readline(); print('up', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        child = int(_first_line(parent, 20))
        assert _first_line(parent, 20).strip() == "up"
        parent.kill()
        parent.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()
        if "child" in locals() and _alive(child):
            os.kill(child, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
