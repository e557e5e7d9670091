"""Words for counts and runs of numbers, shared by every layer that prints (a leaf: imports nothing).

One helper, so that no message says "1 points" and none prints 72 channel numbers
where `0–71` says it.
"""

from __future__ import annotations

from typing import Iterable


def word(n: int, singular: str, plural: str | None = None) -> str:
    """`point` for 1, `points` otherwise (`analysis`/`analyses` with `plural`)."""
    return singular if n == 1 else (plural or singular + "s")


def count(n: int, singular: str, plural: str | None = None) -> str:
    """`1 dataset`, `2 datasets`, `1 analysis`, `3 analyses`, `0 points`."""
    return f"{n} {word(n, singular, plural)}"


def int_runs(values: Iterable) -> str | None:
    """`0–71`, `0–3,8,10–12`: whole numbers in runs of three or more joined by an en dash, in
    the order given; None when some value is not a whole number (then the caller lists them)."""
    values = list(values)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{run[0]}–{run[-1]}")
        else:
            parts += map(str, run)
    return ",".join(parts)
