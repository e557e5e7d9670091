"""Running the emulator as a separate process on free loopback ports.

This is the embedded default backend: `raff build` without a network file
starts one, talks to it over real sockets like to a hexacontroller, and
stops it at the end. The child dies with its parent (it watches for that
itself), and a start-up that prints nothing still ends in bounded time.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

from raffinerie.config.daqconfig import Generation
from raffinerie.config.network import (DEFAULT_SEED, DEFAULT_TIMEOUT, Host, Network, SlowControl,
                                       emulator_identity)
from raffinerie.daq.transport import BackendError
from raffinerie.errors import RaffError

STARTUP_TIMEOUT = 30.0
LAST_WORDS_BYTES = 65536   # of a dead emulator's stderr, read for its last line


class EmulatorProcess:
    """`raff emulator` in a child process; a context manager."""

    def __init__(self, seed: int = DEFAULT_SEED, host: str = "127.0.0.1",
                 extra_args: list[str] | None = None, generation: Generation = Generation.MENUS,
                 slow_control: SlowControl | None = None, board: str = "LD"):
        self.seed, self.host, self.board = seed, host, board
        self.generation, self.slow_control = generation, slow_control
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.ports: dict | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "raffinerie", "emulator", "--host", self.host, "--seed",
               str(self.seed), "--server-port", "0", "--target-port", "0", "--data-port", "0",
               "--client-port", "0", "--generation", self.generation.value, "--board", self.board,
               "--announce"]
        if self.slow_control is not None:
            cmd += ["--slow-control", self.slow_control.value]
        return cmd + self.extra_args

    def start(self) -> "EmulatorProcess":
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        line = self._first_line(time.monotonic() + STARTUP_TIMEOUT)
        try:
            self.ports = json.loads(line)
        except ValueError:
            self.stop()
            raise RaffError(f"the embedded emulator did not start: it printed {line[:200]!r}") from None
        return self

    def _first_line(self, deadline: float) -> str:
        """The announce line, read without ever blocking past the deadline."""
        fd, buf = self.proc.stdout.fileno(), b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            ready = select.select([fd], [], [], max(left, 0))[0] if left > 0 else []
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                err = b""
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read() or b""
                self.stop()
                why = err.decode(errors="replace").strip().splitlines()
                raise RaffError("the embedded emulator did not start: "
                                + (why[-1] if why else f"no answer within {STARTUP_TIMEOUT:g} s"))
            buf += chunk
        return buf.split(b"\n", 1)[0].decode(errors="replace")

    @property
    def network(self) -> Network:
        p = self.ports
        client = Host(self.host, p["client"]) if p.get("client") else None
        data = Host(self.host, p["data"]) if p.get("data") else None
        return Network(file=None, server=Host(self.host, p["server"]), target=Host(self.host, p["target"]),
                       client=client, board=emulator_identity(self.seed), timeout=DEFAULT_TIMEOUT,
                       data=data, generation=Generation(p.get("generation", self.generation.value)),
                       slow_control=SlowControl(p["slow_control"]) if p.get("slow_control") else None)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def death(self) -> str | None:
        """How the emulator ended ("killed by SIGKILL", "exited with status 1: ..."), None while it runs."""
        code = self.proc.poll() if self.proc is not None else None
        if code is None:
            return None
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        if code == 0:  # `raff emulator` cleans up and exits 0 on these (cli/emulate.py)
            return "exited with status 0, as it does on SIGTERM or SIGINT"
        last = self._last_words()
        return f"exited with status {code}" + (f": {last}" if last else "")

    def watch(self) -> None:
        """Raise a BackendError naming the emulator if it has died (the session asks every 0.1 s)."""
        why = self.death()
        if why is not None:
            raise BackendError(f"embedded emulator (pid {self.proc.pid}) died: {why}")

    def _last_words(self) -> str:
        """The last line the dead emulator wrote to stderr, without waiting for more."""
        stream = self.proc.stderr
        if stream is None or stream.closed:
            return ""
        fd, data = stream.fileno(), b""
        while len(data) < LAST_WORDS_BYTES and select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, LAST_WORDS_BYTES)
            if not chunk:
                break
            data += chunk
        lines = data.decode(errors="replace").strip().splitlines()
        return lines[-1][:200] if lines else ""

    def cpu_seconds(self) -> float | None:
        """CPU time the emulator has used so far (Linux /proc; None elsewhere or when it is gone).

        It shares this machine's cores with raff, which real hardware does
        not: `raff build --profile` shows both, so that a throughput figure
        can be read against the cores it had.
        """
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        self.proc = None

    def __enter__(self) -> "EmulatorProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
