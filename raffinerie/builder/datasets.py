"""Datasets: the measurements of a daq procedure as one table, built vectorised.

One row per channel per point (per event too in `events` mode). Columns:

- the measurement's own columns, plus `point` (index in the scan) and `repeat`;
- the configuration that applied to the row's channel: channel-wise (`ch`,
  `calib` or `cm` block of its chip, by channel type), half-wise
  (`DigitalHalf`, `GlobalAnalog`, `ReferenceVoltage`, `MasterTdc` of its
  half) and global (`Top`), each named by its parameter (prefixed with the
  block where two blocks share a name). A scanned register shows the value
  it had for that row, so `Calib` is the scan coordinate wherever it was set;
- scan axes that are not chip registers (e.g. `NEvents`), by axis name;
- numeric daq settings (the active menu's, `server` and `client` leaves).

No Python runs per row: every column is a gather from a small per-point,
per-chip lookup table.
"""

from __future__ import annotations

import numpy as np

from raffinerie.config.library import Origin
from raffinerie.config.daqconfig import LOCATION_KEYS, active_settings, server_section
from raffinerie.config.parameters import ParameterTable, load_table
from raffinerie.config.tree import get_path
from raffinerie.graph.plan import PointSet
from raffinerie.errors import RaffError

UNKNOWN_SUFFIX = "_unknown"  # see raffinerie.builder.importer
BOARD = "board"  # one dataset per board: its identity is in the meta, a column for readers
from raffinerie.store.store import Store

CHANNEL_BLOCKS = ("ch", "calib", "cm")
HALF_BLOCKS = ("DigitalHalf", "GlobalAnalog", "ReferenceVoltage", "MasterTdc")
GLOBAL_BLOCKS = ("Top",)
SLOT_BASE = {"ch": 0, "calib": 72, "cm": 74}   # row slot of a chip: 72 ch, 2 calib, 4 cm
CHIP_SLOTS = 78


def read_measurements(points: PointSet, store: Store) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Measurement columns of every point, concatenated; and the point of each row.

    A column that some measurements lack (written by an older decoder) is
    NaN in their rows.
    """
    events = points.procedure.mode == "events"
    parts = []
    for i in range(points.total):
        key = points.key(i)
        # checked against the manifest: a damaged measurement is never used, it is acquired again
        parts.append(store.read_events(key, check=True) if events else store.read_summary(key, check=True))
    lengths = np.array([len(next(iter(p.values()))) for p in parts], dtype=np.int64)
    names = list(dict.fromkeys(name for p in parts for name in p))
    columns = {name: np.concatenate([p[name] if name in p else np.full(n, np.nan)
                                     for p, n in zip(parts, lengths)]) for name in names}
    if events and "half" not in columns:
        columns["half"] = np.zeros_like(columns["chip"])
    return columns, np.repeat(np.arange(points.total), lengths)


def assemble(points: PointSet, store: Store, table: ParameterTable | None = None) -> dict[str, np.ndarray]:
    """The dataset of `points` as numpy columns (before `data_columns`)."""
    table = table or load_table()
    data, point = read_measurements(points, store)
    if points.scan.explicit is not None:
        coordinate_index, repeat = point, np.asarray(points.explicit_repeats, dtype=np.int64)[point]
    else:
        coordinate_index, repeat = np.divmod(point, points.scan.repeat)
    out = dict(data)
    out["point"] = point.astype(np.int32)
    out["repeat"] = repeat.astype(np.int16)
    registers = _Registers(points, table, coordinate_index)
    out.update(registers.columns(data))
    for axis_number, axis in enumerate(points.scan.axes):
        if axis.name not in out and not registers.covers(axis):
            values = np.asarray(axis.values)
            if values.dtype.kind in "biuf":
                out[axis.name] = values[_axis_index(points, axis_number)[coordinate_index]]
    for name, value in _daq_settings(points.base["daq"]).items():
        column = name if name not in out else f"daq.{name}"
        out[column] = np.full(len(point), value)
    _unknown_to_nan(out)
    return out


def _unknown_to_nan(out: dict[str, np.ndarray]) -> None:
    """`raff import` marks a scan value a run's yaml lacked with `<axis>_unknown` = 1.

    The axis column holds a placeholder there; every reader of the dataset
    (analyses, `raff show`, exports) gets NaN instead, never an invented value.
    """
    for name in [n for n in out if n.endswith(UNKNOWN_SUFFIX)]:
        axis = name[:-len(UNKNOWN_SUFFIX)]
        unknown = out[name] == 1
        if axis in out and unknown.any():
            out[axis] = out[axis].astype(np.float64)
            out[axis][unknown] = np.nan


def select(columns: dict[str, np.ndarray], wanted: list[str] | None,
           where: Origin | None = None) -> dict[str, np.ndarray]:
    """The columns `data_columns` names, in its order; a name the dataset lacks is an error."""
    if not wanted:
        return columns
    unknown = [name for name in wanted if name not in columns and name != BOARD]
    if unknown:
        message = (f"data_columns names {', '.join(map(repr, unknown))}, which the dataset does "
                   f"not have; it has: {', '.join(columns)}")
        if where is None:
            raise RaffError(message)
        raise where.error(message).as_error()
    return {name: columns[name] for name in wanted if name != BOARD}  # the board: in the meta


def _axis_index(points: PointSet, axis_number: int) -> np.ndarray:
    """Value index of one axis for every coordinate (first axis slowest)."""
    if points.scan.explicit is not None:
        return np.array([index[axis_number] for index in points.scan.explicit], dtype=np.int64)
    sizes = [len(a.values) for a in points.scan.axes]
    inner = int(np.prod(sizes[axis_number + 1:], dtype=np.int64))
    return (np.arange(points.scan.coordinates_total) // inner) % sizes[axis_number]


class _Registers:
    """Per-row register values from the base config and the scan's places."""

    def __init__(self, points: PointSet, table: ParameterTable, coordinate_index: np.ndarray):
        self.points, self.table, self.coordinate_index = points, table, coordinate_index
        self.target = points.base["target"]
        self.chips = sorted(int(k[5:]) for k in self.target if str(k).startswith("roc_s") and k[5:].isdigit())
        self.n_chips = max(self.chips, default=-1) + 1
        self.scanned: dict[tuple[str, str], list] = {}
        for number, axis in enumerate(points.scan.axes):
            for place in axis.places:
                if place[0] == "target" and len(place) == 5 and table.lookup(place[1:]) is not None:
                    chip = int(str(place[1])[5:])
                    self.scanned.setdefault((place[2], place[4]), []).append((number, chip, place[3]))

    def covers(self, axis) -> bool:
        return any(p[0] == "target" and len(p) == 5 and self.table.lookup(p[1:]) is not None
                   for p in axis.places)

    def columns(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chip = data["chip"].astype(np.int64)
        half = data["half"].astype(np.int64)
        channel, kind = data["channel"].astype(np.int64), data["channeltype"]
        slot = np.where(kind == 0, channel, np.where(kind == 1, 72 + channel, 74 + channel))
        names = self._names()
        out = {}
        for name in sorted({p.name for b in CHANNEL_BLOCKS for p in self.table.block(b)}):
            out[names[("ch", name)]] = self._gather(CHANNEL_BLOCKS, name, chip, slot, CHIP_SLOTS)
        for block in HALF_BLOCKS + GLOBAL_BLOCKS:
            index = half if block in HALF_BLOCKS else np.zeros_like(half)
            for param in self.table.block(block):
                out[names[(block, param.name)]] = self._gather((block,), param.name, chip, index,
                                                               self.table.instances[block])
        return out

    def _names(self) -> dict[tuple[str, str], str]:
        families = {("ch", p.name) for b in CHANNEL_BLOCKS for p in self.table.block(b)}
        families |= {(b, p.name) for b in HALF_BLOCKS + GLOBAL_BLOCKS for p in self.table.block(b)}
        count: dict[str, int] = {}
        for _, name in families:
            count[name] = count.get(name, 0) + 1
        return {(b, n): n if count[n] == 1 else f"{b}.{n}" for b, n in families}

    def _lookup(self, blocks: tuple[str, ...], name: str, width: int) -> np.ndarray:
        """Base values [chip, slot] of parameter `name` over `blocks`."""
        values = np.zeros((max(self.n_chips, 1), width), dtype=np.int64)
        for block in blocks:
            param = self.table.parameters.get((block, name))
            if param is None:
                continue
            start = SLOT_BASE.get(block, 0)
            for chip in self.chips:
                for index in range(self.table.instances[block]):
                    value = get_path(self.target, (f"roc_s{chip}", block, index, name), param.default)
                    values[chip, start + index] = value if isinstance(value, (int, np.integer)) else param.default
        return values

    def _gather(self, blocks: tuple[str, ...], name: str, chip: np.ndarray, slot: np.ndarray,
                width: int) -> np.ndarray:
        base = self._lookup(blocks, name, width)
        overrides = [(axis_number, c, SLOT_BASE.get(b, 0) + index)
                     for b in blocks for axis_number, c, index in self.scanned.get((b, name), [])]
        dtype = _dtype(max((self.table.parameters[(b, name)].width for b in blocks
                            if (b, name) in self.table.parameters), default=32))
        if not overrides:
            return base[chip, slot].astype(dtype)
        per_point = np.broadcast_to(base, (self.points.scan.coordinates_total,) + base.shape).copy()
        for axis_number, c, s in overrides:
            values = np.asarray(self.points.scan.axes[axis_number].values, dtype=np.int64)
            per_point[:, c, s] = values[_axis_index(self.points, axis_number)]
        return per_point[self.coordinate_index, chip, slot].astype(dtype)


def _dtype(width: int):
    for bits, dtype in ((8, np.uint8), (16, np.uint16), (32, np.uint32)):
        if width <= bits:
            return dtype
    return np.int64


def _daq_settings(daq: dict) -> dict[str, float | int]:
    """Numeric run settings: the active menu's first (menus), then server and client.

    Location settings (ports) say nothing about the data and are left out.
    """
    out = {}
    sections = (active_settings(daq), server_section(daq), daq.get("client") or {})
    for section in sections:
        for name, value in section.items():
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, (int, float)) and name not in out and name not in LOCATION_KEYS:
                out[str(name)] = value
    return out
