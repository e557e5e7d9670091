"""hexactrl-sw's daqFSM: the state machine of the menu-generation daq server and daq-client.

States and transitions as in the real daqFSM.h (boost msm): an event with no
transition from the current state is ignored and the state stays (the real
one prints "impossible to process ..."). Replies are the state, lower-case.
"""

from __future__ import annotations

from enum import Enum

from raffinerie.emulator.wire import Died, Served, as_mapping, text, yaml_frame


class State(str, Enum):
    CREATED = "created"
    INITIALIZED = "initialized"
    CONFIGURED = "configured"
    RUNNING = "running"
    ERROR = "error"


S = State
TRANSITIONS: dict[tuple[State, str], State] = {
    (S.CREATED, "initialize"): S.INITIALIZED,
    (S.INITIALIZED, "initialize"): S.INITIALIZED,
    (S.CONFIGURED, "initialize"): S.INITIALIZED,
    (S.INITIALIZED, "configure"): S.CONFIGURED,
    (S.CONFIGURED, "configure"): S.CONFIGURED,
    (S.CONFIGURED, "start"): S.RUNNING,
    (S.RUNNING, "stop"): S.CONFIGURED,
    (S.CREATED, "destroy"): S.CREATED,
    (S.CONFIGURED, "destroy"): S.CREATED,
    (S.INITIALIZED, "destroy"): S.CREATED,
    (S.ERROR, "destroy"): S.CREATED,
    (S.CREATED, "error"): S.ERROR,
    (S.INITIALIZED, "error"): S.ERROR,
    (S.CONFIGURED, "error"): S.ERROR,
    (S.RUNNING, "error"): S.ERROR,
}


class DaqFsm:
    def __init__(self):
        self.state = State.CREATED

    def fire(self, event: str) -> bool:
        """Apply `event`; False (state unchanged) when the table has no transition."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            return False
        self.state = new
        return True

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    @property
    def reply(self) -> str:
        return self.state.value


def check_frames(frames: list[bytes], expected: int, command: str, who: str) -> None:
    """A real server that gets another number of frames than it reads dies (zmq EFSM)."""
    if not text(frames[0]):
        raise Died(f"{who}: an empty command; it sends no reply and its next recv fails (zmq EFSM)")
    if len(frames) < expected:
        raise Died(f"{who}: '{command}' without its YAML frame; it waits in recv for a frame "
                   f"that is not coming (zmq EFSM) and dies")
    if len(frames) > expected:
        raise Died(f"{who}: {command} command in a {len(frames)}-frame message; it cannot reply "
                   f"with a frame pending (zmq EFSM) and dies")


def yaml_section(frame: bytes, key: str, who: str) -> dict:
    """The `key` section of a YAML frame, as receiveConfig takes it (`daq`, `client`)."""
    doc = yaml_frame(frame, who)
    return as_mapping(doc.get(key)) if isinstance(doc, dict) else {}


class FsmServed(Served):
    """The listen loop that DAQManager and DAQClient share (the real sources repeat it too).

    The command is lower-cased and looked up in `actions`; `initialize` and
    `configure` read their YAML from a second frame and use its `section`
    key; anything else (or an injected fault) is the error transition; the
    reply is the state, lower-case.
    """

    section = ""
    who = ""
    actions: dict
    fsm: DaqFsm

    def handle(self, frames: list[bytes], entry: dict) -> str:
        command = text(frames[0]).lower()
        entry["command"] = command
        wants_yaml = command in ("initialize", "configure")
        check_frames(frames, 2 if wants_yaml else 1, command, self.who)
        config = yaml_section(frames[1], self.section, self.who) if wants_yaml else None
        action = self.actions.get(command)
        if action is None or command in self.error_on():
            self._error()
        else:
            action(config)
        return self.fsm.reply

    def error_on(self) -> set[str]:
        raise NotImplementedError

    def _error(self) -> None:
        raise NotImplementedError
