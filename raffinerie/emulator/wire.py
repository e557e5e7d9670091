"""What every emulated server shares: fault switches, the request log, YAML, death.

Real servers do not refuse malformed requests politely: some crash or block
(a two-frame message to a 2021 server, a config command without its YAML
frame, a slow-control request that is not a mapping). A handler raises
`Died` there, and the serving loop stops answering on that socket, as a
dead server would.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from raffinerie import memo

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MEMO_STEP = "wire:" + memo.code_of(__file__)  # at import: the code that runs is the code named


class Died(Exception):
    """The real server would have crashed or hung here; the message says why."""


@dataclass
class Faults:
    """Ways to misbehave, for testing the client side."""

    drop_after: int | None = None      # the stream loses everything after N events, END_OF_RUN included
    bitslip: float = 0.0               # fraction of (event, chip) records with a 2-bit link slip
    align_retries: int = 0             # `start` does not reach running this many times per run
    error_on: frozenset[str] = field(default_factory=frozenset)  # commands that fail
    silent_after: int | None = None    # stop answering after this many requests (all sockets)


class EventLog:
    """One JSON line per request and per run, for tests to check from the emulator's side."""

    def __init__(self, path: str | None = None):
        self.file = open(path, "a", buffering=1, encoding="utf-8") if path else None

    def write(self, entry: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"t": round(time.monotonic(), 6), **entry}) + "\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def load_yaml(frame: bytes) -> Any:
    """A YAML frame (raises yaml.YAMLError on bad YAML); a board's whole configuration from the memo."""
    return memo.parsed(_MEMO_STEP, frame, lambda: yaml.load(frame, Loader=_Loader))


def dump_yaml(value: Any, **options) -> str:
    """YAML text of `value`; a large one (a board's `describe`: 0.4 MB, rendered at every
    emulator start, 0.15-0.25 s of CPU) from the memo when an equal document was written before."""
    step = _MEMO_STEP + ":dump:" + repr(sorted(options.items()))
    return memo.dumped(step, value, lambda: yaml.dump(value, Dumper=_Dumper, **options))


def text(frame: bytes) -> str:
    return frame.decode("utf-8", errors="replace")


def as_mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


class Served:
    """One emulated server behind a REP socket; the serving loop calls these."""

    name = "?"
    finished = False   # the server stopped by request (HCC `stop`): close its socket after the reply

    def handle(self, frames: list[bytes], entry: dict) -> str:
        """The reply to one request; fills `entry` (the log line) with at least `command`."""
        raise NotImplementedError

    def tick(self, now: float) -> float | None:
        """Do what is due by `now` (push data); the next time something is due, if any."""
        return None

    def pull_socket(self):
        """A PULL socket to poll for data, if this server reads a stream now."""
        return None

    def on_data(self, message: bytes) -> None:
        """One message from `pull_socket()`."""

    def close(self) -> None:
        """This server dies or the emulator stops: release what it holds."""


def yaml_frame(frame: bytes, who: str):
    """The YAML of a frame; the real servers throw on YAML that does not parse."""
    try:
        return load_yaml(frame)
    except Exception as exc:  # noqa: BLE001 - any parse failure kills the real server
        raise Died(f"{who}: the YAML does not parse ({type(exc).__name__}); it throws") from None


class HandshakeServed(Served):
    """A 2021 server: a command that carries YAML takes it in a second exchange.

    The command comes alone and is answered `READY`; the next request is its
    YAML, alone, and gets the command's answer (zmq_server.py `redirect`, DR
    0.1.2 `ControlAdapter.configure`). Every request is one frame: the real
    servers read one, and with a frame left pending they cannot reply (zmq
    EFSM) and die. Subclasses name their `yaml_commands` and answer.
    """

    who = "?"
    yaml_commands: frozenset = frozenset()
    empty_yaml: frozenset = frozenset()   # commands whose YAML may be empty (`read` = everything)
    pending: str | None = None   # the command whose YAML comes next

    def handle(self, frames: list[bytes], entry: dict) -> str:
        if len(frames) != 1:
            raise Died(f"{self.who}: a {len(frames)}-frame message; it reads one frame, cannot "
                       f"reply with the rest pending (zmq EFSM) and dies")
        if not text(frames[0]) and (self.pending is None or self.pending not in self.empty_yaml):
            raise Died(f"{self.who}: an empty frame; it sends no reply and its next recv fails "
                       f"(zmq EFSM)")
        if self.pending is not None:
            command, self.pending = self.pending, None
            entry.update(command=command, handshake="yaml")
            return self.answer_yaml(command, frames[0], entry)
        command = text(frames[0]).lower()
        entry["command"] = command
        if command in self.error_on():
            return self.fault(command)
        if command in self.yaml_commands:
            self.pending = command
            return "READY"
        return self.answer(command, entry)

    def error_on(self) -> frozenset:
        raise NotImplementedError

    def fault(self, command: str) -> str:
        """The reply to a command the `--error-on` switch fails."""
        raise NotImplementedError

    def answer(self, command: str, entry: dict) -> str:
        raise NotImplementedError

    def answer_yaml(self, command: str, frame: bytes, entry: dict) -> str:
        raise NotImplementedError
