"""The stored dataset and its three forms: to_pandas, to_xarray, to_dask.

Built on the embedded emulator, then compared column for column with the
table `assemble` materialises (the DataFrame distilleries always had).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import assert_clean_error

TWO_AXES = """\
- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
  values: [100, 300, 500]
- key: [[roc_s0, roc_s1, roc_s2], Top, 0, phase_strobe]
  values: [0, 5]
- key: [roc_s1, ch, 3, trim_inv]
  values: [10, 20]
"""


def _points(main, name):
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
    return plan, plan.points[name], store


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from conftest import LibraryFolder, run_raff

    libdir = LibraryFolder(tmp_path_factory.mktemp("forms"))
    main = libdir.main(libdir.daq(parameters=TWO_AXES, server_override="{NEvents: 20}")
                       + libdir.daq(name="events", parameters="- key: [roc_s0, ReferenceVoltage, 0, Calib]\n"
                                    "  values: [200, 400]\n", server_override="{NEvents: 5}",
                                    extra="mode: events\n"))
    r = run_raff("build", "scan", "events", "-c", str(main))
    assert r.code == 0, r.err
    return main


def _dataset(main, name):
    from raffinerie.builder.datasets import assemble

    plan, points, store = _points(main, name)
    node = plan.nodes[f"dataset:{name}"]
    return store.open_dataset(node.key), assemble(points, store), points


def test_to_pandas_is_the_table_distilleries_always_had(built):
    data, old, points = _dataset(built, "scan")
    assert data.layout == "grid" and data.n_points == 12 and data.n_slots == 234
    frame = data.to_pandas()
    assert list(frame.columns) == list(old) + ["board"]
    for name, values in old.items():
        assert frame[name].dtype == values.dtype, name
        np.testing.assert_array_equal(frame[name].to_numpy(), values, err_msg=name)
    assert (frame["board"] == points.identity).all()
    # what varies is stored at its size: 200-odd registers once, Calib per point, trim_inv per point and slot
    assert data.dims["Calib"] == ["point"] and data.dims["trim_inv"] == ["point", "slot"]
    assert data.dims["adc_mean"] == ["point", "slot"] and data.dims["chip"] == ["slot"]
    assert data.dims["Inputdac"] == [] or data.dims["Inputdac"] == ["slot"]
    assert sum(1 for d in data.dims.values() if d == []) > 150


def test_projection_and_where(built):
    data, old, _ = _dataset(built, "scan")
    frame = pd.DataFrame(old)
    part = data.to_pandas(["adc_mean", "Calib", "chip", "trim_inv"],
                          where={"chip": 1, "Calib": [300, 500], "trim_inv": 20})
    expect = frame[(frame.chip == 1) & frame.Calib.isin([300, 500]) & (frame.trim_inv == 20)]
    assert list(part.columns) == ["adc_mean", "Calib", "chip", "trim_inv"]
    assert len(part) == len(expect) > 0
    np.testing.assert_array_equal(part.adc_mean.to_numpy(), expect.adc_mean.to_numpy())
    with pytest.raises(KeyError, match="no column 'nope'"):
        data.to_pandas(["nope"])


def test_to_xarray_has_the_scan_axes_as_dimensions(built):
    data, old, _ = _dataset(built, "scan")
    ds = data.to_xarray()
    assert ds["adc_mean"].dims == ("Calib", "phase_strobe", "trim_inv", "slot")
    assert list(ds["Calib"].values) == [100, 300, 500] and list(ds["phase_strobe"].values) == [0, 5]
    frame = pd.DataFrame(old)
    for calib, phase, trim in [(300, 5, 10), (500, 0, 20)]:
        rows = frame[(frame.Calib == calib) & (frame.phase_strobe == phase)
                     & (frame.point % 2 == (0 if trim == 10 else 1))]
        got = ds["adc_mean"].sel(Calib=calib, phase_strobe=phase, trim_inv=trim).values
        np.testing.assert_array_equal(got, rows.adc_mean.to_numpy())
    assert list(ds["chip"].values) == list(frame.chip[:234])
    lazy = data.to_xarray(lazy=True)
    np.testing.assert_array_equal(lazy["toa_mean"].values, ds["toa_mean"].values)


def test_to_dask_agrees_with_to_pandas(built):
    data, _, _ = _dataset(built, "scan")
    lazy = data.to_dask(["point", "chip", "adc_mean", "Calib"])
    pd.testing.assert_frame_equal(lazy.compute().reset_index(drop=True),
                                  data.to_pandas(["point", "chip", "adc_mean", "Calib"]))


def test_events_mode_is_stored_by_rows(built):
    data, old, _ = _dataset(built, "events")
    assert data.layout == "rows"
    frame = data.to_pandas()
    assert list(frame.columns) == list(old) + ["board"]
    for name, values in old.items():
        np.testing.assert_array_equal(frame[name].to_numpy(), values, err_msg=name)


def test_a_dataset_is_few_files(built):
    plan, _, store = _points(built, "scan")
    folder = store.path("datasets", plan.nodes["dataset:scan"].key)
    files = [p for p in folder.rglob("*") if p.is_file()]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["layout"] == "grid" and meta["rows"] == 12 * 234
    assert len(files) < 120, len(files)  # one file per column that varies, not one per column


DISTILLERY = '''\
class xr:
    dataset_form = "xarray"
    dataset_columns = ["adc_mean", "Calib"]

    def __init__(self, parameters):
        pass

    def output(self):
        return {"summary": "summary.csv", "plots": []}

    def run(self, data, output_dir):
        assert sorted(data.data_vars) == ["Calib", "adc_mean"] or "adc_mean" in data.data_vars
        mean = data["adc_mean"].mean(dim=[d for d in data["adc_mean"].dims if d != "Calib"])
        mean.to_dataframe().to_csv(output_dir / "summary.csv")


class bad:
    dataset_form = "parquet"

    def __init__(self, parameters):
        pass

    def output(self):
        return {"summary": "s.csv", "plots": []}

    def run(self, data, output_dir):
        pass
'''


def test_a_distillery_asks_for_its_form_and_columns(raff, libdir):
    first, second = DISTILLERY.split("\n\n\nclass bad:")
    libdir.write("analyses/xr.py", first)
    libdir.write("analyses/bad.py", "class bad:" + second)
    analyses = ("- {name: xr, type: analysis, daq: scan}\n"
                "- {name: bad, type: analysis, daq: scan}\n")
    main = libdir.main(libdir.daq(parameters="- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]\n"
                                             "  values: [100, 200]\n", server_override="{NEvents: 10}")
                       + analyses)
    r = raff("build", "xr", "-c", main)
    assert r.code == 0, r.err
    summary = pd.read_csv(libdir.root / "raff-out" / "xr" / "summary.csv")
    assert list(summary.Calib) == [100, 200]
    assert_clean_error(raff("build", "bad", "-c", main), "dataset_form is 'parquet'", "'pandas'")


def test_reader_processes_assemble_the_same_dataset_and_catch_damage(built, tmp_path, monkeypatch):
    """Large scans are read by two reader processes: same result, and damage is still caught."""
    from conftest import damage_member, summary_files
    from raffinerie.builder import datasets
    from raffinerie.store.dataset import Dataset
    from raffinerie.store.entries import DamagedEntry

    plan, points, store = _points(built, "scan")
    expected = store.open_dataset(plan.nodes["dataset:scan"].key).to_pandas()
    from raffinerie.store import dataset as layout

    monkeypatch.setattr(datasets, "PARALLEL_FROM", 1)
    datasets.write_dataset(points, store, tmp_path / "again.zarr", board=points.identity)
    pd.testing.assert_frame_equal(Dataset(tmp_path / "again.zarr").to_pandas(), expected)
    # blocks of one point (a scan of 4,097 points ends with one): one reader gets it all
    monkeypatch.setattr(layout, "CHUNK_BYTES", 8 * 234)
    monkeypatch.setattr(layout, "SHARD_CHUNKS", 1)
    datasets.write_dataset(points, store, tmp_path / "ones.zarr", board=points.identity)
    pd.testing.assert_frame_equal(Dataset(tmp_path / "ones.zarr").to_pandas(), expected)
    victim = next(p for p in summary_files(store.root) if p.parent.name == points.key(5).hex())
    damage_member(victim)
    with pytest.raises(DamagedEntry, match="Bad CRC-32"):
        datasets.write_dataset(points, store, tmp_path / "damaged.zarr")
    assert not victim.exists() and any((store.root / "quarantine" / "measurements").iterdir())


def test_datasets_made_and_opened_in_parallel_threads_print_no_zarr_warning(tmp_path):
    """Boards build their datasets in threads: zarr-python's consolidated-metadata warning
    is noise to users, and `warnings.catch_warnings` (not thread-safe) let it through.
    The race is narrow: before the fix this caught it in some runs, not all."""
    import subprocess
    import sys

    script = f"""
import threading
import numpy as np
from pathlib import Path
from raffinerie.store.dataset import Dataset, DatasetWriter

def board(b):
    for i in range(60):
        folder = Path({str(tmp_path)!r}) / f"{{b}}-{{i}}"
        writer = DatasetWriter(folder, "compact", 4, 2, {{}})
        writer.array("value", np.arange(4), ("point",))
        writer.close(["value"])
        Dataset(folder)

threads = [threading.Thread(target=board, args=(b,)) for b in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
"""
    (tmp_path / "boards.py").write_text(script)  # a file: under -c, Python shows no such warning at all
    done = subprocess.run([sys.executable, tmp_path / "boards.py"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
