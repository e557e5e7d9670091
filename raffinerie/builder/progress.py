"""Progress of a build: one updating line on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stream=None, quiet: bool = False, prefix: str = ""):
        self.stream = stream or sys.stderr
        # several boards share the terminal: one updating line would be overwritten by the others
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty() and not prefix
        self.quiet, self.prefix = quiet, prefix
        self.name, self.total, self.t0, self.last = "", 0, 0.0, 0.0
        self.unit = "points"

    def info(self, message: str) -> None:
        if not self.quiet:
            self._clear()
            print(self.prefix + message, file=self.stream, flush=True)

    def start(self, name: str, total: int, unit: str = "points") -> None:
        self.name, self.total, self.t0, self.last = name, total, time.monotonic(), 0.0
        self.unit = unit

    def step(self, done: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        interval = 0.2 if self.tty else 5.0
        if done < self.total and now - self.last < interval:
            return
        self.last = now
        elapsed = max(now - self.t0, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        text = (f"{self.prefix}{self.name}: {done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s"
                + (f", ETA {_duration(eta)}" if done < self.total else f", {_duration(elapsed)}"))
        if self.tty:
            print("\r" + text.ljust(78), end="" if done < self.total else "\n", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty and self.last:
            print("\r" + " " * 78 + "\r", end="", file=self.stream)
            self.last = 0.0


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
