"""Runs as users have them: a `.raw` file with its `.yaml`, or a ROOT file.

The characterisation mode of each chip half decides how channel words are
read, and comes from the run's configuration (`roc_sN.DigitalHalf.H.
CalibrationSC`), never from the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raffinerie.config.tree import get_path, normalize
from raffinerie.config.yamlio import load_yaml
from raffinerie.daq.rawformat import Frames, Halves, check_halves, read_frames
from raffinerie.daq.summary import event_table, summarize
from raffinerie.errors import RaffError

MODES = ("characterisation", "normal")


def chip_name(chip: int) -> str:
    return f"roc_s{chip}"


def characterisation_modes(target: dict, n_chips: int) -> np.ndarray:
    """(n_chips, 2) booleans: CalibrationSC of every chip half (absent = 0)."""
    out = np.zeros((n_chips, 2), dtype=bool)
    for chip in range(n_chips):
        for half in (0, 1):
            out[chip, half] = bool(get_path(target, (chip_name(chip), "DigitalHalf", half,
                                                     "CalibrationSC"), 0))
    return out


def run_target(doc) -> dict:
    """The target part of a run configuration (hexactrl run yaml or bare target)."""
    doc = normalize(doc if isinstance(doc, dict) else {})
    target = doc.get("target", doc)
    return target if isinstance(target, dict) else {}


@dataclass
class DecodedRun:
    source: Path
    frames: Frames
    halves: Halves
    characterisation: np.ndarray
    n_chips: int

    def summary(self) -> dict[str, np.ndarray]:
        return summarize(self.frames, self.characterisation, self.halves, self.n_chips)

    def events(self) -> dict[str, np.ndarray]:
        return event_table(self.frames, self.characterisation, self.halves)

    def corruption_report(self) -> list[str]:
        """One line per chip with corrupt halves: how many, in which events."""
        lines = []
        bad = ~self.halves.good
        for chip in range(self.n_chips):
            rows = (self.frames.chip == chip) & bad.any(axis=1)
            if rows.any():
                events = self.frames.event[rows]
                lines.append(f"chip {chip}: {int(bad[self.frames.chip == chip].sum())} corrupt halves "
                             f"in {len(events)} events ({_spans(events)})")
        return lines


def _spans(values: np.ndarray) -> str:
    values = np.unique(values)
    breaks = np.flatnonzero(np.diff(values) != 1)
    starts = np.concatenate([[values[0]], values[breaks + 1]])
    ends = np.concatenate([values[breaks], [values[-1]]])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, ends)]
    return "events " + ", ".join(parts[:8]) + (", ..." if len(parts) > 8 else "")


def decode_run(data: bytes, source: Path, modes: np.ndarray | bool,
               n_chips: int | None = None) -> DecodedRun:
    """Decode raw bytes; `modes` is the characterisation mode per (chip, half),
    or one mode for all."""
    frames = read_frames(data, str(source))
    chips = max(frames.n_chips, n_chips or 0, 1)
    if isinstance(modes, (bool, np.bool_)):
        modes = np.full((chips, 2), bool(modes))
    elif modes.shape[0] < chips:  # chips the configuration does not describe: normal mode
        modes = np.vstack([modes, np.zeros((chips - modes.shape[0], 2), dtype=bool)])
    return DecodedRun(source, frames, check_halves(frames), modes, chips)


def open_raw(path: Path, config: Path | None = None, mode: str | None = None) -> DecodedRun:
    """Decode a `.raw` file; the mode comes from `mode`, `config` or `FILE.yaml`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RaffError("raw file not found", file=path) from None
    except OSError as exc:
        raise RaffError(f"cannot read raw file: {exc.strerror}", file=path) from None
    if mode is not None:
        return decode_run(data, path, mode == "characterisation")
    config = config or path.with_suffix(".yaml")
    if not config.is_file():
        raise RaffError(f"no run configuration: {config} does not exist; give --config RUN.yaml "
                        "or --mode (the channel-word layout cannot be guessed from the data)",
                        file=path)
    doc = load_yaml(config, "run configuration")
    n_chips = int(get_path(normalize(doc), ("daq", "server", "NChips"), 0) or 0) \
        if isinstance(doc, dict) else 0
    modes = characterisation_modes(run_target(doc), n_chips or 3)
    return decode_run(data, path, modes, n_chips or None)
