"""The emulator's zmq servers, speaking the hexactrl-sw protocol.

- daq server (REQ/REP): `initialize`/`configure` + YAML, `status`, `start`,
  `stop`. After replying `running` to `start` it PUSHes `START_RUN_HGCROC`,
  the run's raw-format data messages, then `END_OF_RUN`.
- target i2c server (REQ/REP): `initialize`/`configure` + YAML, `read` +
  YAML (or nothing), `resettdc`, `read_pwr`, `measadc`.

A refused command gets a reply starting with `error:` that names the
problem. Fault switches make it misbehave on purpose, for tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import yaml
import zmq

from raffinerie.config.tree import merge, normalize
from raffinerie.emulator.model import Board, messages
from raffinerie.emulator.registers import RegisterError, RegisterFile

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Faults:
    """Ways to misbehave, for testing the client side."""

    drop_after: int | None = None      # stop the data stream after N events (no END_OF_RUN)
    bitslip: float = 0.0               # fraction of (event, chip) records with a 2-bit link slip
    align_retries: int = 0             # `start` fails this many times per run before links align
    error_on: set[str] = field(default_factory=set)  # commands answered with an error
    silent_after: int | None = None    # stop answering after this many requests


@dataclass
class Ports:
    host: str
    server: int
    target: int
    data: int

    def as_json(self) -> str:
        return json.dumps({"host": self.host, "server": self.server, "target": self.target,
                           "data": self.data})


class EmulatorServer:
    def __init__(self, host: str = "127.0.0.1", server_port: int = 0, target_port: int = 0,
                 data_port: int = 0, seed: int = 0, faults: Faults | None = None):
        self.ctx = zmq.Context()
        self.daq = self._bind(zmq.REP, host, server_port)
        self.i2c = self._bind(zmq.REP, host, target_port)
        self.data = self._bind(zmq.PUSH, host, data_port)
        self.ports = Ports(host, *(_port(s) for s in (self.daq, self.i2c, self.data)))
        self.board = Board(seed)
        self.registers = RegisterFile(self.board.n_chips)
        self.faults = faults or Faults()
        self.daq_config: dict = {}
        self.running = False
        self.requests = 0
        self.failed_starts = 0
        self.occurrences: dict[int, int] = {}
        self.stopped = False

    def _bind(self, kind: int, host: str, port: int):
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.PUSH:
            sock.setsockopt(zmq.SNDHWM, 0)  # a run is never dropped for a slow reader
        if port:
            sock.bind(f"tcp://{host}:{port}")
        else:
            sock.bind_to_random_port(f"tcp://{host}")
        return sock

    def serve(self, poll_ms: int = 200) -> None:
        """Answer requests until `close()` (or forever)."""
        poller = zmq.Poller()
        poller.register(self.daq, zmq.POLLIN)
        poller.register(self.i2c, zmq.POLLIN)
        while not self.stopped:
            for sock, _ in poller.poll(poll_ms):
                frames = sock.recv_multipart()
                self.requests += 1
                if self.faults.silent_after is not None and self.requests > self.faults.silent_after:
                    continue  # a backend that stopped answering
                try:
                    command, payload = self._parse(frames)
                except yaml.YAMLError as exc:
                    self._reply(sock, f"error: bad YAML: {exc}")
                    continue
                if command in self.faults.error_on:
                    self._reply(sock, f"error: emulator fault injected on '{command}'")
                    continue
                handler = self._daq_command if sock is self.daq else self._i2c_command
                after = handler(command, payload, sock)
                if after:
                    after()

    def close(self) -> None:
        self.stopped = True
        for sock in (self.daq, self.i2c, self.data):
            sock.close(0)
        self.ctx.term()

    # -- requests ----------------------------------------------------------------

    def _parse(self, frames: list[bytes]):
        command = frames[0].decode(errors="replace").strip()
        payload = None
        if len(frames) > 1 and frames[1].strip():
            payload = yaml.load(frames[1], Loader=_Loader)
        return command, payload

    def _reply(self, sock, text: str) -> None:
        sock.send_string(text)

    def _daq_command(self, command: str, payload, sock):
        if command in ("initialize", "configure"):
            if payload is not None and not isinstance(payload, dict):
                return self._reply(sock, "error: daq config must be a mapping")
            base = {} if command == "initialize" else self.daq_config
            self.daq_config = merge(base, normalize(payload or {}))
            return self._reply(sock, "initialized" if command == "initialize" else "configured")
        if command == "status":
            return self._reply(sock, "running" if self.running else "configured")
        if command == "start":
            if self.failed_starts < self.faults.align_retries:
                self.failed_starts += 1
                return self._reply(sock, "error: link alignment failed, retry start")
            self.failed_starts = 0
            self.running = True
            self._reply(sock, "running")
            return self._push_run
        if command == "stop":
            self.running = False
            return self._reply(sock, "configured")
        return self._reply(sock, f"error: unknown daq command '{command}'")

    def _push_run(self) -> None:
        regs = self.registers
        key = hash((repr(sorted(self.daq_config.get("server", {}).items())),
                    b"".join(v.tobytes() for v in regs.values.values())))
        occurrence = self.occurrences.get(key, 0)
        self.occurrences[key] = occurrence + 1
        event, chip, words = self.board.run(regs, self.daq_config, occurrence, self.faults.bitslip)
        drop = self.faults.drop_after
        n = len(event) if drop is None else drop * self.board.n_chips
        self.data.send(b"START_RUN_HGCROC")
        for message in messages(event[:n], chip[:n], words[:n]):
            self.data.send(message)
        if drop is None:
            self.data.send(b"END_OF_RUN")

    def _i2c_command(self, command: str, payload, sock):
        try:
            if command in ("initialize", "configure"):
                if command == "initialize":
                    self.registers.reset()
                self.registers.write(payload or {})
                return self._reply(sock, "configured")
            if command == "read":
                return self._reply(sock, yaml.dump(self.registers.read(payload), Dumper=_Dumper))
            if command == "resettdc":
                return self._reply(sock, yaml.dump({"resettdc": "done"}, Dumper=_Dumper))
            if command == "read_pwr":
                return self._reply(sock, yaml.dump(_power(self.board.n_chips), Dumper=_Dumper))
            if command == "measadc":
                return self._reply(sock, yaml.dump({"measadc": payload or {}}, Dumper=_Dumper))
        except RegisterError as exc:
            return self._reply(sock, f"error: {exc}")
        return self._reply(sock, f"error: unknown target command '{command}'")


def _power(n_chips: int) -> dict:
    return {f"roc_s{c}": {"V1p2_mV": 1200, "I_mA": 310} for c in range(n_chips)}


def _port(sock) -> int:
    return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
