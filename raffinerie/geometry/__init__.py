"""Where each readout channel of a hexaboard sits on its sensor: board geometries as data.

The geometries (`LD-full.csv`, `HD-full.csv` beside this file) are made from
the public channel maps and cell positions by
tools/geometry_from_public_maps.py; each file names its source. A row is one
readout channel (chip, channeltype, channel) with the sensor pad it reads,
its role and its place:

- `cell`: a sensor cell (pad > 0); `calib`: a calibration cell, a small
  cell inside a normal one; `cm0`/`cm1`: the two common-mode words of a
  half; `nc`: a channel connected to no cell (pad < 0).
- x, y (cm): the cell's centre; common-mode and not-connected channels have
  the place the public hexmaps draw them, around the sensor.

Pure numpy: a geometry is read once per process (a few hundred rows).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from raffinerie.errors import RaffError

HERE = Path(__file__).resolve().parent
DEFAULT_GEOMETRY = "LD-full"
# the geometry of each board type (raffinerie.hgcroc.CHIPS_PER_BOARD), and of a chip count
BOARD_GEOMETRY = {"LD": "LD-full", "HD": "HD-full"}
CHIPS_GEOMETRY = {3: "LD-full", 6: "HD-full"}


class Role(enum.Enum):
    CELL = "cell"
    CALIB = "calib"
    CM0 = "cm0"
    CM1 = "cm1"
    NC = "nc"


ROLES = tuple(Role)


@dataclass(frozen=True, eq=False)
class Geometry:
    """One board's channels, as columns of equal length."""

    name: str
    chip: np.ndarray
    channeltype: np.ndarray
    channel: np.ndarray
    pad: np.ndarray
    role: np.ndarray          # index into ROLES
    x: np.ndarray
    y: np.ndarray
    source: str

    @property
    def n_chips(self) -> int:
        return int(self.chip.max()) + 1

    def mask(self, role: Role) -> np.ndarray:
        return self.role == ROLES.index(role)

    def xy(self, mask: np.ndarray) -> np.ndarray:
        return np.column_stack([self.x[mask], self.y[mask]])

    @cached_property
    def _cell_distances(self) -> np.ndarray:
        xy = self.xy(self.mask(Role.CELL))
        d = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        return d

    @property
    def pitch(self) -> float:
        """The distance between neighbouring sensor cells (cm): the smallest between any two."""
        return float(self._cell_distances.min())

    def chip_boundaries(self) -> np.ndarray:
        """Segments (n, 2, 2) along the cell edges that part two chips: the edge two neighbouring
        cells of different chips share is the perpendicular bisector of their centres."""
        cells = self.mask(Role.CELL)
        xy, chip = self.xy(cells), self.chip[cells]
        dist = self._cell_distances
        pitch = float(dist.min())
        delta = xy[None, :, :] - xy[:, None, :]
        i, j = np.nonzero(np.triu((dist < 1.2 * pitch) & (chip[:, None] != chip[None, :])))
        mid = (xy[i] + xy[j]) / 2
        along = delta[i, j] / dist[i, j][:, None]
        perp = np.column_stack([-along[:, 1], along[:, 0]]) * (pitch / np.sqrt(3) / 2)
        return np.stack([mid - perp, mid + perp], axis=1)

    @cached_property
    def _sorted_keys(self) -> tuple[np.ndarray, np.ndarray]:
        keys = _keys(self.chip, self.channeltype, self.channel)
        order = np.argsort(keys)
        return keys[order], order

    def index_of(self, chip, channeltype, channel) -> np.ndarray:
        """The geometry row of each (chip, channeltype, channel); -1 where the board has none."""
        keys, order = self._sorted_keys
        wanted = _keys(np.asarray(chip), np.asarray(channeltype), np.asarray(channel))
        at = np.clip(np.searchsorted(keys, wanted), 0, len(keys) - 1)
        return np.where(keys[at] == wanted, order[at], -1)

    def rows(self, chip, channeltype, channel) -> np.ndarray:
        """A boolean per geometry row: whether the channels given include it."""
        at = self.index_of(chip, channeltype, channel)
        mask = np.zeros(len(self.pad), dtype=bool)
        mask[at[at >= 0]] = True
        return mask


def _keys(chip, channeltype, channel) -> np.ndarray:
    return (chip.astype(np.int64) * 1000 + channeltype.astype(np.int64)) * 1000 + channel.astype(np.int64)


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.csv"))


@lru_cache(maxsize=None)
def load(name: str = DEFAULT_GEOMETRY) -> Geometry:
    """A board geometry by name (`LD-full`, `HD-full`)."""
    path = HERE / f"{name}.csv"
    if name not in names():
        raise RaffError(f"unknown board geometry {name!r}; known: {', '.join(names())}")
    lines = path.read_text().splitlines()
    source = " ".join(line[1:].strip() for line in lines if line.startswith("#"))
    header, *rows = [line.split(",") for line in lines if line and not line.startswith("#")]
    cols = {h: [r[i] for r in rows] for i, h in enumerate(header)}
    ints = {k: np.array(cols[k], dtype=np.int64) for k in ("chip", "channeltype", "channel", "pad")}
    role_index = {r.value: i for i, r in enumerate(ROLES)}
    return Geometry(name, ints["chip"], ints["channeltype"], ints["channel"], ints["pad"],
                    np.array([role_index[r] for r in cols["role"]], dtype=np.int8),
                    np.array(cols["x_cm"], dtype=float), np.array(cols["y_cm"], dtype=float), source)


def for_chips(n_chips: int) -> Geometry:
    """The full board of that many chips (3: LD, 6: HD)."""
    if n_chips not in CHIPS_GEOMETRY:
        raise RaffError(f"no board geometry has {n_chips} chips (LD-full has 3, HD-full 6); "
                        "give the geometry")
    return load(CHIPS_GEOMETRY[n_chips])
