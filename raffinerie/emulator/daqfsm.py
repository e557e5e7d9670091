"""hexactrl-sw's daqFSM: the state machine of the menu-generation daq server and daq-client.

States and transitions as in the real daqFSM.h (boost msm): an event with no
transition from the current state is ignored and the state stays (the real
one prints "impossible to process ..."). Replies are the state, lower-case.
"""

from __future__ import annotations

from enum import Enum


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
