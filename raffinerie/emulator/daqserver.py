"""The daq servers of both generations: state, replies, and the runs they push.

menus (DAQManager): commands lower-cased; `initialize`/`configure` carry
YAML in a second frame of which only `daq` is used; every reply is the
daqFSM state. `start` from configured aligns the links, replies `running`,
and the run then goes on by itself: when the menu has sent its events the
server stops and is `configured` again.

2021: the READY handshake for `configure`, `{daq: {...}}`, replies
`Configured`, `running`, `notdone`/`done` to `run_done`, `Stopped`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from raffinerie.config.tree import merge
from raffinerie.emulator.daqfsm import DaqFsm, FsmServed, State
from raffinerie.emulator.model import Board, RunSettings, config_digest, injecting_2021, settings_identity
from raffinerie.emulator.stream import DataPush, Run, plan_run
from raffinerie.emulator.target import Target
from raffinerie.emulator.wire import EventLog, Faults, HandshakeServed, Served, as_mapping, yaml_frame

# menus whose sequence injects charge before each L1A
INJECTING_MENUS = frozenset({"calibAndL1A", "calibAndL1AplusTPG", "marsCalibAndL1A"})
DEFAULT_EVENTS = 1000
DEFAULT_DATA_PORT = 8888


@dataclass
class Bench:
    """What a daq server works with: the board, its chips, the stream, the switches."""

    board: Board
    target: Target
    push: DataPush
    faults: Faults
    log: EventLog
    rate: float | None = None   # L1A rate in Hz; None = as fast as possible


class Acquisition:
    """Runs of the board under the current registers; counts repeats for the noise seed."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.occurrences: dict[bytes, int] = {}
        self.failed_starts = 0

    def links_align(self) -> bool:
        """False for the first `align_retries` starts of every run (the fault switch)."""
        if self.failed_starts < self.bench.faults.align_retries:
            self.failed_starts += 1
            return False
        self.failed_starts = 0
        return True

    def run(self, settings: RunSettings, now: float) -> Run:
        b = self.bench
        regs = b.target.registers
        key = config_digest(regs, settings.identity)
        occurrence = self.occurrences.get(key, 0)
        self.occurrences[key] = occurrence + 1
        tdc_ok = b.target.tdc_ok.copy()
        event, chip, words = b.board.run(regs, settings, occurrence, b.faults.bitslip, tdc_ok)
        read = settings.n_chips or b.board.n_chips
        if read < b.board.n_chips:  # the link capture reads the first NChips ROCs only
            kept = chip < read
            event, chip, words = event[kept], chip[kept], words[kept]
        b.log.write({"server": "daq", "event": "run", "tdc_ok": tdc_ok.tolist(),
                     "events": settings.n_events, "injecting": settings.injecting, "chips": read})
        return plan_run(event, chip, words, read, now, b.rate, b.faults.drop_after)


def read_chips(settings: dict, board: Board) -> int | None:
    """The ROCs a run reads: the config's NChips (all of the board's when absent); None when the
    board has fewer, or NChips is no count: the link capture would wait for links that are not there."""
    value = settings.get("NChips", board.n_chips)
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if 1 <= n <= board.n_chips else None


def _events(settings: dict) -> int:
    try:
        return int(settings.get("NEvents", DEFAULT_EVENTS))
    except (TypeError, ValueError):
        return DEFAULT_EVENTS


class RunningDaq(Served):
    """A daq server with at most one run on the stream at a time."""

    name = "daq"

    def __init__(self, bench: Bench):
        self.bench = bench
        self.acq = Acquisition(bench)
        self.fsm = DaqFsm()
        self.starting: RunSettings | None = None   # built on the next tick, after the reply
        self.run: Run | None = None

    def _begin(self, settings: RunSettings) -> None:
        self.fsm.fire("start")
        self.starting = settings

    def _end_now(self) -> None:
        """`stop` during a run: what was not sent is lost, END_OF_RUN goes out now."""
        self.starting = None
        if self.run is not None:
            self.run.cut_short(time.monotonic())

    def tick(self, now: float) -> float | None:
        if self.starting is not None:
            self.run, self.starting = self.acq.run(self.starting, now), None
        if self.run is None:
            return None
        self.run.push(self.bench.push, now)
        if self.run.finished(now):
            # the menu has sent everything: the server's idle loop stops the run
            self.run = None
            self.fsm.fire("stop")
            return None
        return self.run.next_due()

    def close(self) -> None:
        self.run = self.starting = None
        self.bench.push.close()


class MenusDaqServer(RunningDaq, FsmServed):
    """DAQManager: the daqFSM, `initialize`/`configure` with the `daq` key of a second frame."""

    section, who = "daq", "daq server"

    def __init__(self, bench: Bench):
        super().__init__(bench)
        self.menus: dict = {}
        self.top: dict = {}       # the daq section's own run settings (NChips)
        self.active: str | None = None
        self.actions = {"initialize": self._initialize, "configure": self._configure,
                        "start": self._start, "stop": self._stop, "destroy": self._destroy,
                        "status": lambda daq: None}

    def error_on(self) -> set[str]:
        return self.bench.faults.error_on

    def _initialize(self, daq: dict) -> None:
        self.fsm.fire("initialize")
        self.bench.push.bind_from_config(daq.get("zmqPushPull_port", DEFAULT_DATA_PORT))
        self.menus = {str(k): dict(as_mapping(v)) for k, v in as_mapping(daq.get("menus")).items()}
        self.top = {k: daq[k] for k in ("NChips",) if k in daq}
        self.active = None  # the menus are built anew; none is chosen yet

    def _configure(self, daq: dict) -> None:
        self.active = None
        self.fsm.fire("configure")
        name = daq.get("active_menu")
        if name is None:
            # the real server throws on the missing key; model it as an error state
            self.fsm.fire("error")
            return
        name = str(name)
        if name in self.menus:
            self.active = name
            self.menus[name] = merge(self.menus[name], as_mapping(as_mapping(daq.get("menus")).get(name)))

    def _start(self, daq) -> None:
        if self.fsm.running:
            return
        if self.active is None:
            # the real server dereferences a null menu here; model it as an error state
            self.fsm.fire("error")
            return
        if self.fsm.state is not State.CONFIGURED or not self.acq.links_align():
            return  # state unchanged: the client retries
        settings = self.menus[self.active]
        chips = read_chips({**self.top, **settings}, self.bench.board)
        if chips is None:
            self._too_many_chips(settings.get("NChips", self.top.get("NChips")))
            return
        self._begin(RunSettings(_events(settings), self.active in INJECTING_MENUS,
                                settings_identity(settings, self.active), chips))

    def _too_many_chips(self, asked) -> None:
        """The menus server says only `error`; its log (stderr here) says why."""
        print(f"raff emulator: daq server: NChips {asked!r}, but this hexaboard has "
              f"{self.bench.board.n_chips} ROCs: error state", file=sys.stderr, flush=True)
        self._error()

    def _stop(self, daq) -> None:
        if self.fsm.fire("stop"):
            self._end_now()

    def _destroy(self, daq) -> None:
        if self.fsm.running:
            self._stop(None)
        self.fsm.fire("destroy")
        self.active = None

    def _error(self) -> None:
        if self.fsm.running:
            self._stop(None)
        self.fsm.fire("error")


class Daq2021Server(RunningDaq, HandshakeServed):
    """The 2021 zmq-server: READY handshake, `{daq: {...}}`, `run_done`, `Stopped`."""

    who = "2021 daq server"
    yaml_commands = frozenset({"configure", "initialize"})

    def __init__(self, bench: Bench):
        super().__init__(bench)
        self.settings: dict = {}
        self.actions = {"start": self._start, "stop": self._stop, "status": self._status,
                        "run_done": self._run_done}

    def error_on(self) -> frozenset:
        return self.bench.faults.error_on

    def fault(self, command: str) -> str:
        return self._error(f"emulator fault injected on '{command}'")

    def answer(self, command: str, entry: dict) -> str:
        action = self.actions.get(command)
        return action() if action else self._error(f"unknown command '{command}'")

    def answer_yaml(self, command: str, frame: bytes, entry: dict) -> str:
        return self._configure(frame)

    def _configure(self, frame: bytes) -> str:
        doc = yaml_frame(frame, "2021 daq server")
        if not isinstance(doc, dict) or not isinstance(doc.get("daq"), dict):
            return self._error("the configuration has no 'daq' section")
        self.settings = merge(self.settings, doc["daq"])
        # DR 0.1.2 configures before every run: a rebind each time would drop the pullers
        self.bench.push.bind_from_config(self.settings.get("zmqPushPull_port", DEFAULT_DATA_PORT),
                                         again=False)
        if not self.fsm.running:
            self.fsm.state = State.CONFIGURED
        return "Configured"

    def _start(self) -> str:
        if self.fsm.state is State.CONFIGURED and self.acq.links_align():
            s = self.settings
            chips = read_chips(s, self.bench.board)
            if chips is None:
                return self._error(f"NChips {s.get('NChips')!r}: this hexaboard has "
                                   f"{self.bench.board.n_chips} ROCs")
            self._begin(RunSettings(_events(s), injecting_2021(s), settings_identity(s), chips))
        return self.fsm.reply

    def _run_done(self) -> str:
        return "notdone" if self.fsm.running else "done"

    def _status(self) -> str:
        return self.fsm.reply

    def _stop(self) -> str:
        if self.fsm.fire("stop"):
            self._end_now()
        return "Stopped"

    def _error(self, why: str) -> str:
        if self.fsm.running:
            self._stop()
        self.fsm.state = State.ERROR
        return f"error: {why}"
