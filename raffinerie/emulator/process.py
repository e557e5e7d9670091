"""Running the emulator as a separate process on free loopback ports.

This is the embedded default backend: `raff build` without a network file
starts one, talks to it over real sockets like to a hexacontroller, and
stops it at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from raffinerie.config.network import DEFAULT_SEED, DEFAULT_TIMEOUT, Host, Network, emulator_identity
from raffinerie.errors import RaffError

STARTUP_TIMEOUT = 30.0


class EmulatorProcess:
    """`raff emulator` in a child process; a context manager."""

    def __init__(self, seed: int = DEFAULT_SEED, host: str = "127.0.0.1", extra_args: list[str] | None = None):
        self.seed, self.host = seed, host
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.ports: dict | None = None

    def start(self) -> "EmulatorProcess":
        cmd = [sys.executable, "-m", "raffinerie", "emulator", "--host", self.host, "--seed",
               str(self.seed), "--server-port", "0", "--target-port", "0", "--data-port", "0",
               "--announce", *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        line = self.proc.stdout.readline()  # the first line announces the ports
        if not line or time.monotonic() > deadline:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RaffError(f"the embedded emulator did not start: {err.strip() or 'no answer'}")
        self.ports = json.loads(line)
        return self

    @property
    def network(self) -> Network:
        p = self.ports
        return Network(file=None, server=Host(self.host, p["server"]), target=Host(self.host, p["target"]),
                       client=None, board=emulator_identity(self.seed), timeout=DEFAULT_TIMEOUT,
                       data=Host(self.host, p["data"]))

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
