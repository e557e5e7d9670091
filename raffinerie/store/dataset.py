"""A daq procedure's dataset, stored by how each of its columns varies, and read in three forms.

Layout `grid` (summary mode, every point with the same readout slots): a
column is stored at the size it really has, along the dimensions

    ("point", "slot")  measured values, and a scanned register whose value differs between slots
    ("point",)         point, repeat, scan axes, a register scanned alike for every slot
    ("slot",)          chip, half, channel, channeltype, registers that differ between channels
    ()                 the rest of the configuration, daq settings, the board (in the attributes)

so a 131,072-point scan stores its 200-odd constant registers once, not
30 million times. Layout `rows` (events mode, imported runs with unknown
scan values, points whose slots differ): every column is 1-D over rows.

The arrays are Zarr v3 written by zarr-python, chunked and sharded along
points (a block of points is one file per column), with `dimension_names`
and consolidated metadata, so `xarray.open_zarr` reads the folder as it is.

Nothing read is trusted: every chunk ends with a CRC-32C (the `crc32c`
codec of the Zarr v3 spec, after zstd, which has no checksum of its own;
the shard indexes carry one by default), so a flipped bit raises on read
instead of changing a value. What a checksum cannot see, a chunk file
deleted (zarr reads it as the fill value) or the metadata changed (the
constants and axis values live there), is checked on opening a dataset of
the cache against its entry's manifest: the files and their sizes, and the
SHA-256 of the consolidated metadata. A dataset written without chunk
checksums (by an older raffinerie) is refused the same way, and made again
from its measurements (which are checked) by the next build.

A reader asks for the form it wants: `to_pandas(columns, where)` broadcasts
to one row per slot per point (the table distilleries always had),
`to_xarray()` gives the scan axes as dimensions, `to_dask()` is a lazy,
out-of-core DataFrame of blocks of points.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from raffinerie.records import DatasetLayout
from raffinerie.store.files import EntryFormatError
from raffinerie.store.datasetcheck import DatasetDamage, problem

FOLDER = "data.zarr"
POINT, SLOT, ROW = "point", "slot", "row"
SLOT_COLUMNS = ("chip", "half", "channel", "channeltype")
# `raff import` marks a scan value a run's yaml lacked with a column `<axis>_unknown` = 1.
# The built-in analyses keep their own copy (analysis/builtin/common.py): their code is hashed
# into their keys, and only files under builtin/ are.
UNKNOWN_SUFFIX = "_unknown"
CHUNK_BYTES = 1 << 18     # a chunk of ~256 kB uncompressed
SHARD_CHUNKS = 32         # chunks per shard: one file per column per block of points


@dataclass(frozen=True)
class Blocks:
    """How the point (or row) dimension is cut: `chunk` per chunk, `shard` per file."""

    total: int
    chunk: int
    shard: int

    @classmethod
    def for_rows(cls, total: int, row_bytes: int) -> "Blocks":
        chunk = max(1, min(total, 2 ** int(math.log2(max(CHUNK_BYTES // max(row_bytes, 1), 1)))))
        shard = min(chunk * SHARD_CHUNKS, -(-total // chunk) * chunk)
        return cls(total, chunk, shard)

    def ranges(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.total, self.shard):
            yield start, min(start + self.shard, self.total)


class DatasetWriter:
    """Writes a dataset folder with zarr-python, one block of points at a time."""

    def __init__(self, folder: Path, layout: DatasetLayout, n_points: int, n_slots: int, attributes: dict):
        import zarr

        self.folder, self.layout = Path(folder), layout
        self.n_points, self.n_slots = n_points, n_slots
        self.group = zarr.open_group(str(folder), mode="w")
        self.attributes = {**attributes, "layout": str(layout), "n_points": n_points, "n_slots": n_slots}
        self.dims: dict[str, list[str]] = {}
        self.constants: dict[str, object] = {}
        self.blocks = Blocks.for_rows(n_points, 8 * max(n_slots, 1))

    def constant(self, name: str, value) -> None:
        dtype = np.asarray(value).dtype.str  # before .item(): a uint8 register stays uint8
        value = value.item() if isinstance(value, np.generic) else value
        self.constants[name] = [value, dtype]
        self.dims[name] = []

    def array(self, name: str, values: np.ndarray, dims: tuple[str, ...]) -> None:
        """A whole (small) array: ("point",), ("slot",) or ("row",)."""
        values = np.ascontiguousarray(values)
        self._create(name, values.dtype, dims).__setitem__(Ellipsis, values)

    def block(self, name: str, start: int, values: np.ndarray) -> None:
        """Points start .. start+len(values) of a ("point", "slot") column (whole shards)."""
        array = self.group[name] if name in self.dims else self._create(name, values.dtype, (POINT, SLOT))
        array[start:start + len(values)] = values

    def _create(self, name: str, dtype, dims: tuple[str, ...]):
        from zarr.codecs import Crc32cCodec, ZstdCodec

        shape = tuple(self.n_points if d == POINT else self.n_slots if d == SLOT else self.n_points
                      for d in dims)
        blocks = self.blocks if dims and dims[0] in (POINT, ROW) else None
        chunks = shape if blocks is None else (blocks.chunk,) + shape[1:]
        shards = None if blocks is None or blocks.shard <= blocks.chunk else (blocks.shard,) + shape[1:]
        fill = np.nan if np.dtype(dtype).kind == "f" else 0
        self.dims[name] = list(dims)
        return self.group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                                       compressors=(ZstdCodec(level=1), Crc32cCodec()), fill_value=fill,
                                       dimension_names=dims)

    def close(self, columns: list[str]) -> None:
        import zarr

        self.group.attrs.update({**self.attributes, "columns": columns, "dims": self.dims,
                                 "constants": self.constants})
        _quiet()
        zarr.consolidate_metadata(str(self.folder))


class Dataset:
    """A built dataset, opened read-only (cheap: one metadata read).

    A dataset of the cache (a `data.zarr` beside a manifest) is checked
    first (see `problem`); one that fails raises `DatasetDamage`. `check=False`
    re-opens one already checked (a dask partition)."""

    def __init__(self, folder: Path, check: bool = True):
        import zarr

        self.folder = Path(folder)
        if check:
            found = problem(self.folder)
            if found:
                raise DatasetDamage(found)
        _quiet()
        self.group = zarr.open_consolidated(str(self.folder), mode="r")
        attrs = dict(self.group.attrs)
        self.attributes = attrs
        self.layout = _layout(attrs.get("layout"), self.folder)
        self.columns: list[str] = list(attrs["columns"])
        self.dims: dict[str, list[str]] = attrs["dims"]
        self.constants: dict[str, list] = attrs.get("constants", {})
        self.n_points: int = attrs["n_points"]
        self.n_slots: int = attrs["n_slots"]
        self.axes: list[str] = list(attrs.get("axes") or [])

    # -- shape ----------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        if self.layout is DatasetLayout.ROWS:
            return self.n_points
        return self.n_points * self.n_slots

    def __repr__(self) -> str:
        return (f"<Dataset {self.attributes.get('procedure')}: {self.n_rows} rows x "
                f"{len(self.columns)} columns, layout {self.layout}>")

    # -- rows ----------------------------------------------------------------------------

    def to_pandas(self, columns: list[str] | None = None, where: dict | None = None,
                  slots=None):
        """One row per slot per point (per event in `rows`), as distilleries always had.

        `columns`: a projection (default: all, in the dataset's order).
        `where`: {column: value or list of values}; only matching rows, read
        from the blocks that hold them. `slots`: readout slot indices to read.
        """
        import pandas as pd

        return pd.DataFrame(self.to_columns(columns, where, slots=slots))

    def head(self, rows: int = 5):
        """The first rows as a DataFrame, reading only the first points' chunks."""
        import pandas as pd

        points = rows if self.layout is DatasetLayout.ROWS else -(-rows // max(self.n_slots, 1))
        return pd.DataFrame(self.to_columns(points=(0, min(points, self.n_points)))).head(rows)

    def stored(self) -> dict[str, int]:
        """How many columns are stored at each size: {"point × slot": n, "point": n, ..., "once": n}."""
        out: dict[str, int] = {}
        for name in self.columns:
            label = " × ".join(self.dims[name]) or "once"
            out[label] = out.get(label, 0) + 1
        return out

    def to_columns(self, columns: list[str] | None = None, where: dict | None = None,
                   points: tuple[int, int] | None = None,
                   slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Columns of rows; `points` (start, stop) and `slots` (indices) narrow what is read."""
        names = self._names(columns)
        if self.layout is DatasetLayout.ROWS:
            return self._rows(names, where, points)
        start, stop = points or (0, self.n_points)
        point_ix, slot_ix = self._selection(where or {}, start, stop)
        if slots is not None:
            slot_ix = np.intersect1d(slot_ix, np.asarray(slots, dtype=np.int64))
        out = {name: self._broadcast(name, point_ix, slot_ix) for name in names}
        grid = [n for n in (where or {}) if self.dims[n] == [POINT, SLOT]]
        if grid:
            keep = np.ones(len(point_ix) * len(slot_ix), dtype=bool)
            for name in grid:
                keep &= _matches(self._broadcast(name, point_ix, slot_ix), where[name])
            out = {name: values[keep] for name, values in out.items()}
        return out

    def slot_values(self, name: str, reduce=None) -> np.ndarray | None:
        """A column's value per readout slot (`grid` layout): a constant or a per-slot column
        as it is; a per-point one through `reduce` (e.g. `np.any`) over points, else None."""
        if self.layout is not DatasetLayout.GRID or name not in self.dims:
            return None
        dims = self.dims[name]
        if dims == []:
            value, dtype = self.constants[name]
            return np.full(self.n_slots, value, dtype=dtype)
        if dims == [SLOT]:
            return self.group[name][...]
        if dims == [POINT, SLOT] and reduce is not None:
            return reduce(self.group[name][...], axis=0)
        return None

    def to_dask(self, columns: list[str] | None = None, where: dict | None = None):
        """A lazy dask DataFrame, one partition per block of points (out of core)."""
        import dask.dataframe as dd

        names = self._names(columns)
        blocks = Blocks.for_rows(self.n_points, 8 * max(self.n_slots, 1))
        ranges = list(blocks.ranges()) or [(0, 0)]
        meta = self.to_pandas(names, where).iloc[:0] if self.n_points == 0 else \
            _Partition(self.folder, names, where)(ranges[0]).iloc[:0]
        return dd.from_map(_Partition(self.folder, names, where), ranges, meta=meta,
                           enforce_metadata=False)

    # -- the scan as dimensions ------------------------------------------------------------

    def to_xarray(self, lazy: bool = False):
        """An xarray.Dataset: scan axes (and `repeat`) as dimensions, then `slot`.

        A Cartesian scan's `point` dimension is unfolded into its axes; an
        explicit list of points (or a dataset stored by rows) keeps `point`
        (`row`), with the axis values as coordinates on it. `lazy`: dask arrays
        instead of numpy (out of core).
        """
        import xarray as xr

        shape, dims = self.scan_shape()
        variables, coords = {}, {}
        for name in self.columns:
            if name in self.constants:
                value, dtype = self.constants[name]
                variables[name] = ((), np.asarray(value, dtype=dtype))
                continue
            array_dims = self.dims[name]
            if name in self.axes and dims != [POINT]:
                if array_dims == [POINT]:
                    continue  # the axis itself: its coordinate
                name = f"{name}_per_slot"  # a register scanned for some slots only
            array = self._lazy(self._source(name)) if lazy else self.group[self._source(name)][...]
            if self.layout is DatasetLayout.GRID and array_dims[:1] == [POINT]:
                array = array.reshape(shape + tuple(array.shape[1:]))
                array_dims = dims + array_dims[1:]
            # chip, channel, ... label the slots; an axis not unfolded labels the points (rows)
            on_axis = name in self.axes and len(array_dims) == 1 and array_dims[0] in (POINT, ROW)
            target = coords if on_axis or (name in SLOT_COLUMNS and array_dims == [SLOT]) else variables
            target[name] = (tuple(array_dims), array)
        if self.layout is DatasetLayout.GRID:
            coords.update(self._axis_coords(dims))
        return xr.Dataset(variables, coords=coords, attrs={k: v for k, v in self.attributes.items()
                                                             if k in ("procedure", "axes", "board")})

    # -- internals ---------------------------------------------------------------------------

    def _names(self, columns: list[str] | None) -> list[str]:
        if columns is None:
            return list(self.columns)
        unknown = [c for c in columns if c not in self.dims]
        if unknown:
            raise KeyError(f"the dataset has no column {', '.join(map(repr, unknown))}; "
                           f"it has: {', '.join(self.columns)}")
        return list(columns)

    def _selection(self, where: dict, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Points and slots that can match `where`, from the columns that vary by point or slot."""
        unknown = [c for c in where if c not in self.dims]
        if unknown:
            raise KeyError(f"where names {', '.join(map(repr, unknown))}, which the dataset does not have")
        point_ok = np.ones(stop - start, dtype=bool)
        slot_ok = np.ones(self.n_slots, dtype=bool)
        for name, wanted in where.items():
            dims = self.dims[name]
            if dims == []:
                if not _matches(np.asarray([self.constants[name][0]]), wanted)[0]:
                    point_ok[:] = False
            elif dims == [POINT]:
                point_ok &= _matches(self.group[name][start:stop], wanted)
            elif dims == [SLOT]:
                slot_ok &= _matches(self.group[name][...], wanted)
        return start + np.flatnonzero(point_ok), np.flatnonzero(slot_ok)

    def _broadcast(self, name: str, point_ix: np.ndarray, slot_ix: np.ndarray) -> np.ndarray:
        n_p, n_s = len(point_ix), len(slot_ix)
        dims = self.dims[name]
        if dims == []:
            value, dtype = self.constants[name]
            return np.full(n_p * n_s, value, dtype=dtype)
        array = self.group[name]
        if dims == [SLOT]:
            return np.tile(array[...][slot_ix], n_p)
        values = _read_points(array, point_ix)
        if dims == [POINT]:
            return np.repeat(values, n_s)
        return values[:, slot_ix].reshape(-1) if n_s != self.n_slots else values.reshape(-1)

    def _rows(self, names: list[str], where: dict | None, points) -> dict[str, np.ndarray]:
        start, stop = points or (0, self.n_points)
        out = {}
        for name in names:
            if name in self.constants:
                value, dtype = self.constants[name]
                out[name] = np.full(stop - start, value, dtype=dtype)
            else:
                out[name] = self.group[name][start:stop]
        if where:
            keep = np.ones(stop - start, dtype=bool)
            for name, wanted in where.items():
                column = out[name] if name in out else self._rows([name], None, points)[name]
                keep &= _matches(column, wanted)
            out = {name: values[keep] for name, values in out.items()}
        return out

    def scan_shape(self) -> tuple[tuple[int, ...], list[str]]:
        """The points as `to_xarray` lays them out: a grid scan's axis sizes (and repeats),
        else (n_points,) along `point`."""
        sizes = self.attributes.get("axis_sizes")
        repeat = int(self.attributes.get("repeat", 1))
        if self.layout is not DatasetLayout.GRID or self.attributes.get("explicit") or not sizes:
            return (self.n_points,), [POINT]
        shape, dims = tuple(sizes), list(self.axes)
        if repeat > 1:
            shape, dims = shape + (repeat,), dims + ["repeat"]
        return shape, dims

    def _axis_coords(self, dims: list[str]) -> dict:
        values = self.attributes.get("axis_values") or {}
        if dims == [POINT]:
            return {}
        return {axis: ((axis,), np.asarray(values[axis])) for axis in self.axes if axis in values
                and _is_numeric(values[axis])}

    def _source(self, name: str) -> str:
        return name[:-len("_per_slot")] if name.endswith("_per_slot") else name

    def _lazy(self, name: str):
        import dask.array as da

        array = self.group[name]
        return da.from_zarr(array, chunks=array.chunks)


@dataclass
class _Partition:
    """One block of points as a DataFrame (picklable, for dask workers)."""

    folder: Path
    columns: list[str]
    where: dict | None

    def __call__(self, points: tuple[int, int]):
        import pandas as pd

        return pd.DataFrame(Dataset(self.folder, check=False).to_columns(self.columns, self.where, points))


def _layout(value, folder: Path) -> DatasetLayout:
    try:
        return DatasetLayout(value)
    except ValueError:
        raise EntryFormatError(f"{folder}: layout {value!r} is none that raffinerie writes "
                               f"({', '.join(DatasetLayout)})") from None


def _quiet() -> None:
    """Consolidated metadata is not in the Zarr v3 spec yet, and zarr-python says so each time;
    raffinerie writes and reads it itself (one metadata read per dataset), so the warning is noise.

    One filter for the process, not `warnings.catch_warnings()`: that swaps the
    process's filter list, so boards building datasets in parallel threads let
    the warning through to the user. Added when missing (the first call, or after a
    test harness reset the filters): re-adding one removes it for an instant."""
    import warnings

    if not any(f[0] == "ignore" and f[1] is not None and f[1].pattern == _CONSOLIDATED for f in warnings.filters):
        warnings.filterwarnings("ignore", message=_CONSOLIDATED, module="zarr")


_CONSOLIDATED = "Consolidated metadata"


def _read_points(array, point_ix: np.ndarray) -> np.ndarray:
    """Rows of a point-major array: one contiguous read when the points are a range."""
    if len(point_ix) == 0:
        return np.empty((0,) + array.shape[1:], dtype=array.dtype)
    first, last = int(point_ix[0]), int(point_ix[-1]) + 1
    values = array[first:last]
    if last - first == len(point_ix):
        return values
    return values[point_ix - first]


def _matches(values: np.ndarray, wanted) -> np.ndarray:
    if isinstance(wanted, (list, tuple, set, frozenset, np.ndarray)):
        return np.isin(values, list(wanted))
    return values == wanted


def _is_numeric(values) -> bool:
    return np.asarray(values).dtype.kind in "biuf"


def describe(folder: Path) -> dict:
    """The attributes of a dataset folder, read without zarr (for `raff show`, `cache ls`)."""
    doc = json.loads((Path(folder) / "zarr.json").read_text())
    return doc.get("attributes", {})
