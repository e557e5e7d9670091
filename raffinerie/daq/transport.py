"""One REQ socket to one hexactrl-sw server: a request, its reply, a timeout.

Every real server is a zmq REP socket answering text frames. This layer
moves frames and nothing else: what a reply must say is checked by the
protocol layers above it (`daqcontrol`, `slowcontrol`). A reply is quoted
before it goes into a message, so a server cannot forge extra lines.
"""

from __future__ import annotations

import time
from typing import Callable

import zmq

from raffinerie.config.network import Host
from raffinerie.errors import RaffError

REPLY_SHOWN = 160  # characters of a reply quoted in an error message
WATCH_SECONDS = 0.1  # how often a wait asks whether the backend process is still alive

Watch = Callable[[], None]  # raises BackendError when the backend is known to be dead


class BackendError(RaffError):
    """The backend is unreachable, silent, refusing, or sends bad data."""

    exit_code = 3


def no_watch() -> None:
    """A remote backend: nothing on this machine tells whether it is alive."""


def poll(sock, timeout: float, watch: Watch = no_watch) -> bool:
    """Wait up to `timeout` seconds for `sock` to be readable; True if it is.

    The wait goes in slices of WATCH_SECONDS, asking `watch` after each, so a
    backend process that died (the embedded emulator) is named within a
    tenth of a second instead of ending in a timeout that blames the network.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if sock.poll(max(0, int(min(left, WATCH_SECONDS) * 1000))):
            return True
        watch()
        if left <= WATCH_SECONDS:
            return False


def quote(reply: str | bytes) -> str:
    """A reply as it may appear in a one-line message: repr-quoted, cut."""
    if isinstance(reply, bytes):
        reply = reply.decode(errors="replace")
    shown = repr(reply[:REPLY_SHOWN])
    return shown + ("…" if len(reply) > REPLY_SHOWN else "")


class Endpoint:
    """A REQ socket that survives timeouts (closed and opened again).

    `role` names the server in messages ("daq server", "daq-client",
    "slow control"); `hint` is added to a timeout, e.g. the setting to try
    when a server of the other generation stops answering.
    """

    def __init__(self, ctx: zmq.Context, role: str, host: Host, timeout: float, hint: str = "",
                 watch: Watch = no_watch):
        self.ctx, self.role, self.host, self.timeout, self.hint = ctx, role, host, timeout, hint
        self.watch = watch
        self.sock = None
        self.requests = 0

    @property
    def name(self) -> str:
        return f"{self.role} at {self.host}"

    def _open(self):
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(f"tcp://{self.host.hostname}:{self.host.port}")
        except zmq.ZMQError as exc:
            sock.close(0)
            raise BackendError(f"cannot connect to the {self.name}: {exc}") from None
        return sock

    def request(self, *frames: str | bytes, what: str | None = None) -> str:
        """Send one request (one or more frames) and return its one-frame reply."""
        what = what or _text(frames[0])
        if self.sock is None:
            self.sock = self._open()
        data = [f.encode() if isinstance(f, str) else f for f in frames]
        self.sock.send_multipart(data)
        self.requests += 1
        try:
            answered = poll(self.sock, self.timeout, self.watch)
        except BackendError:
            self.close()  # the reply will never come; the socket cannot be reused
            raise
        if not answered:
            self.close()  # a REQ socket that lost its reply cannot be reused
            hint = f"; {self.hint}" if self.hint else ""
            raise BackendError(f"{self.name} did not answer '{what}' within {self.timeout:g} s "
                               f"(is it running and reachable?{hint})")
        reply = self.sock.recv_multipart()
        if len(reply) != 1:
            raise BackendError(f"{self.name} answered '{what}' with a {len(reply)}-part message "
                               f"{quote(b' | '.join(reply))}; a hexactrl-sw server sends one frame")
        return reply[0].decode(errors="replace")

    def refuse(self, what: str, reply: str, expected: str, hint: str = "") -> BackendError:
        """The error for a reply that is not the one a server sends on success."""
        tail = f"; {hint}" if hint else ""
        return BackendError(f"{self.name} answered '{what}' with {quote(reply)}, "
                            f"expected {expected}{tail}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None


def _text(frame: str | bytes) -> str:
    text = frame.decode(errors="replace") if isinstance(frame, bytes) else frame
    return text if len(text) <= 40 and "\n" not in text else "a YAML request"
