"""The daq-client (zmq-client) of both generations: pulls the stream, writes `.raw` files.

Like DAQClient: after `start` it waits for a START_RUN message, opens
`<outputDirectory>/<run_type><N>.raw` (N counts runs from 0 since `start`),
decodes every data message as its own boost archive and writes its records
into the file, and closes the file at END_OF_RUN. The file is one archive:
header, class preamble, the records, the last one without its 40-byte tail.
A message that is not an archive where data are expected makes the real
client throw outside its try block, and it dies.
"""

from __future__ import annotations

import sys

import zmq

from raffinerie.daq.rawformat import ARCHIVE_HEADER, FIRST_OBJECT, PREAMBLE
from raffinerie.emulator.daqfsm import DaqFsm, FsmServed, State
from raffinerie.emulator.stream import END_OF_RUN, START_RUN
from raffinerie.emulator.wire import Died, EventLog, Faults, HandshakeServed, yaml_frame
from raffinerie.hgcroc import RECORD_BYTES, TAIL_BYTES


class RawWriter:
    """One `.raw` file, written record by record as messages arrive."""

    def __init__(self, path: str):
        self.path = path
        self.file = open(path, "wb")
        self.file.write(ARCHIVE_HEADER)
        self.file.flush()
        self.records = 0

    def add(self, records: bytes) -> None:
        if not records:
            return
        if self.records == 0:
            self.file.write(PREAMBLE)  # boost writes the class preamble before the first object
        self.file.write(records)
        self.file.flush()
        self.records += len(records) // RECORD_BYTES

    def close(self) -> None:
        if self.records:
            # the file ends right after the last record's data (no tail), like the real files
            self.file.truncate(self.file.tell() - TAIL_BYTES)
        self.file.close()


def archive_records(message: bytes) -> bytes:
    """The whole records of one data message (a complete archive); Died if it is none."""
    if not message.startswith(ARCHIVE_HEADER):
        raise Died(f"daq-client: a {len(message)}-byte message that is not a boost archive "
                   f"({message[:20]!r}...) where data were expected; boost throws outside the "
                   f"client's try block and it terminates")
    body = message[FIRST_OBJECT:]
    # objects are read until the archive is exhausted: a partial last object is lost
    return body[:len(body) - len(body) % RECORD_BYTES]


class Puller:
    """The PULL side and the files: shared by both generations."""

    def __init__(self, ctx: zmq.Context, log: EventLog):
        self.ctx, self.log = ctx, log
        self.sock: zmq.Socket | None = None
        self.endpoint: str | None = None
        self.prefix: str | None = None     # outputDirectory/run_type
        self.writer: RawWriter | None = None
        self.file_id = 0
        self.receiving = False

    def connect(self, host, port) -> None:
        """Disconnect from the last server, connect to this one.

        The same server again keeps the connection: DR 0.1.2 configures the
        2021 client before every run, and a reconnect would let PUSH hand
        the start of the next run to the pipe being torn down.
        """
        endpoint = f"tcp://{host}:{port}"
        if self.sock is not None and endpoint == self.endpoint:
            return
        if self.sock is None:
            self.sock = self.ctx.socket(zmq.PULL)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.RCVHWM, 0)
        if self.endpoint is not None:
            try:
                self.sock.disconnect(self.endpoint)
            except zmq.ZMQError:
                pass
        try:
            self.sock.connect(endpoint)
            self.endpoint = endpoint
        except zmq.ZMQError as exc:
            self.endpoint = None
            print(f"raff emulator: daq-client cannot connect to {endpoint}: {exc}", file=sys.stderr)

    def start(self) -> None:
        self.receiving, self.file_id = True, 0

    def stop(self) -> None:
        self.receiving = False
        self._close_file(complete=False)

    def on_data(self, message: bytes) -> None:
        if self.writer is None:
            if message == START_RUN:
                self._open_file()
            return  # anything else before a START_RUN is ignored ("not in dataTypeMap")
        if message == END_OF_RUN:
            self._close_file(complete=True)
            return
        self.writer.add(archive_records(message))

    def _open_file(self) -> None:
        path = f"{self.prefix}{self.file_id}.raw"
        try:
            self.writer = RawWriter(path)
        except OSError as exc:
            print(f"raff emulator: daq-client cannot write {path}: {exc}", file=sys.stderr)
            self.writer = None

    def _close_file(self, complete: bool) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.log.write({"server": "client", "event": "file", "path": self.writer.path,
                        "records": self.writer.records, "complete": complete})
        self.writer = None
        self.file_id += 1

    def close(self) -> None:
        self.stop()
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None


class MenusDaqClient(FsmServed):
    """DAQClient: the daqFSM, `initialize`/`configure` with the `client` key of a second frame."""

    name = "client"
    section, who = "client", "daq-client"

    def __init__(self, ctx: zmq.Context, faults: Faults, log: EventLog):
        self.faults = faults
        self.puller = Puller(ctx, log)
        self.fsm = DaqFsm()
        self.actions = {"initialize": self._initialize, "configure": self._configure,
                        "start": self._start, "stop": self._stop, "destroy": self._destroy,
                        "status": lambda cfg: None}

    def error_on(self) -> set[str]:
        return self.faults.error_on

    def _error(self) -> None:
        if self.fsm.running:
            self._stop(None)
        self.fsm.fire("error")

    def _initialize(self, config: dict) -> None:
        self.fsm.fire("initialize")
        if "serverIP" not in config:
            self.fsm.fire("error")  # DAQClient catches the missing key and goes to error
        self.puller.connect(config.get("serverIP", ""), config.get("zmqPushPull_port", 8888))

    def _configure(self, config: dict) -> None:
        self.fsm.fire("configure")
        if "outputDirectory" in config and "run_type" in config:
            self.puller.prefix = f"{config['outputDirectory']}/{config['run_type']}"
        else:
            self.fsm.fire("error")

    def _start(self, config) -> None:
        if self.fsm.fire("start"):
            self.puller.start()

    def _stop(self, config) -> None:
        if self.fsm.fire("stop"):
            self.puller.stop()

    def _destroy(self, config) -> None:
        if self.fsm.running:
            self._stop(None)
        self.fsm.fire("destroy")

    def pull_socket(self):
        return self.puller.sock if self.fsm.running and self.puller.receiving else None

    def on_data(self, message: bytes) -> None:
        self.puller.on_data(message)

    def close(self) -> None:
        self.puller.close()


class Client2021(HandshakeServed):
    """The 2021 zmq-client: READY handshake, `{global: {...}}`, `Data puller stopped`."""

    name = "client"
    who = "2021 daq-client"
    yaml_commands = frozenset({"configure", "initialize"})

    def __init__(self, ctx: zmq.Context, faults: Faults, log: EventLog):
        self.faults = faults
        self.puller = Puller(ctx, log)
        self.state = State.CREATED

    def error_on(self) -> frozenset:
        return self.faults.error_on

    def fault(self, command: str) -> str:
        return self._error(f"emulator fault injected on '{command}'")

    def answer_yaml(self, command: str, frame: bytes, entry: dict) -> str:
        return self._configure(frame)

    def answer(self, command: str, entry: dict) -> str:
        if command == "start":
            if self.state in (State.CONFIGURED, State.RUNNING):
                if self.state is State.CONFIGURED:
                    self.puller.start()
                self.state = State.RUNNING
            return self.state.value
        if command == "stop":
            self.puller.stop()
            if self.state is State.RUNNING:
                self.state = State.CONFIGURED
            return "Data puller stopped"
        if command == "status":
            return self.state.value
        return self._error(f"unknown command '{command}'")

    def _configure(self, frame: bytes) -> str:
        doc = yaml_frame(frame, "2021 daq-client")
        config = doc.get("global") if isinstance(doc, dict) else None
        if not isinstance(config, dict):
            return self._error("the configuration has no 'global' section")
        missing = [k for k in ("outputDirectory", "run_type", "serverIP") if k not in config]
        if missing:
            return self._error(f"the configuration lacks {', '.join(missing)}")
        self.puller.prefix = f"{config['outputDirectory']}/{config['run_type']}"
        self.puller.connect(config["serverIP"], config.get("data_push_port", 8888))
        if self.state is not State.RUNNING:
            self.state = State.CONFIGURED
        return "Configured"

    def _error(self, why: str) -> str:
        self.puller.stop()
        self.state = State.ERROR
        return f"error: {why}"

    def pull_socket(self):
        return self.puller.sock if self.state is State.RUNNING and self.puller.receiving else None

    def on_data(self, message: bytes) -> None:
        self.puller.on_data(message)

    def close(self) -> None:
        self.puller.close()
