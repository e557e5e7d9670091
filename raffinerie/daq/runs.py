"""Runs as users have them: a `.raw` file with its `.yaml`, or a ROOT file.

The characterisation mode of each chip half decides how channel words are
read, and comes from the run's configuration (`roc_sN.DigitalHalf.H.
CalibrationSC`), never from the data. A run yaml that does not say it in the
expected shape (not a mapping, a `target` that is not one, a mode that is
not 0 or 1) is refused: guessing would decode the run silently wrong.

Raw files come from elsewhere, so reading one is bounded: only regular files
(a FIFO or a device is refused before it is opened, and it is opened
non-blocking in case one was swapped in), of at most `raw_size_limit()`
bytes, read whole into memory (the decoder, the summary and the cache all
need the whole run).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raffinerie.config.daqconfig import daq_setting
from raffinerie.config.tree import normalize
from raffinerie.config.yamlio import load_yaml
from raffinerie.daq.rawformat import Frames, Halves, check_halves, read_frames
from raffinerie.daq.summary import event_table, summarize
from raffinerie.errors import RaffError
from raffinerie.hgcroc import CHANNELS_PER_HALF, DEFAULT_CHIPS, HALVES, MAX_CHIPS, chip_index, chip_name

MODES = ("characterisation", "normal")

# The largest raw file read, unless $RAFF_MAX_RAW_BYTES says otherwise. The real
# runs are 0.4-1.2 MB (hexactrl-raw-format.md, section 1.3); 100,000 events of an
# HD board (6 chips) are 235 MB. Decoding and summarising a run takes about 10
# times its size in memory, so 1 GiB is what a DAQ PC of 16 GB still summarises.
DEFAULT_MAX_RAW_BYTES = 1 << 30
MAX_RAW_ENV = "RAFF_MAX_RAW_BYTES"


def raw_size_limit() -> int:
    """The largest raw file read: $RAFF_MAX_RAW_BYTES, else DEFAULT_MAX_RAW_BYTES."""
    text = os.environ.get(MAX_RAW_ENV)
    if text is None or not text.strip():
        return DEFAULT_MAX_RAW_BYTES
    try:
        limit = int(text.strip().replace("_", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise RaffError(f"${MAX_RAW_ENV} is {text!r}; it must be a whole number of bytes (e.g. 4000000000)")
    return limit


def read_raw(path: Path) -> bytes:
    """The bytes of a raw file: a regular file of at most raw_size_limit() bytes."""
    path = Path(path)
    limit = raw_size_limit()
    try:
        _check_raw_file(os.stat(path), limit, path)
        # O_NONBLOCK: a FIFO put there after the check must not hang in open()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(fd)
            _check_raw_file(info, limit, path)
            return _read_exactly(fd, info.st_size, path)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise RaffError("raw file not found", file=path) from None
    except IsADirectoryError:
        raise RaffError("raw file is a directory, not a file", file=path) from None
    except OSError as exc:
        raise RaffError(f"cannot read raw file: {exc.strerror or exc}", file=path) from None


def _check_raw_file(info: os.stat_result, limit: int, path: Path) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(info.st_mode):
        raise RaffError("raw file is not a regular file (a device, FIFO or socket)", file=path)
    if info.st_size > limit:
        raise RaffError(f"raw file is {info.st_size:,} bytes; raw files are limited to {limit:,} bytes "
                        f"(${MAX_RAW_ENV} raises the limit)", file=path)


def _read_exactly(fd: int, size: int, path: Path) -> bytes:
    """`size` bytes from fd; a file that shrinks meanwhile is an error, one that grows is read up to `size`."""
    chunks, got = [], 0
    while got < size:
        chunk = os.read(fd, min(size - got, 1 << 30))
        if not chunk:
            raise RaffError(f"raw file shrank while it was read ({got:,} of {size:,} bytes)", file=path)
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# --- run configurations ---------------------------------------------------------------------

def run_parts(doc, source: Path) -> tuple[dict, dict]:
    """(target, daq) of a run configuration: a hexactrl run yaml, or a bare target.

    Anything but a mapping, or a `target` or `daq` that is not one, is an
    error naming the file: its modes could only be guessed.
    """
    if not isinstance(doc, dict) or not doc:
        raise RaffError(f"run configuration is {_kind(doc)}, not a mapping (a hexactrl run yaml with "
                        "target: and daq:, or a bare target config)", file=source)
    doc = normalize(doc)
    if "target" not in doc and "daq" not in doc:
        return doc, {}
    parts = []
    for part in ("target", "daq"):
        value = doc.get(part)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise RaffError(f"{part}: is {_kind(value)}, not a mapping", file=source)
        parts.append(value)
    return parts[0], parts[1]


def run_chips(daq: dict, source: Path) -> int | None:
    """NChips of a run's daq config (the active menu's, else the server's); None when absent."""
    value = daq_setting(daq, "NChips")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHIPS:
        raise RaffError(f"NChips: {value!r} is not a whole number from 1 to {MAX_CHIPS}", file=source)
    return value


def target_chips(target: dict) -> int | None:
    """The ROCs a run's target configures (highest roc_sN + 1), for a yaml without NChips;
    None when it names none."""
    found = [c for c in map(chip_index, target or {}) if c is not None]
    if not found:
        return None
    if max(found) >= MAX_CHIPS:
        raise RaffError(f"its target configures {chip_name(max(found))}; a hexaboard has "
                        f"{chip_name(0)} to {chip_name(MAX_CHIPS - 1)}")
    return max(found) + 1


def _kind(value) -> str:
    if value is None or value == {}:
        return "empty"
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), f"a {type(value).__name__}")


def characterisation_modes(target: dict, n_chips: int, source: Path | str | None = None) -> np.ndarray:
    """(n_chips, 2) booleans: CalibrationSC of every chip half (absent = 0).

    A level on the way that is not a mapping, or a value other than 0 or 1,
    is an error naming `source`: read as "absent", it would give normal mode.
    """
    out = np.zeros((n_chips, HALVES), dtype=bool)
    for chip in range(n_chips):
        for half in range(HALVES):
            out[chip, half] = _mode(target, (chip_name(chip), "DigitalHalf", half, "CalibrationSC"), source)
    return out


def _mode(target, path: tuple, source) -> bool:
    node = target
    for depth, part in enumerate(path):
        if not isinstance(node, dict):
            where = ".".join(map(str, path[:depth]))
            raise RaffError(f"{where}: is {_kind(node)}, not a mapping", file=source)
        if part not in node:
            return False
        node = node[part]
    if node in (0, 1) and not isinstance(node, float):   # True and False are 1 and 0
        return bool(node)
    raise RaffError(f"{'.'.join(map(str, path))}: {node!r} is not 0 or 1", file=source)


def injecting_channels(target: dict, n_chips: int) -> list[tuple[int, int]]:
    """(chip, channel) of the normal channels a run injects charge into: HighRange or LowRange set
    in a half whose ReferenceVoltage has Calib > 0 and IntCtest on (absent: on), the rule of the
    pedestal analysis (analysis/builtin/common.injected_charge). Their ADC is a pulse, not a
    pedestal: QC leaves them undecided."""
    out = []
    for chip in range(n_chips):
        roc = target.get(chip_name(chip))
        if not isinstance(roc, dict):
            continue
        halves = roc.get("ReferenceVoltage") if isinstance(roc.get("ReferenceVoltage"), dict) else {}
        channels = roc.get("ch") if isinstance(roc.get("ch"), dict) else {}
        for channel, regs in channels.items():
            if not isinstance(channel, int) or not 0 <= channel < HALVES * CHANNELS_PER_HALF:
                continue
            half = halves.get(channel // CHANNELS_PER_HALF)
            half = half if isinstance(half, dict) else {}
            charged = _number(half.get("Calib", 0)) > 0 and _number(half.get("IntCtest", 1)) > 0
            connected = isinstance(regs, dict) and (_number(regs.get("HighRange", 0)) > 0
                                                    or _number(regs.get("LowRange", 0)) > 0)
            if charged and connected:
                out.append((chip, channel))
    return out


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


# --- decoding ---------------------------------------------------------------------------------

@dataclass
class DecodedRun:
    source: Path
    frames: Frames
    halves: Halves
    characterisation: np.ndarray
    n_chips: int
    target: dict | None = None     # the run configuration's target, where one was read

    def summary(self) -> dict[str, np.ndarray]:
        return summarize(self.frames, self.characterisation, self.halves, self.n_chips)

    def events(self) -> dict[str, np.ndarray]:
        return event_table(self.frames, self.characterisation, self.halves)

    @property
    def n_events(self) -> int:
        return int(len(self.frames) // max(self.n_chips, 1))

    @property
    def corrupt_halves(self) -> int:
        return int((~self.halves.good).sum())

    def corrupt_fractions(self) -> dict[int, float]:
        """Per chip, the fraction of its halves that are corrupt (bad header or CRC)."""
        bad = ~self.halves.good
        fractions = {}
        for chip in range(self.n_chips):
            mine = self.frames.chip == chip
            fractions[chip] = float(bad[mine].sum() / max(2 * int(mine.sum()), 1))
        return fractions

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
        modes = np.full((chips, HALVES), bool(modes))
    elif modes.shape[0] < chips:  # chips the configuration does not describe: normal mode
        modes = np.vstack([modes, np.zeros((chips - modes.shape[0], HALVES), dtype=bool)])
    return DecodedRun(source, frames, check_halves(frames), modes, chips)


def open_raw(path: Path, config: Path | None = None, mode: str | None = None) -> DecodedRun:
    """Decode a `.raw` file; the mode comes from `mode`, `config` or `FILE.yaml`."""
    path = Path(path)
    if mode is None:
        config = Path(config) if config else path.with_suffix(".yaml")
        if not config.exists():
            raise RaffError(f"no run configuration: {config} does not exist; give --config RUN.yaml "
                            "or --mode (the channel-word layout cannot be guessed from the data)",
                            file=path)
        target, daq = run_parts(load_yaml(config, "run configuration"), config)
        n_chips = run_chips(daq, config)
        modes = characterisation_modes(target, n_chips or DEFAULT_CHIPS, config)
    data = read_raw(path)
    if mode is not None:
        return decode_run(data, path, mode == "characterisation")
    run = decode_run(data, path, modes, n_chips)
    run.target = target
    return run
