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

`write_dataset` stores those columns at the size they really have (see
`raffinerie.store.dataset`): measured values per point and slot, read and
written one block of points at a time, so memory stays bounded whatever
the scan's size; configuration per point, per slot, or once. `assemble`
materialises every row, for the `rows` layout (events mode, imported runs
with unknown scan values, points whose readout slots differ).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from raffinerie.config.expand import AxisRole
from raffinerie.config.library import Origin
from raffinerie.config.daqconfig import LOCATION_KEYS, active_settings, server_section
from raffinerie.config.parameters import ParameterTable, load_table
from raffinerie.config.tree import get_path
from raffinerie.graph.points import PointSet
from raffinerie.errors import RaffError
from raffinerie.hgcroc import CALIB_REGISTER_START, CHANNEL_BLOCKS, CHANNELTYPE_CALIB, CHANNELTYPE_CHANNEL, \
    CM_REGISTER_START, GLOBAL_BLOCKS, HALF_BLOCKS, REGISTER_SLOTS, chip_index, chip_name

from raffinerie.records import DatasetLayout, dataset_record, dataset_shape
from raffinerie.store.dataset import POINT, ROW, SLOT, SLOT_COLUMNS, UNKNOWN_SUFFIX, DatasetWriter
from raffinerie.store.store import Store
from raffinerie.builder.summaryreader import Irregular, summary_blocks
BOARD = "board"  # one dataset per board: a constant column, stored once

SLOT_BASE = {"ch": 0, "calib": CALIB_REGISTER_START, "cm": CM_REGISTER_START}  # register slot of a chip


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
    coordinate_index, repeat = _coordinates(points, point)
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


def _coordinates(points: PointSet, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`PointSet.split_point` over an array of point indices (the explicit repeats as an array)."""
    explicit = points.scan.explicit is not None
    return points.split_point(point, np.asarray(points.explicit_repeats, dtype=np.int64) if explicit else None)


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
        self.chips = sorted(c for c in map(chip_index, self.target) if c is not None)
        self.n_chips = max(self.chips, default=-1) + 1
        self.scanned: dict[tuple[str, str], list] = {}
        for number, axis in enumerate(points.scan.axes):
            for j, place in enumerate(axis.places):
                chip = chip_index(place[1]) if len(place) == 5 else None
                if place[0] == "target" and chip is not None and table.lookup(place[1:]) is not None:
                    self.scanned.setdefault((place[2], place[4]), []).append((number, j, chip, place[3]))

    def covers(self, axis) -> bool:
        return any(p[0] == "target" and len(p) == 5 and self.table.lookup(p[1:]) is not None
                   for p in axis.places)

    def columns(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every register column, one value per row of `data`."""
        return self._each(data, self._gather)

    def compact(self, slots: dict) -> dict[str, tuple[tuple[str, ...], object]]:
        """`columns`, each at its size: per slot, per point, per point and slot, or once."""
        return self._each(slots, self._compact)

    def _each(self, rows: dict, gather) -> dict:
        """`gather(blocks, name, chip, index, width)` of every register, by its column name."""
        chip = rows["chip"].astype(np.int64)
        half = rows["half"].astype(np.int64)
        channel, kind = rows["channel"].astype(np.int64), rows["channeltype"]
        calib, cm = CALIB_REGISTER_START + channel, CM_REGISTER_START + channel
        slot = np.where(kind == CHANNELTYPE_CHANNEL, channel, np.where(kind == CHANNELTYPE_CALIB, calib, cm))
        names = self._names()
        out = {}
        for name in sorted({p.name for b in CHANNEL_BLOCKS for p in self.table.block(b)}):
            out[names[("ch", name)]] = gather(CHANNEL_BLOCKS, name, chip, slot, REGISTER_SLOTS)
        for block in HALF_BLOCKS + GLOBAL_BLOCKS:
            index = half if block in HALF_BLOCKS else np.zeros_like(half)
            for param in self.table.block(block):
                out[names[(block, param.name)]] = gather((block,), param.name, chip, index,
                                                         self.table.instances[block])
        return out

    def _compact(self, blocks, name, chip, slot, width):
        values, scanned, dtype = self._values(blocks, name, width)
        if not scanned:
            return _reduce(values[chip, slot].astype(dtype), (SLOT,))
        kind, reduced = _reduce(values[:, chip, slot].astype(dtype), (POINT, SLOT))  # per coordinate: small
        return (kind, reduced) if kind == () else (kind, reduced[self.coordinate_index])

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
                    value = get_path(self.target, (chip_name(chip), block, index, name), param.default)
                    values[chip, start + index] = value if isinstance(value, (int, np.integer)) else param.default
        return values

    def _gather(self, blocks: tuple[str, ...], name: str, chip: np.ndarray, slot: np.ndarray,
                width: int) -> np.ndarray:
        values, scanned, dtype = self._values(blocks, name, width)
        if not scanned:
            return values[chip, slot].astype(dtype)
        return values[self.coordinate_index, chip, slot].astype(dtype)

    def _values(self, blocks: tuple[str, ...], name: str, width: int) -> tuple[np.ndarray, bool, type]:
        """(values, scanned, dtype) of parameter `name`: [chip, slot], or [coordinate, chip, slot]
        when a scan axis sets it."""
        base = self._lookup(blocks, name, width)
        overrides = [(axis_number, j, c, SLOT_BASE.get(b, 0) + index)
                     for b in blocks for axis_number, j, c, index in self.scanned.get((b, name), [])]
        dtype = _dtype(max((self.table.parameters[(b, name)].width for b in blocks
                            if (b, name) in self.table.parameters), default=32))
        if not overrides:
            return base, False, dtype
        per_point = np.broadcast_to(base, (self.points.scan.coordinates_total,) + base.shape).copy()
        for axis_number, j, c, s in overrides:   # j: the place's element of a search's values
            values = np.asarray(self.points.scan.axes[axis_number].place_values(j), dtype=np.int64)
            per_point[:, c, s] = values[_axis_index(self.points, axis_number)]
        return per_point, True, dtype


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


# --- the stored dataset ----------------------------------------------------------------

PARALLEL_FROM = 4096   # points: below, starting reader processes costs more than it saves


def dataset_meta(name: str, points: PointSet) -> dict:
    """The record (meta.json) of the dataset of procedure `name`, built from its points."""
    proc = points.procedure
    with_board = not proc.data_columns or BOARD in proc.data_columns  # a constant column of the dataset
    return dataset_record(name, [key.hex() for key in points.all_keys()],
                          [a.name for a in points.scan.axes], points.identity if with_board else None,
                          points.take)


def write_dataset(points: PointSet, store: Store, folder: Path, wanted: list[str] | None = None,
                  where: Origin | None = None, board: str | None = None) -> dict:
    """Write the dataset of `points` at `folder`; its shape: {layout, rows, columns, points}."""
    first = None
    if points.procedure.mode != "events" and points.total:
        first = store.read_summary(points.key(0), check=True)
    if first is None or any(name.endswith(UNKNOWN_SUFFIX) for name in first):
        return _write_rows(points, store, folder, wanted, where, board)
    try:
        return _write_grid(points, store, folder, first, wanted, where, board)
    except Irregular:
        shutil.rmtree(folder, ignore_errors=True)
        return _write_rows(points, store, folder, wanted, where, board)


def _attributes(points: PointSet) -> dict:
    axes = points.scan.axes
    numeric = {a.name: list(a.values) for a in axes   # a search's probes: per place, in the rows
               if a.role is not AxisRole.SEARCH and np.asarray(a.values).dtype.kind in "biuf"}
    return {"procedure": points.procedure.name, "axes": [a.name for a in axes],
            "axis_sizes": [len(a.values) for a in axes], "axis_values": numeric,
            "repeat": points.scan.repeat, "explicit": points.scan.explicit is not None}


def _write_rows(points, store, folder, wanted, where, board) -> dict:
    columns = select(assemble(points, store), wanted, where)
    rows = len(next(iter(columns.values()))) if columns else 0
    writer = DatasetWriter(folder, DatasetLayout.ROWS, rows, 1, _attributes(points))
    for name, values in columns.items():
        writer.array(name, values, (ROW,))
    names = list(columns)
    if board is not None and (not wanted or BOARD in wanted):
        writer.constant(BOARD, board)
        names.append(BOARD)
    writer.close(names)
    return dataset_shape(DatasetLayout.ROWS, rows, names, points.total)


def _write_grid(points, store, folder, first: dict, wanted, where, board) -> dict:
    slots = {name: first[name] for name in SLOT_COLUMNS}
    n_slots = len(slots["chip"])
    config = _config_columns(points, slots)
    available = {name: None for name in first} | {name: None for name in config}
    names = list(select(available, wanted, where))
    writer = DatasetWriter(folder, DatasetLayout.GRID, points.total, n_slots, _attributes(points))
    for name in names:
        if name in SLOT_COLUMNS:
            writer.array(name, slots[name], (SLOT,))
        elif name in config:
            dims, values = config[name]
            if dims:
                writer.array(name, values, dims)
            else:
                writer.constant(name, values)
    measured = [n for n in names if n in first and n not in SLOT_COLUMNS]
    dtypes = {n: first[n].dtype for n in measured}
    for start, columns, table in summary_blocks(points, store, writer.blocks, first,
                                                  parallel=points.total >= PARALLEL_FROM):
        for name in measured:
            writer.block(name, start, table[:, columns.index(name), :].astype(dtypes[name], copy=False))
        del table
    if board is not None and (not wanted or BOARD in wanted):
        writer.constant(BOARD, board)
        names.append(BOARD)
    writer.close(names)
    return dataset_shape(DatasetLayout.GRID, points.total * n_slots, names, points.total)


def _config_columns(points: PointSet, slots: dict) -> dict[str, tuple[tuple[str, ...], object]]:
    """Every configuration column, at its size: (dims, values); dims () is a constant."""
    total = points.total
    coordinate_index, repeat = _coordinates(points, np.arange(total))
    out: dict[str, tuple[tuple[str, ...], object]] = {
        "point": ((POINT,), np.arange(total, dtype=np.int32)),
        "repeat": ((POINT,), repeat.astype(np.int16))}
    registers = _Registers(points, load_table(), coordinate_index)
    out.update(registers.compact(slots))
    for axis_number, axis in enumerate(points.scan.axes):
        if axis.name not in out and not registers.covers(axis):
            values = np.asarray(axis.values)
            if values.dtype.kind in "biuf":
                out[axis.name] = ((POINT,), values[_axis_index(points, axis_number)[coordinate_index]])
    for name, value in _daq_settings(points.base["daq"]).items():
        out[name if name not in out and name not in slots else f"daq.{name}"] = ((), value)
    return out


def _reduce(values: np.ndarray, dims: tuple[str, ...]):
    """The smallest form of a column: a constant, or fewer dimensions."""
    if values.size and (values == values.flat[0]).all():
        return (), values.flat[0]
    if dims == (POINT, SLOT) and (values == values[:, :1]).all():
        return (POINT,), np.ascontiguousarray(values[:, 0])
    return dims, values
