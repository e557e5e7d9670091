"""Getting a run's data: from the daq server's stream, or from the daq-client's file.

PUSH hands a run's messages out in turn to every connected puller, so
raffinerie either is the only puller (`StreamReadout`) or drives the
daq-client and reads the .raw file it writes (`ClientReadout`), never both.
Either way the result is the bytes of one .raw file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import zmq

from raffinerie.config.network import Host
from raffinerie.daq.rawformat import FIRST_OBJECT, join_messages
from raffinerie.daq.transport import WATCH_SECONDS, BackendError, Watch, no_watch, poll
from raffinerie.hgcroc import RECORD_BYTES, TAIL_BYTES

START_RUN = b"START_RUN_HGCROC"
END_RUN = b"END_OF_RUN"
FILE_POLL_SECONDS = 0.005
POLL_SECONDS = 0.02  # status polling while a run goes on: 50 requests per second
MIN_POLL_SECONDS = 0.001
STABLE_POLLS = 3   # a file is complete when its size holds for this many polls (and fits the format)


class StreamReadout:
    """A PULL socket on the daq server's data stream."""

    def __init__(self, ctx: zmq.Context, data: Host, timeout: float, watch: Watch = no_watch):
        self.data, self.timeout, self.watch = data, timeout, watch
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            self.sock.connect(f"tcp://{data.hostname}:{data.port}")
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise BackendError(f"cannot connect to the data stream at {data}: {exc}") from None

    def begin(self) -> None:
        """Drop leftovers of an aborted run before starting a new one."""
        while self.sock.poll(0):
            self.sock.recv()

    def receive(self) -> tuple[bytes, int]:
        """The run's bytes (one .raw image) and its number of data messages."""
        messages: list[bytes] = []
        started = False
        where = f"data stream from {self.data}"
        while True:
            if not poll(self.sock, self.timeout, self.watch):
                state = (f"after {len(messages)} data messages" if started
                         else "before START_RUN_HGCROC")
                raise BackendError(f"{where} stopped {state}: nothing for {self.timeout:g} s (is "
                                   "another puller, e.g. a daq-client, connected? with `readout: "
                                   "pull` raffinerie must be the only one)")
            message = self.sock.recv()
            if message == START_RUN:
                started, messages = True, []
            elif message == END_RUN:
                if started:
                    return join_messages(messages, where), len(messages)
            elif message.startswith(b"START_RUN_"):
                raise BackendError(f"{where} started a run of another kind "
                                   f"({message.decode(errors='replace')[:40]}); expected START_RUN_HGCROC")
            elif started:
                messages.append(message)

    def close(self) -> None:
        self.sock.close(0)


class ClientReadout:
    """The daq-client writes each run into a fresh folder under `root`; raffinerie takes the file."""

    def __init__(self, control, root: Path, timeout: float, watch: Watch = no_watch):
        self.control, self.root, self.timeout, self.watch = control, root, timeout, watch
        self.folder: Path | None = None
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the daq-client output folder {root}: "
                               f"{exc.strerror}") from None

    def begin(self, client_section: dict) -> None:
        """A fresh folder, the daq-client configured to write there, and started."""
        self.folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))
        os.chmod(self.folder, 0o777)  # the daq-client may run as another user
        section = {**client_section, "outputDirectory": str(self.folder), "run_type": "raff"}
        self.control.configure(section)
        self.control.start()

    def progress(self) -> int:
        """Bytes written so far (a growing file is a run that is alive)."""
        return sum(_size(f) for f in self._files())

    def ended(self) -> bool:
        """The daq-client has closed a file: the run is over on the stream."""
        files = self._files()
        return len(files) == 1 and _closed(_size(files[0]))

    def collect(self) -> bytes:
        """Wait until exactly one complete file is there, stop the client, take the file."""
        file = self._wait_for_file()
        self.control.stop()
        data = file.read_bytes()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
        return data

    def abandon(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _files(self) -> list[Path]:
        try:
            return [p for p in self.folder.iterdir() if p.is_file()]
        except OSError:
            return []

    def _wait_for_file(self) -> Path:
        deadline = time.monotonic() + self.timeout
        last, stable, watched = -1, 0, time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() - watched >= WATCH_SECONDS:
                self.watch()
                watched = time.monotonic()
            files = self._files()
            if len(files) > 1:
                names = ", ".join(sorted(p.name for p in files))
                raise BackendError(f"the daq-client wrote {len(files)} files for one run into "
                                   f"{self.folder} ({names}); expected one")
            if files:
                size = files[0].stat().st_size
                if _closed(size):
                    return files[0]
                stable = stable + 1 if size == last and _complete(size) else 0
                if stable >= STABLE_POLLS:
                    return files[0]
                if size != last:
                    deadline = time.monotonic() + self.timeout  # still writing
                last = size
            time.sleep(FILE_POLL_SECONDS)
        what = "no file" if last < 0 else f"an incomplete file ({last} bytes)"
        raise BackendError(f"the daq-client wrote {what} into {self.folder} within {self.timeout:g} s "
                           "after the run ended (is `client_output` the folder the daq-client "
                           "writes to, as this machine sees it?)")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _complete(size: int) -> bool:
    """A size a whole .raw file can have: header, then whole records (last tail optional)."""
    body = size - FIRST_OBJECT
    return body > 0 and body % RECORD_BYTES in (0, RECORD_BYTES - TAIL_BYTES)


def _closed(size: int) -> bool:
    """The daq-client closed the file: it ends without the last record's tail.

    While a run is written every record carries its 40-byte tail; the closed
    file lacks the last one (159 of the 160 real files). A file that ends
    with a tail is either still growing or one of the rare closed files that
    keep it, so for those the size has to hold for a few polls.
    """
    body = size - FIRST_OBJECT
    return body > 0 and body % RECORD_BYTES == RECORD_BYTES - TAIL_BYTES


def wait(finished: Callable[[], bool], alive: Callable[[], int], timeout: float, what: str,
         ended: Callable[[], bool] = lambda: False, watch: Watch = no_watch) -> None:
    """Poll `finished` (the server's status) until it says the run is over.

    At most every 20 ms (50 requests per second), except right after
    `ended()`, a local sign that the run is over (the daq-client closed its
    file), which is checked every millisecond at no cost to the server. The
    run may take as long as it needs while `alive()` keeps changing (data
    arriving); `timeout` seconds without either is an error, and so is `watch`
    finding the backend process dead.
    """
    deadline = time.monotonic() + timeout
    seen, last_poll, watched = alive(), -1.0, time.monotonic()
    while True:
        now = time.monotonic()
        if now - watched >= WATCH_SECONDS:
            watch()
            watched = now
        if now - last_poll >= (MIN_POLL_SECONDS if ended() else POLL_SECONDS):
            last_poll = now
            if finished():
                return
        current = alive()
        if current != seen:
            seen, deadline = current, now + timeout
        if now > deadline:
            raise BackendError(f"{what} did not end: no progress for {timeout:g} s")
        time.sleep(MIN_POLL_SECONDS)
