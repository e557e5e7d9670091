"""Exports and `raff show` as a user meets them (issue 25, items 1-3).

The files are read back with what a user would use, not raffinerie's reader:
ROOT with uproot (a TTree, every column a branch, the board a string), Zarr
with plain `xarray.open_zarr` (the scan's axes as dimensions). `raff show` runs
as a subprocess at a fixed terminal width.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from conftest import LibraryFolder, run_raff

AXES = """\
- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
  values: [100, 300, 500]
- key: [[roc_s0, roc_s1, roc_s2], Top, 0, phase_strobe]
  values: [0, 5]
"""
IRREGULAR_POINTS = "points: [[100, 0], [300, 5], [500, 0]]\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A grid scan (3 x 2 points) and an explicit list of 3 points of the same axes, built once."""
    libdir = LibraryFolder(tmp_path_factory.mktemp("exports"))
    main = libdir.main(libdir.daq(parameters=AXES, server_override="{NEvents: 20}")
                       + libdir.daq(name="irregular", parameters=AXES, server_override="{NEvents: 20}",
                                    extra=IRREGULAR_POINTS))
    r = run_raff("build", "scan", "irregular", "-c", main)
    assert r.code == 0, r.err
    return main


def _dataset(main, name):
    """raffinerie's own reading of the dataset: what the exports must agree with."""
    from raffinerie.config.checks import validate
    from raffinerie.config.library import load_library
    from raffinerie.config.network import emulator_identity
    from raffinerie.config.resolve import ConfigFiles
    from raffinerie.graph.plan import make_plan
    from raffinerie.store.store import Store

    lib, files = load_library(main), ConfigFiles()
    validate(lib, files=files)
    store = Store(main.parent / ".raffinerie-cache")
    plan = make_plan(lib, name, emulator_identity(), store.index(), files)
    return store.open_dataset(plan.nodes[f"dataset:{name}"].key)


def _export(main, name, out):
    r = run_raff("export", name, "-c", main, "-o", out)
    assert r.code == 0, r.err
    return r.out


# -- item 1: ROOT ------------------------------------------------------------------------------

def test_root_export_is_a_ttree_with_every_column_and_the_board(built, tmp_path):
    import uproot

    data = _dataset(built, "scan")
    said = _export(built, "scan", tmp_path / "x.root")
    with uproot.open(tmp_path / "x.root") as f:
        assert f.classnames() == {"dataset;1": "TTree"}  # not ROOT::RNTuple
        tree = f["dataset"]
        assert tree.num_entries == data.n_rows == 6 * 234
        assert tree.keys() == data.columns  # the board too: 232 columns are 232 branches
        assert tree["board"].typename == "char*"  # a C string: TTree::Draw and old uproot read it
        board = tree["board"].array(library="np")
        assert set(board) == {data.constants["board"][0]} and board[0].startswith("emulator/")
        rows = data.to_pandas(["adc_mean", "Calib", "chip"])
        for name in rows:
            np.testing.assert_array_equal(tree[name].array(library="np"), rows[name].to_numpy())
    assert re.search(rf"{data.n_rows:,} rows x {len(data.columns)} branches", said), said


# -- item 2: Zarr ------------------------------------------------------------------------------

def _open_zarr(path):
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a user opening it sees no warning either
        return xr.open_zarr(path)


def test_zarr_export_opens_in_plain_xarray_with_the_scan_axes(built, tmp_path):
    import xarray as xr

    said = _export(built, "scan", tmp_path / "x.zarr")
    ds = _open_zarr(tmp_path / "x.zarr")
    assert ds["adc_mean"].dims == ("Calib", "phase_strobe", "slot")
    assert list(ds["Calib"].values) == [100, 300, 500] and list(ds["phase_strobe"].values) == [0, 5]
    assert ds["chip"].dims == ("slot",) and "chip" in ds.coords
    assert ds["NEvents"].dims == () and int(ds["NEvents"]) == 20  # a constant: a 0-d variable
    ours = _dataset(built, "scan").to_xarray()
    assert str(ds["board"].values) == str(ours["board"].values)
    xr.testing.assert_equal(ds.drop_vars("board").load(), ours.drop_vars("board"))
    one = ds["adc_mean"].sel(Calib=300, phase_strobe=5).values
    rows = _dataset(built, "scan").to_pandas(["adc_mean"], where={"Calib": 300, "phase_strobe": 5})
    np.testing.assert_array_equal(one, rows["adc_mean"].to_numpy())
    assert "Calib (3) x phase_strobe (2) x slot (234)" in said, said


def test_irregular_zarr_export_keeps_point_with_the_axis_values_on_it(built, tmp_path):
    _export(built, "irregular", tmp_path / "x.zarr")
    ds = _open_zarr(tmp_path / "x.zarr")
    assert ds["adc_mean"].dims == ("point", "slot")
    assert ds["Calib"].dims == ("point",) and "Calib" in ds.coords
    assert list(ds["Calib"].values) == [100, 300, 500] and list(ds["phase_strobe"].values) == [0, 5, 0]
    assert list(ds["adc_mean"].swap_dims(point="Calib").sel(Calib=300).dims) == ["slot"]


# -- item 3: raff show -------------------------------------------------------------------------

def test_show_gives_the_axes_the_columns_by_kind_and_samples_of_what_was_measured(built):
    r = run_raff("show", "scan", "-c", built, env={"COLUMNS": "80"})
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert all(len(line) <= 80 for line in lines if not line.startswith("cached at ")), r.out
    assert "  Calib (3): 100, 300, 500" in lines and "  phase_strobe (2): 0, 5" in lines, r.out
    assert "shape: 6 points x 234 readout slots; as arrays Calib 3 x" in r.out
    assert "    adc_median, adc_iqr, adc_mean, adc_stdd" in lines, r.out  # a family a line
    constants = next(line for line in lines if line.startswith("constants ("))
    assert "--all" in r.out and len([l for l in lines if "Inputdac" in l or "NEvents" in l]) <= 1
    assert re.match(r"constants \(\d{3}, the same on every row\)", constants), constants
    table = lines[lines.index(next(l for l in lines if l.startswith("sample rows"))) + 1:]
    header = table[0].split()
    assert header[:5] == ["point", "Calib", "phase_strobe", "chip", "channel"] and "adc_mean" in header
    assert len(table) == 6 and "statusL" not in r.out.split("sample rows")[1]
    r = run_raff("show", "scan", "-c", built, "--all", "-n", "2", env={"COLUMNS": "80"})
    assert r.code == 0 and "NEvents=20" in r.out and len(r.out.split("sample rows")[1].splitlines()) == 4
