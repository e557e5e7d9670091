"""Configuration documents that exist only in memory, by the path a procedure names them with.

A Datenraffinerie 1.0 procedure read directly (`raffinerie.config.dr10read.as_012`)
has merged defaults and initial settings that no file holds. Every reader of
target and daq files goes through `raffinerie.config.resolve.ConfigFiles`,
which looks here first. The path names the 1.0 file and the procedure, so a
problem in one reads `test_procedures.yaml#full_toa_scan.target: ...`.
"""

from __future__ import annotations

from pathlib import Path

from raffinerie.config.yamlio import real_path

_DOCS: dict[Path, dict] = {}


def put(path: Path, doc: dict) -> None:
    _DOCS[real_path(path)] = doc


def get(path: Path) -> dict | None:
    return _DOCS.get(real_path(path)) if _DOCS else None
