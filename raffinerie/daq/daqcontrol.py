"""Driving a daq server or a daq-client, in the generation it speaks.

hexactrl-protocol.md: the menu generation (DAQManager, DAQClient) takes a
command and its YAML as one two-frame message and answers with its state;
the 2021 generation takes the command alone, answers `READY`, then takes
the YAML alone. Every reply is checked against what that server sends on
success; anything else is an error that quotes it. A reply that belongs to
the other generation says which setting to try.
"""

from __future__ import annotations

import time

import yaml

from raffinerie import memo
from raffinerie.config.daqconfig import Generation
from raffinerie.daq.transport import BackendError, Endpoint

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_MEMO_STEP = "request:" + memo.code_of(__file__)  # at import: the code that runs is the code named
MAX_START_TRIES = 50      # DR 1.0 tries `start` 50 times while the links align
START_RETRY_SECONDS = 0.01
MENU_STATES = {"initialized", "configured", "running", "error", "destroyed", "idle", "stopped"}


def dump(doc: dict) -> str:
    """The YAML a server is sent; a board's whole configuration (initialize) from the memo."""
    return memo.dumped(_MEMO_STEP, doc, lambda: yaml.dump(doc, Dumper=_Dumper, default_flow_style=False))


class MenusControl:
    """A menu-generation state machine: the daq server (`daq`) or the daq-client (`client`)."""

    generation = Generation.MENUS

    def __init__(self, endpoint: Endpoint, wrapper: str, other_hint: str):
        self.ep, self.wrapper, self.other_hint = endpoint, wrapper, other_hint

    def _state(self, what: str, reply: str, *expected: str) -> str:
        state = reply.strip()
        if state in expected:
            return state
        hint = self.other_hint if "ready" in state.lower() or state.lower() in ("stopped", "done",
                                                                               "notdone") else ""
        wanted = " or ".join(repr(e) for e in expected)
        if state == "error":
            raise self.ep.refuse(what, reply, wanted, "the server's state machine went to 'error' "
                                 "(its console says why)")
        raise self.ep.refuse(what, reply, wanted, hint)

    def initialize(self, section: dict) -> None:
        reply = self.ep.request("initialize", dump({self.wrapper: section}))
        self._state("initialize", reply, "initialized")

    def configure(self, section: dict) -> None:
        reply = self.ep.request("configure", dump({self.wrapper: section}))
        self._state("configure", reply, "configured")

    def start(self) -> None:
        """`start` until `running`: the server stays `configured` while its links align."""
        for _ in range(MAX_START_TRIES):
            if self._state("start", self.ep.request("start"), "running", "configured") == "running":
                return
            time.sleep(START_RETRY_SECONDS)
        raise BackendError(f"{self.ep.name} did not start after {MAX_START_TRIES} tries: it stayed "
                           "'configured' (link alignment failing? check the fibres and the trigger "
                           "links, then the server's console)")

    def finished(self) -> bool:
        """The run ended by itself (`configured`), or is still `running`."""
        return self._state("status", self.ep.request("status"), "configured", "running") == "configured"

    def stop(self) -> None:
        self._state("stop", self.ep.request("stop"), "configured")


class LegacyControl:
    """A 2021 daq server (`daq`) or zmq-client (`global`): the READY handshake, `run_done`."""

    generation = Generation.Y2021
    STOPPED = {"daq": "Stopped", "global": "Data puller stopped"}

    def __init__(self, endpoint: Endpoint, wrapper: str, other_hint: str):
        self.ep, self.wrapper, self.other_hint = endpoint, wrapper, other_hint

    def _hint(self, reply: str) -> str:
        return self.other_hint if reply.strip().lower() in MENU_STATES else ""

    def initialize(self, section: dict) -> None:
        self.configure(section)  # the 2021 servers know one configuration command

    def configure(self, section: dict) -> None:
        reply = self.ep.request("configure")
        if "ready" not in reply.lower():
            raise self.ep.refuse("configure", reply, "'READY' (the 2021 handshake)", self._hint(reply))
        reply = self.ep.request(dump({self.wrapper: section}), what="configure (its YAML)")
        if reply.strip() != "Configured":
            raise self.ep.refuse("configure (its YAML)", reply, "'Configured'")

    def start(self) -> None:
        for _ in range(MAX_START_TRIES):
            reply = self.ep.request("start")
            if "running" in reply.lower():
                return
            if "ready" in reply.lower() or reply.lower().startswith(("e:", "error")):
                raise self.ep.refuse("start", reply, "a reply containing 'running'")
            time.sleep(START_RETRY_SECONDS)
        raise BackendError(f"{self.ep.name} did not start after {MAX_START_TRIES} tries "
                           "(link alignment failing? check the server's console)")

    def finished(self) -> bool:
        reply = self.ep.request("run_done")
        low = reply.lower()
        if "notdone" in low:
            return False
        if "done" in low:
            return True
        raise self.ep.refuse("run_done", reply, "'done' or 'notdone'", self._hint(reply))

    def stop(self) -> None:
        reply = self.ep.request("stop")
        expected = self.STOPPED[self.wrapper]
        if reply.strip() != expected:
            raise self.ep.refuse("stop", reply, repr(expected))


def control(generation: Generation, endpoint: Endpoint, role: str, other_hint: str):
    """The control of a daq server (`role` server) or daq-client (`role` client)."""
    if generation is Generation.MENUS:
        return MenusControl(endpoint, "daq" if role == "server" else "client", other_hint)
    return LegacyControl(endpoint, "daq" if role == "server" else "global", other_hint)
