"""The two slow-control servers: HCC (menu generation) and zmq_server.py (2021).

HCC (hexacontroller_sc_server): one YAML request `{type, status: send,
read_back, from_hardware, args}` per message, one YAML reply `{type, status:
success|error, args[, errmsg]}`. A request that is not a mapping with a
`type` kills the real server (it indexes the request before validating it).

zmq_server.py (2021): text commands, lower-cased; those that carry YAML use
the READY handshake (command alone -> `READY`, then the YAML alone -> the
result). An unknown command or a two-frame message kills it.
"""

from __future__ import annotations

from raffinerie.emulator.registers import RegisterError
from raffinerie.emulator.target import Target
from raffinerie.hgcroc import chip_name
from raffinerie.emulator.wire import (Died, EventLog, Faults, HandshakeServed, Served, dump_yaml, load_yaml,
                                     text, yaml_frame)

BOARD_TYPE = "LD_hexaboard"
HCC_TYPES = ("set", "get", "describe", "reset", "stop")
HCC_KEYS = {"type", "status", "args", "read_back", "from_hardware"}


def _single(frames: list[bytes], server: str) -> bytes:
    """A REP server that reads one frame cannot reply while another is pending (EFSM)."""
    if len(frames) != 1:
        raise Died(f"{server}: a {len(frames)}-frame message; the server reads one frame, "
                   f"cannot reply with the rest pending (zmq EFSM) and dies")
    return frames[0]


class HccServer(Served):
    name = "slow_control"

    def __init__(self, target: Target, faults: Faults, log: EventLog):
        self.target, self.faults, self.log = target, faults, log
        self.actions = {"get": self._get, "set": self._set, "describe": self._describe,
                        "reset": self._reset, "stop": self._stop}
        # The layout never changes, and dumping it (about 0.4 MB of YAML for three
        # chips) takes about 0.4 s of CPU: rendered once, before the emulator announces
        # its ports, a first `describe` is answered at once, as by a real HCC server.
        self.described = _reply("describe", {BOARD_TYPE: self.target.describe()})

    def handle(self, frames: list[bytes], entry: dict) -> str:
        entry["command"] = "?"
        frame = _single(frames, "HCC server")
        try:
            request = load_yaml(frame)
        except Exception as exc:  # noqa: BLE001 - any YAML failure kills the real one
            raise Died(f"HCC server: request is not YAML ({type(exc).__name__})") from None
        if not isinstance(request, dict) or "type" not in request:
            raise Died(f"HCC server: request {text(frame)[:60]!r} is not a mapping with a 'type' "
                       f"(TypeError/KeyError in server.py)")
        kind = request["type"]
        entry["command"] = str(kind)
        problem = _schema_problem(request)
        if problem:
            return _reply(kind, error=problem)
        if kind in self.faults.error_on:
            return _reply(kind, error=f"emulator fault injected on '{kind}'")
        return self.actions[kind](request, entry)

    def _get(self, request: dict, entry: dict) -> str:
        try:
            return _reply("get", self.target.read_named(request["args"]))
        except RegisterError as exc:
            return _reply("get", error=str(exc))

    def _set(self, request: dict, entry: dict) -> str:
        try:
            effect = self.target.write(request["args"])
        except RegisterError as exc:
            return _reply("set", error=str(exc))
        entry.update(effect.as_log())
        return _reply("set")

    def _describe(self, request: dict, entry: dict) -> str:
        return self.described

    def _reset(self, request: dict, entry: dict) -> str:
        self.target.power_on()
        entry["tdc_invalid"] = list(range(self.target.n_chips))
        return _reply("reset")

    def _stop(self, request: dict, entry: dict) -> str:
        self.finished = True  # the real server leaves its loop after replying
        return _reply("stop")


def _schema_problem(request: dict) -> str | None:
    """What HCC's request schema would refuse, or None."""
    extra = set(request) - HCC_KEYS
    if request.get("type") not in HCC_TYPES:
        return f"type {request.get('type')!r} is not one of {', '.join(HCC_TYPES)}"
    if extra:
        return f"Wrong key(s) {', '.join(map(repr, sorted(map(str, extra))))}"
    if request.get("status") != "send":
        return f"status {request.get('status')!r} should be 'send'"
    if not isinstance(request.get("args"), dict):
        return "args should be a mapping"
    for flag in ("read_back", "from_hardware"):
        if not isinstance(request.get(flag, False), bool):
            return f"{flag} should be a bool"
    return None


def _reply(kind, args: dict | None = None, error: str | None = None) -> str:
    response = {"type": kind, "status": "success", "args": args or {}}
    if error is not None:
        response["status"], response["errmsg"] = "error", error
    return dump_yaml(response, sort_keys=False)


# zmq_server.py's redirect sends yaml.dump of the board's answer, the string
# "ROC(s) CONFIGURED"; PyYAML's emitter ends a plain scalar document with "...".
CONFIGURED_2021 = "ROC(s) CONFIGURED\n...\n"


class I2cServer2021(HandshakeServed):
    """The 2021 slow control (zmq_server.py): READY handshake, `ROC(s) CONFIGURED`, `E:` errors."""

    name = "slow_control"
    who = "2021 slow-control server"

    def __init__(self, target: Target, faults: Faults, log: EventLog):
        self.target, self.faults, self.log = target, faults, log
        self.with_yaml = {"initialize": self._configure, "configure": self._configure,
                          "read": self._read, "measadc": self._measadc, "read_adc": self._measadc}
        self.one_frame = {"resettdc": self._resettdc, "reset_tdc": self._resettdc,
                          "read_pwr": self._read_pwr}
        self.yaml_commands = self.empty_yaml = frozenset(self.with_yaml)

    def error_on(self) -> frozenset:
        return self.faults.error_on

    def fault(self, command: str) -> str:
        return f"E: emulator fault injected on '{command}'"

    def answer_yaml(self, command: str, frame: bytes, entry: dict) -> str:
        return self.with_yaml[command](frame, entry)

    def answer(self, command: str, entry: dict) -> str:
        if command in self.one_frame:
            return self.one_frame[command](entry)
        raise Died(f"2021 slow-control server: unknown command {command[:60]!r}: it sends no "
                   f"reply, its next recv fails (zmq EFSM) and it dies")

    def _yaml(self, frame: bytes):
        return yaml_frame(frame, self.who)

    def _configure(self, frame: bytes, entry: dict) -> str:
        config = self._yaml(frame) or {}
        try:
            effect = self.target.write(config)
        except RegisterError as exc:
            return f"E: {exc}"
        entry.update(effect.as_log())
        return CONFIGURED_2021

    def _read(self, frame: bytes, entry: dict) -> str:
        try:
            return dump_yaml(self.target.read_named(self._yaml(frame)))
        except RegisterError as exc:
            return f"E: {exc}"

    def _measadc(self, frame: bytes, entry: dict) -> str:
        self._yaml(frame)
        return dump_yaml({chip_name(c): {"adc": {"probe_dc": 512}} for c in range(self.target.n_chips)})

    def _resettdc(self, entry: dict) -> str:
        effect = self.target.reset_tdc()
        entry.update(effect.as_log())
        return dump_yaml({chip_name(c): "masterTDCs reset" for c in effect.tdc_reset})

    def _read_pwr(self, entry: dict) -> str:
        return dump_yaml({chip_name(c): {"V1p2_mV": 1200, "I_mA": 310} for c in range(self.target.n_chips)})
