"""hexactrl ROOT outputs read with uproot into raffinerie's tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raffinerie.daq.summary import SUMMARY_COLUMNS
from raffinerie.errors import RaffError

SUMMARY_TREE = "runsummary/summary"
EVENT_TREE = "unpacker_data/hgcroc"


def _half_of(channel: np.ndarray, channeltype: np.ndarray) -> np.ndarray:
    return np.where(channeltype == 0, channel // 36,
                    np.where(channeltype == 1, channel, channel // 2)).astype(np.int8)


def _open(path: Path):
    import uproot

    try:
        return uproot.open(path)
    except FileNotFoundError:
        raise RaffError("ROOT file not found", file=path) from None
    except Exception as exc:  # uproot raises many kinds for a damaged file
        why = " ".join(str(exc).split()).replace(f" for file path {path.resolve()}", "")
        raise RaffError(f"not a readable ROOT file ({why[:200]})", file=path) from None


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
