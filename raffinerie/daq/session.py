"""The client side of the hexactrl-sw protocol: one session per backend.

A session sends the target only what differs from its current state, starts
the run (retrying while the links align), receives the raw data stream until
`END_OF_RUN`, stops, and returns the bytes. Every request and every receive
has a timeout: a dead, slow or misbehaving backend gives a clear error that
names the host, the port and the command, never a hang.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import yaml
import zmq

from raffinerie.config.network import Host, Network
from raffinerie.errors import RaffError

START_RUN = b"START_RUN_HGCROC"
END_RUN = b"END_OF_RUN"
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class BackendError(RaffError):
    """The backend is unreachable, silent, refusing, or sends bad data."""

    exit_code = 3


def config_diff(current: dict, wanted: dict) -> dict:
    """The part of `wanted` that differs from `current` (leaves and new keys)."""
    out = {}
    for key, value in wanted.items():
        old = current.get(key, _MISSING) if isinstance(current, dict) else _MISSING
        if old is value:
            continue  # shared, untouched branch of consecutive points' configs
        if isinstance(value, dict) and isinstance(old, dict):
            sub = config_diff(old, value)
            if sub:
                out[key] = sub
        elif old is _MISSING or old != value or type(old) is not type(value):
            out[key] = value
    return out


_MISSING = object()


@dataclass
class Run:
    raw: bytes
    messages: int
    seconds: float


class _Endpoint:
    """A REQ socket that survives timeouts (closed and opened again)."""

    def __init__(self, ctx: zmq.Context, name: str, host: Host, timeout: float):
        self.ctx, self.name, self.host, self.timeout = ctx, name, host, timeout
        self.sock = None

    def _open(self):
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(f"tcp://{self.host.hostname}:{self.host.port}")
        except zmq.ZMQError as exc:
            sock.close(0)
            raise BackendError(f"cannot connect to the {self.name} at {self.host}: {exc}") from None
        return sock

    def request(self, command: str, payload: dict | None = None) -> str:
        if self.sock is None:
            self.sock = self._open()
        frames = [command.encode()]
        if payload is not None:
            frames.append(yaml.dump(payload, Dumper=_Dumper).encode())
        self.sock.send_multipart(frames)
        if not self.sock.poll(int(self.timeout * 1000)):
            self.close()  # a REQ socket that lost its reply cannot be reused
            raise BackendError(f"{self.name} at {self.host} did not answer '{command}' within "
                               f"{self.timeout:g} s (is it running and reachable?)")
        reply = self.sock.recv().decode(errors="replace")
        if reply.startswith("error"):
            raise BackendError(f"{self.name} at {self.host} refused '{command}': "
                               f"{reply.partition(':')[2].strip() or reply}")
        return reply

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None


class DaqSession:
    """One connection to a backend (daq server, data stream, target)."""

    def __init__(self, network: Network, data: Host, start_retries: int = 20):
        self.network, self.data_host = network, data
        self.timeout = network.timeout
        self.start_retries = start_retries
        self.ctx = zmq.Context()
        self.daq = _Endpoint(self.ctx, "daq server", network.server, self.timeout)
        self.target = _Endpoint(self.ctx, "target", network.target, self.timeout)
        self.data = self.ctx.socket(zmq.PULL)
        self.data.setsockopt(zmq.LINGER, 0)
        try:
            self.data.connect(f"tcp://{data.hostname}:{data.port}")
        except zmq.ZMQError as exc:
            self.close()
            raise BackendError(f"cannot connect to the data stream at {data}: {exc}") from None
        self.target_state: dict | None = None
        self.daq_state: dict | None = None

    def close(self) -> None:
        self.daq.close()
        self.target.close()
        self.data.close(0)
        self.ctx.term()

    def __enter__(self) -> "DaqSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- configuration ----------------------------------------------------------

    def configure(self, target: dict, daq: dict) -> None:
        """Bring the backend to this point's configuration, sending only changes."""
        if self.target_state is None:
            self.target.request("initialize", target)
        else:
            diff = config_diff(self.target_state, target)
            if diff:
                self.target.request("configure", diff)
        self.target_state = target
        if self.daq_state is None:
            self.daq.request("initialize", daq)
        elif daq != self.daq_state:
            self.daq.request("configure", daq)
        self.daq_state = daq

    # -- a run ----------------------------------------------------------------------

    def acquire(self, target: dict, daq: dict) -> Run:
        """Configure, run, receive the raw stream until END_OF_RUN, stop."""
        t0 = time.monotonic()
        self.configure(target, daq)
        self._drain()
        self._start()
        try:
            raw, count = self._receive()
        finally:
            self._stop_quietly()
        return Run(raw, count, time.monotonic() - t0)

    def _drain(self) -> None:
        """Drop leftovers of an aborted run before starting a new one."""
        while self.data.poll(0):
            self.data.recv()

    def _start(self) -> None:
        for attempt in range(self.start_retries + 1):
            try:
                reply = self.daq.request("start")
            except BackendError as exc:
                if "refused 'start'" in str(exc) and attempt < self.start_retries:
                    time.sleep(0.05)  # links still aligning
                    continue
                raise
            if reply.strip() == "running":
                return
            raise BackendError(f"daq server at {self.network.server} answered '{reply}' to 'start', "
                               "expected 'running'")

    def _receive(self) -> tuple[bytes, int]:
        chunks: list[bytes] = []
        started = False
        where = f"data stream from {self.data_host}"
        while True:
            if not self.data.poll(int(self.timeout * 1000)):
                state = f"after {len(chunks)} data messages" if started else "before START_RUN_HGCROC"
                raise BackendError(f"{where} stopped {state}: nothing for {self.timeout:g} s")
            message = self.data.recv()
            if message == START_RUN:
                started, chunks = True, []
            elif message == END_RUN:
                if not started:
                    continue  # the end of an older run
                return b"".join(chunks), len(chunks)
            elif started:
                chunks.append(message)

    def _stop_quietly(self) -> None:
        try:
            self.daq.request("stop")
        except BackendError:
            pass  # the error that matters was already raised, or will be by the next command
