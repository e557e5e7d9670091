"""Number options of the command line, checked where they are parsed.

`float("nan")` and `float("inf")` parse, and NaN compares false with
everything, so `--max-corrupt nan` would silently switch the corrupt-halves
gate off; an int option would take 0 or -3 workers. Each number option says
its range here, and anything outside it is one argparse error naming the
option (exit 2), before anything runs.
"""

from __future__ import annotations

import argparse
import math


def real(low: float, high: float, low_open: bool = False):
    """An argparse type: a finite number from `low` to `high` (above `low` if `low_open`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'above' if low_open else 'from'} {_fmt(low)}"
                f"{' and at most' if low_open else ' to'} {_fmt(high)}, got {text!r}")
        return value
    return parse


def whole(low: int, high: int | None = None):
    """An argparse type: a whole number from `low` (to `high`)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            limit = f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}"
            raise argparse.ArgumentTypeError(f"must be a whole number {limit}, got {text!r}")
        return value
    return parse


def _fmt(value: float) -> str:
    return f"{value:g}"


PERCENT = real(0.0, 100.0)
FRACTION = real(0.0, 1.0)
PORT = whole(0, 65535)              # 0: a free port, as the OS picks it
COUNT = whole(0)                    # events, requests, retries: none or more
# worker processes at once (-w, -j): beyond this is a typo, not a machine (each is a process
# or a connection; 1024 is the usual open-file limit of a shell)
WORKERS = whole(1, 1024)
# an L1A rate: above 0, at most the LHC bunch-crossing rate of 40 MHz (no trigger is faster)
TRIGGER_RATE = real(0.0, 40e6, low_open=True)
SEED = whole(0, 2**63 - 1)          # numpy's generators take non-negative seeds


def board_channel(text: str) -> tuple[int, int]:
    """`CHIP:CHANNEL` of a normal channel of a hexaboard (chips 0-5, channels 0-71; the chip is
    checked against the emulated board's ROCs once the board is known)."""
    chip, sep, channel = text.partition(":")
    if not (sep and chip.isdigit() and channel.isdigit() and int(chip) < 6 and int(channel) < 72):
        raise argparse.ArgumentTypeError(f"{text!r} is not CHIP:CHANNEL with CHIP 0-5 and CHANNEL 0-71")
    return int(chip), int(channel)
