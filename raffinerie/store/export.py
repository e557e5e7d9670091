"""A dataset written out for other tools: CSV rows, a ROOT TTree, a Zarr folder with the scan's axes.

- `.csv`: one row per readout slot per point (per event in `events` mode), every column.
- `.root`: a TTree named `dataset`, one entry per row, one branch per column; the
  board (a string) is a `char*` branch, which `TTree::Draw`, RDataFrame and every
  uproot read. uproot 5.7 writes an RNTuple on `file[name] = arrays`, which ROOT 6
  before 6.34 and hexactrl's tools cannot read, so the tree is made with `mktree`.
- `.zarr`: `Dataset.to_xarray()` as xarray writes it, so plain `xarray.open_zarr`
  gives what raffinerie's reader gives: a grid scan's axes as dimensions with their
  values as coordinates, then `slot` (with chip, half, channel, channeltype as
  coordinates on it); an explicit list of points keeps a `point` dimension with the
  axis values as coordinates on it; constants are 0-d variables. (The cache's own
  folder stores a scan flat along `point`, which only raffinerie's reader unfolds.)

Each is written under a temporary name beside the target and renamed into place
once complete, so a failed export (a damaged chunk, a full disk) leaves no half
file behind. All read one block of points at a time: any size in bounded memory.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raffinerie.store.dataset import ROW, SLOT, Dataset, _quiet

FORMATS = (".csv", ".zarr", ".root")
ROWS_BYTES = 64 << 20        # rows read at a time for CSV and ROOT: ~64 MB
ZARR_CHUNK_BYTES = 8 << 20   # a chunk of an exported Zarr array: few files, each read whole


@dataclass(frozen=True)
class Written:
    """What an export holds, for the line the command prints."""

    rows: int
    columns: int
    form: str  # what the columns are in the file: "columns", "branches in the TTree ..."


def export(data: Dataset, out: Path) -> Written:
    """Write `data` to `out` (.csv, .zarr or .root); raises OSError if it cannot be written."""
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    write = {".csv": _csv, ".root": _root, ".zarr": _zarr}[out.suffix.lower()]
    try:
        written = write(data, partial)
        os.replace(partial, out)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        elif partial.exists():
            partial.unlink()
    return written


def _point_ranges(data: Dataset, n_columns: int) -> list[tuple[int, int]]:
    step = max(1, ROWS_BYTES // (8 * max(data.n_slots, 1) * max(n_columns, 1)))
    return [(start, min(start + step, data.n_points)) for start in range(0, max(data.n_points, 1), step)]


def _csv(data: Dataset, path: Path) -> Written:
    import pandas as pd

    for i, points in enumerate(_point_ranges(data, len(data.columns))):
        pd.DataFrame(data.to_columns(points=points)).to_csv(path, index=False, header=i == 0,
                                                            mode="w" if i == 0 else "a")
    return Written(data.n_rows, len(data.columns), "columns")


def _root(data: Dataset, path: Path) -> Written:
    import uproot

    names = list(data.columns)
    axes = ", ".join(data.axes) or "none"
    title = f"raffinerie dataset of {data.attributes.get('procedure', '?')}; scan axes: {axes}"
    with uproot.recreate(path) as f:
        tree = None
        for points in _point_ranges(data, len(names)):
            columns = data.to_columns(names, points=points)
            if tree is None:
                tree = f.mktree("dataset", {n: _branch_type(v) for n, v in columns.items()}, title=title)
            if len(next(iter(columns.values()), ())):
                tree.extend(columns)
    with uproot.open(path) as f:  # the count printed is what a reader finds (only metadata is read)
        branches = len(f["dataset"].keys())
    return Written(data.n_rows, branches, 'branches in the TTree "dataset"')


def _branch_type(values: np.ndarray):
    return "string" if values.dtype.kind in "US" else values.dtype


def _zarr(data: Dataset, path: Path) -> Written:
    ds = data.to_xarray(lazy=True)
    # Zarr v3 has no fixed-width string type (zarr-python warns it may change);
    # variable-length UTF-8 is in the spec, and xarray reads it back as str.
    for name in [n for n, v in ds.variables.items() if v.dtype.kind == "U"]:
        ds[name] = ds[name].astype(object)
    chunks = _chunks(data, ds)
    for name, variable in ds.variables.items():  # the 0-d constants stay numpy: one write each
        if variable.chunks is not None:
            ds[name] = variable.chunk({d: chunks[d] for d in variable.dims})
    _quiet()
    ds.to_zarr(path, mode="w-", consolidated=True, zarr_format=3)
    sizes = " x ".join(f"{d} ({n})" for d, n in ds.sizes.items())
    return Written(data.n_rows, len(data.columns),
                   f"columns, as {_count(len(ds.data_vars), 'variable')} and "
                   f"{_count(len(ds.coords), 'coordinate')} over {sizes}")


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' * (n != 1)}"


def _chunks(data: Dataset, ds) -> dict:
    """Whole along every dimension but the outermost of the scan, cut so a chunk is ~8 MB."""
    shape, dims = data.scan_shape()
    outer = dims[0] if dims[0] in ds.sizes else ROW
    inner = math.prod(shape[1:]) * (data.n_slots if SLOT in ds.sizes else 1)
    chunks = {d: -1 for d in ds.sizes}
    if outer in ds.sizes:
        chunks[outer] = max(1, min(ds.sizes[outer], ZARR_CHUNK_BYTES // (8 * max(inner, 1))))
    return chunks
