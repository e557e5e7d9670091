"""The daq server's data stream: its PUSH socket and the messages of a run.

A run is `START_RUN_HGCROC`, data messages (each a complete boost archive),
`END_OF_RUN`, each due at a time: at once, or spread over NEvents / rate
seconds like a real L1A generator. Messages are handed to zmq without
blocking, so the serving loop keeps answering requests while a run goes on;
with no puller connected they wait (a real PUSH blocks there too).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import zmq

from raffinerie.emulator.model import EVENTS_PER_MESSAGE, messages

START_RUN = b"START_RUN_HGCROC"
END_OF_RUN = b"END_OF_RUN"


class DataPush:
    """The PUSH socket, bound at start-up (a fixed port) or by the server's config."""

    def __init__(self, ctx: zmq.Context, host: str, fixed_port: int | None = None):
        self.ctx, self.host = ctx, host
        self.fixed = fixed_port is not None
        self.sock: zmq.Socket | None = None
        self.port: int | None = None
        if self.fixed:
            self._bind(fixed_port)

    def bind_from_config(self, port, again: bool = True) -> None:
        """What the real server does with `zmqPushPull_port`: unbind, bind again there.

        `again=False` keeps a socket already bound on that port. A port fixed
        on the command line wins; a failed bind is only reported
        (zmq_pusher::bind swallows the error too).
        """
        try:
            port = int(port)
        except (TypeError, ValueError):
            port = 8888
        if self.fixed or (not again and port == self.port):
            return
        self.close()
        try:
            self._bind(port)
        except zmq.ZMQError as exc:
            print(f"raff emulator: daq server cannot bind its data port {port}: {exc}", file=sys.stderr)

    def _bind(self, port: int) -> None:
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)  # a run is never dropped for a slow reader
        try:
            if port:
                _bind_again(sock, f"tcp://{self.host}:{port}")
            else:
                port = sock.bind_to_random_port(f"tcp://{self.host}")
        except zmq.ZMQError:
            sock.close(0)
            raise
        self.sock, self.port = sock, port

    def try_send(self, message: bytes) -> bool:
        """Hand one message to zmq; False when no puller can take it now."""
        if self.sock is None:
            return False
        try:
            self.sock.send(message, zmq.NOBLOCK, copy=len(message) < 65536)
            return True
        except zmq.Again:
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        self.sock, self.port = None, None


def _bind_again(sock: zmq.Socket, endpoint: str, seconds: float = 1.0) -> None:
    """Bind, retrying briefly: zmq closes the previous socket on that port in the background."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            sock.bind(endpoint)
            return
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@dataclass
class Run:
    """The messages of one run and when each is due."""

    messages: list[bytes]
    due: np.ndarray          # monotonic seconds, one per message
    events: int
    ends_at: float           # when the menu has sent its last event
    sent: int = 0

    @property
    def done(self) -> bool:
        return self.sent == len(self.messages)

    def finished(self, now: float) -> bool:
        return self.done and now >= self.ends_at

    def next_due(self) -> float:
        return float(self.due[self.sent]) if not self.done else self.ends_at

    def push(self, data: DataPush, now: float) -> None:
        """Send every message due by `now`, in order, as far as the socket takes them."""
        while not self.done and self.due[self.sent] <= now and data.try_send(self.messages[self.sent]):
            self.sent += 1

    def cut_short(self, now: float) -> None:
        """`stop` during the run: the menu stops, the rest of the data never comes."""
        if not self.done:
            self.messages = self.messages[:self.sent] + [END_OF_RUN]
            self.due = np.append(self.due[:self.sent], now)
        self.ends_at = now


def plan_run(event, chip, words, n_chips: int, start: float, rate: float | None,
             drop_after: int | None = None) -> Run:
    """The run's messages and due times; `drop_after` loses the stream after N events."""
    n_events = len(event) // max(n_chips, 1)
    kept = n_events if drop_after is None else min(drop_after, n_events)
    data = messages(event[:kept * n_chips], chip[:kept * n_chips], words[:kept * n_chips],
                    EVENTS_PER_MESSAGE * n_chips)
    # the event that closes each message, and when the generator has sent it
    last_event = np.minimum(np.arange(1, len(data) + 1) * EVENTS_PER_MESSAGE, kept)
    period = 0.0 if not rate else 1.0 / rate
    due = [start] + list(start + last_event * period)
    msgs = [START_RUN] + data
    ends_at = start + n_events * period
    if drop_after is None:
        msgs.append(END_OF_RUN)
        due.append(ends_at)
    return Run(msgs, np.array(due, dtype=np.float64), n_events, ends_at)
