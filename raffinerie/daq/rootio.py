"""hexactrl ROOT outputs read with uproot into raffinerie's tables.

uproot reads only the parts of a file it needs, so a ROOT file has no size
bound here; it must be a regular file, opened non-blocking (a FIFO or a
device named `X.root` would otherwise hang or never end).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from raffinerie.errors import RaffError
from raffinerie.hgcroc import CHANNELS_PER_HALF, CHANNELTYPE_CALIB, CHANNELTYPE_CHANNEL, CM_SLOTS, SUMMARY_COLUMNS

SUMMARY_TREE = "runsummary/summary"
EVENT_TREE = "unpacker_data/hgcroc"


def _half_of(channel: np.ndarray, channeltype: np.ndarray) -> np.ndarray:
    return np.where(channeltype == CHANNELTYPE_CHANNEL, channel // CHANNELS_PER_HALF,
                    np.where(channeltype == CHANNELTYPE_CALIB, channel, channel // len(CM_SLOTS))).astype(np.int8)


def _open(path: Path):
    import uproot

    try:
        handle = _regular_file(path)
    except FileNotFoundError:
        raise RaffError("ROOT file not found", file=path) from None
    except OSError as exc:
        raise RaffError(f"cannot read ROOT file: {exc.strerror or exc}", file=path) from None
    try:
        return uproot.open(handle)
    except Exception as exc:  # uproot raises many kinds for a damaged file
        handle.close()
        why = " ".join(str(exc).split()).replace(f" for file path {path.resolve()}", "")
        raise RaffError(f"not a readable ROOT file ({why[:200]})", file=path) from None


def _regular_file(path: Path):
    """A binary file object of `path`, checked to be a regular file before and after it is opened."""
    _require_regular(os.stat(path), path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _require_regular(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _require_regular(info: os.stat_result, path: Path) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise RaffError("ROOT file is a directory, not a file", file=path)
    if not stat.S_ISREG(info.st_mode):
        raise RaffError("ROOT file is not a regular file (a device, FIFO or socket)", file=path)


def _read_tree(path: Path, tree: str) -> dict[str, np.ndarray]:
    path = Path(path)
    with _open(path) as f:
        if tree not in f:
            raise RaffError(f"no {tree} tree in this ROOT file", file=path)
        arrays = f[tree].arrays(library="np")
    return {name: np.asarray(values) for name, values in arrays.items()}


def read_root_summary(path: Path) -> dict[str, np.ndarray]:
    """The `runsummary/summary` tree as summary columns (plus `half`)."""
    table = _read_tree(path, SUMMARY_TREE)
    table["half"] = _half_of(table["channel"].astype(np.int64), table["channeltype"].astype(np.int64))
    order = [c for c in SUMMARY_COLUMNS if c in table] + [c for c in table if c not in SUMMARY_COLUMNS]
    return {c: table[c] for c in order}


def read_root_events(path: Path) -> dict[str, np.ndarray]:
    """The `unpacker_data/hgcroc` event tree, when the file has one."""
    return _read_tree(path, EVENT_TREE)


def summary_as_decoded(table: dict[str, np.ndarray], n_events: int, path: Path) -> dict[str, np.ndarray]:
    """A `runsummary` table in the shape the decoder writes a point's summary: its columns and
    dtypes (hgcroc.SUMMARY_DTYPES), its rows by chip, half and readout slot. What the tree
    does not hold is not invented: `n_events` is the run's (its yaml's NEvents, given by the
    caller) and `tot_overflow`, which no summary counts, is -1 (unknown)."""
    from raffinerie.hgcroc import CALIB_SLOT, CHANNELTYPE_CM, SUMMARY_DTYPES

    missing = [c for c, _ in SUMMARY_DTYPES if c not in table and c not in ("n_events", "tot_overflow")]
    if missing:
        raise RaffError(f"the {SUMMARY_TREE} tree has no {', '.join(missing)} branch", file=path)
    channel = table["channel"].astype(np.int64)
    kind = table["channeltype"].astype(np.int64)
    half = table["half"].astype(np.int64)
    slot = np.where(kind == CHANNELTYPE_CHANNEL, channel - CHANNELS_PER_HALF * half,
                    np.where(kind == CHANNELTYPE_CALIB, CALIB_SLOT, CM_SLOTS[0] + channel % len(CM_SLOTS)))
    known = (kind == CHANNELTYPE_CHANNEL) | (kind == CHANNELTYPE_CALIB) | (kind == CHANNELTYPE_CM)
    if not known.all():
        raise RaffError(f"channeltype {int(kind[~known][0])} in the {SUMMARY_TREE} tree is none of "
                        "0, 1, 100", file=path)
    order = np.lexsort((slot, half, table["chip"].astype(np.int64)))
    rows = len(order)
    full = {**table, "n_events": np.full(rows, n_events), "tot_overflow": np.full(rows, -1)}
    return {c: np.asarray(full[c])[order].astype(dtype) for c, dtype in SUMMARY_DTYPES}
