"""Progress of a build: one updating line on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time


MEASURED = 3  # steps timed after the first before an ETA is given
_SINGULAR = {"points": "point", "entries": "entry", "runs": "run"}


class Progress:
    def __init__(self, stream=None, quiet: bool = False, prefix: str = ""):
        self.stream = stream or sys.stderr
        # several boards share the terminal: one updating line would be overwritten by the others
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty() and not prefix
        self.quiet, self.prefix = quiet, prefix
        self.name, self.total, self.t0, self.last = "", 0, 0.0, 0.0
        self.unit = "points"
        self.first: tuple[int, float] | None = None

    def info(self, message: str) -> None:
        if not self.quiet:
            self._clear()
            print(self.prefix + message, file=self.stream, flush=True)

    def start(self, name: str, total: int, unit: str = "points") -> None:
        self.name, self.total, self.t0, self.last = name, total, time.monotonic(), 0.0
        self.unit = unit
        self.first = None  # (done, time) at the first step: the session's setup ends there

    def step(self, done: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        interval = 0.2 if self.tty else 5.0
        if done < self.total and now - self.last < interval:
            return
        self.last = now
        elapsed = max(now - self.t0, 1e-9)
        unit = _SINGULAR.get(self.unit, self.unit) if self.total == 1 else self.unit  # 1/1 point
        if done >= self.total:
            text = f"{self.name}: {done}/{self.total} {unit}, {done / elapsed:.1f} {self.unit}/s, {_duration(elapsed)}"
        else:
            text = f"{self.name}: {done}/{self.total} {unit}" + self._pace(done, now)
        text = self.prefix + text
        if self.tty:
            print("\r" + text.ljust(78), end="" if done < self.total else "\n", file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)

    def _pace(self, done: int, now: float) -> str:
        """`, 9.5 points/s, ETA 8 s` from the steps since the first one: the first step carries the
        session's setup (a first point can take a second where the others take 20 ms), so an ETA
        from it would be far off. No ETA until MEASURED steps have been timed."""
        if self.first is None or done <= self.first[0]:
            self.first = self.first or (done, now)
            return ""
        measured, seconds = done - self.first[0], now - self.first[1]
        if measured < MEASURED or seconds <= 0:
            return ""
        rate = measured / seconds
        return f", {rate:.1f} {self.unit}/s, ETA {_duration((self.total - done) / rate)}"

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
