"""A scan of tens of thousands of points on the embedded emulator: the dataset's three forms agree.

10,000 points x 2 events x 3 chips (2.3 M dataset rows), acquired for real
(about a minute), then read as pandas, xarray and dask. 10,000 points are
three shards of the dataset's columns (4,096 points each here), the last one
partial, so the forms are compared across shard boundaries and a dask
partition per block; the 131,072-point scan from plan to plots is measured
by benchmarks/bench_scale.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from conftest import LibraryFolder, run_raff

CHIPS = "[roc_s0, roc_s1, roc_s2]"
SCAN = (f"- key: [{CHIPS}, Top, 0, phase_strobe]\n  range: {{stop: 16}}\n"
        f"- key: [{CHIPS}, ReferenceVoltage, [0, 1], Calib]\n  range: {{stop: 625}}\n")


def test_ten_thousand_points_in_three_forms(tmp_path):
    from test_dataset_forms import _points

    lib = LibraryFolder(tmp_path)
    main = lib.main(lib.daq(parameters=SCAN, server_override="{NEvents: 2}"))
    r = run_raff("build", "scan", "-c", str(main), "--quiet", timeout=900)
    assert r.code == 0, r.err
    plan, points, store = _points(main, "scan")
    assert points.total == 10_000 and not plan.todo
    data = store.open_dataset(plan.nodes["dataset:scan"].key)
    assert data.layout == "grid" and (data.n_points, data.n_slots) == (10_000, 234)
    columns = ["point", "chip", "channel", "Calib", "phase_strobe", "adc_mean"]
    frame = data.to_pandas(columns)
    assert len(frame) == 10_000 * 234
    # pandas: point-major rows, the axes as the scan defines them (phase_strobe outer, Calib inner)
    assert (frame.point.to_numpy()[::234] == np.arange(10_000)).all()
    assert (frame.Calib.to_numpy()[::234] == np.tile(np.arange(625), 16)).all()
    # xarray: the scan axes as dimensions, the same numbers
    ds = data.to_xarray(lazy=True)
    assert ds["adc_mean"].dims == ("phase_strobe", "Calib", "slot")
    grid = ds["adc_mean"].values
    np.testing.assert_array_equal(grid.reshape(-1), frame.adc_mean.to_numpy())
    assert float(ds["adc_mean"].sel(phase_strobe=7, Calib=500, slot=5)) == \
        frame.adc_mean[(frame.phase_strobe == 7) & (frame.Calib == 500)].iloc[5]
    # dask: lazy, one partition per block of points, the same rows
    lazy = data.to_dask(columns)
    assert lazy.npartitions == 3  # 4,096 points a shard: two whole, one partial
    pd.testing.assert_frame_equal(lazy.compute().reset_index(drop=True), frame)
    # a projection with a pushed-down selection reads the same values
    part = data.to_pandas(["adc_mean"], where={"phase_strobe": 3, "chip": 2})
    expect = frame[(frame.phase_strobe == 3) & (frame.chip == 2)].adc_mean.to_numpy()
    np.testing.assert_array_equal(part.adc_mean.to_numpy(), expect)
