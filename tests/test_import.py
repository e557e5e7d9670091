"""`raff import` of real hexactrl runs (skips without ../shared/data)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd

from conftest import assert_clean_error, shared

from raffinerie.daq.runs import open_raw


def _main(tmp_path):
    main = tmp_path / "main.yaml"
    main.write_text("# the lab's library\nlibraries: []\n")
    return main


def test_import_of_the_timewalk_runs_gives_49_measurements_and_the_raw_statistics(raff, tmp_path):
    folder = shared("hexactrl-timewalk")
    main = tmp_path / "main.yaml"
    main.write_text("# the lab's library\nprocedures: []\n")
    result = raff("import", folder, "--name", "timewalk_runs", "-c", main, "--board", "LD-proto")
    assert result.code == 0, result.err
    assert "49 runs imported" in result.out and "axes: Calib, phase_strobe, phase_strobe_unknown" in result.out
    assert "16 runs lack phase_strobe" in result.err
    assert "the lab's library" in main.read_text()
    assert len(list((tmp_path / ".raffinerie-cache" / "measurements").glob("*/*"))) == 49
    assert raff("validate", "-c", main).code == 0
    plan = raff("plan", "timewalk_runs", "-c", main, "--json")
    assert '"cached": 49' in plan.out
    assert raff("build", "timewalk_runs", "-c", main).code == 0
    out = tmp_path / "runs.csv"
    assert raff("export", "timewalk_runs", "-c", main, "-o", out).code == 0
    data = pd.read_csv(out)
    assert len(data) == 49 * 234
    runs = sorted(folder.glob("*.raw"), key=lambda p: int(p.stem.split("_")[-1]))
    for point, run in [(0, runs[0]), (20, runs[20]), (48, runs[48])]:
        reference = pd.DataFrame(open_raw(run).summary())
        mine = data[data.point == point].reset_index(drop=True)
        for column in ("n_events", "adc_mean", "adc_stdd", "adc_median", "toa_efficiency"):
            assert np.allclose(mine[column], reference[column], equal_nan=True), (run, column)
    run9 = data[(data.Calib == 1024) & (data.phase_strobe_unknown == 1) & (data.chip == 0)
                & (data.channel == 10) & (data.channeltype == 0)]
    assert len(run9) == 1 and run9.adc_mean.iloc[0] == 1023
    assert (data[data.phase_strobe_unknown == 1].point.unique() == np.arange(16)).all()
    again = raff("import", folder, "--name", "timewalk_runs", "-c", main, "--board", "LD-proto")
    assert again.code == 0 and "0 runs imported, 49 already in the cache" in again.out
    assert main.read_text().count("timewalk_runs.yaml") == 1


def test_damaged_runs_are_skipped_and_identical_runs_are_repeats(raff, tmp_path):
    folder = shared("hexactrl-timewalk")
    runs = tmp_path / "runs"
    runs.mkdir()
    for n in (1, 2, 3):
        for ext in ("raw", "yaml"):
            shutil.copy(folder / f"test_run_{n}.{ext}", runs / f"test_run_{n}.{ext}")
    shutil.copy(folder / "test_run_2.raw", runs / "test_run_2b.raw")      # same configuration again
    shutil.copy(folder / "test_run_2.yaml", runs / "test_run_2b.yaml")
    (runs / "test_run_3.raw").write_bytes((folder / "test_run_3.raw").read_bytes()[:1000])
    main = _main(tmp_path)
    result = raff("import", runs, "--name", "few", "-c", main)
    assert result.code == 0, result.err
    assert "test_run_3.raw: damaged, not imported" in result.err
    assert "3 runs imported" in result.out and "1 skipped" in result.out
    assert raff("build", "few", "-c", main).code == 0
    out = tmp_path / "few.csv"
    assert raff("export", "few", "-c", main, "-o", out).code == 0
    data = pd.read_csv(out)
    assert sorted(set(zip(data.point, data.repeat))) == [(0, 0), (1, 0), (2, 1)]


def test_import_errors(raff, tmp_path):
    main = _main(tmp_path)
    assert_clean_error(raff("import", tmp_path / "nothing", "--name", "x", "-c", main), "not a folder")
    (tmp_path / "empty").mkdir()
    assert_clean_error(raff("import", tmp_path / "empty", "--name", "x", "-c", main), "no runs to import")


def test_runs_of_one_configuration_only_are_repeats(raff, tmp_path):
    folder = shared("hexactrl-timewalk")
    runs = tmp_path / "runs"
    runs.mkdir()
    for copy in ("a", "b"):
        for ext in ("raw", "yaml"):
            shutil.copy(folder / f"test_run_1.{ext}", runs / f"run_{copy}.{ext}")
    main = _main(tmp_path)
    result = raff("import", runs, "--name", "twice", "-c", main)
    assert result.code == 0, result.err
    assert "2 runs imported" in result.out and "axes: none" in result.out
    assert raff("plan", "twice", "-c", main, "--check").code == 2  # the dataset is still to build
    assert raff("build", "twice", "-c", main).code == 0
