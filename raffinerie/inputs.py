"""The files a command read: the inputs of its no-op check (`raffinerie.store.stamp`).

Every reader of configuration or analysis code records the path it read
(or looked for: a file that appears later changes what a command does), so
the check knows exactly which files to stat, with no list kept by hand.
"""

from __future__ import annotations

import os

_read: set[str] = set()


def record(path) -> None:
    _read.add(os.path.abspath(os.fspath(path)))


def recorded() -> list[str]:
    return sorted(_read)
