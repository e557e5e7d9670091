"""`raff build --dask local:2`: datasets and analyses on a dask LocalCluster of two processes."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import assert_clean_error

pytest.importorskip("distributed")

SCAN = "- key: [roc_s0, Top, 0, phase_strobe]\n  values: [1, 2]\n"
USER = '''\
import os


class mine(object):
    """A Datenraffinerie-style (pandas) distillery: it gets its DataFrame on a worker."""

    def __init__(self, parameters):
        pass

    def output(self):
        return {"summary": "summary.csv", "plots": [], "calibration": None}

    def run(self, data, output_dir):
        summary = data.groupby(["chip", "channel"]).adc_mean.mean().reset_index()
        summary["pid"] = os.getpid()
        summary.to_csv(os.path.join(output_dir, "summary.csv"), index=False)
'''


def _library(libdir):
    libdir.write("analyses/mine.py", USER)
    return libdir.main(libdir.daq(parameters=SCAN, server_override="{NEvents: 10}")
                       + "- {name: mine, type: analysis, daq: scan}\n"
                       + "- {name: ped, type: analysis, daq: scan, module: builtin.pedestal}\n")


def test_build_on_a_local_cluster_matches_the_plain_build(raff, libdir, tmp_path):
    main = _library(libdir)
    r = raff("build", "mine", "ped", "-c", main, "--dask", "local:2", "-o", tmp_path / "dask")
    assert r.code == 0, r.err
    assert "1 dataset and 2 analyses" in r.out and "dask workers (local:2): peak RSS" in r.out, r.out
    plain = raff("build", "mine", "ped", "-c", main, "--cache", tmp_path / "other", "-o", tmp_path / "plain")
    assert plain.code == 0, plain.err
    for name in ("mine", "ped"):
        a = pd.read_csv(tmp_path / "dask" / name / "summary.csv").drop(columns="pid", errors="ignore")
        b = pd.read_csv(tmp_path / "plain" / name / "summary.csv").drop(columns="pid", errors="ignore")
        pd.testing.assert_frame_equal(a, b)
    assert raff("cache", "verify", "-c", main).code == 0


def test_a_bad_dask_address_is_one_clear_error(raff, libdir):
    main = _library(libdir)
    assert_clean_error(raff("build", "ped", "-c", main, "--dask", "local:none"), "local:N needs a number")
    assert_clean_error(raff("build", "ped", "-c", main, "--dask", "bogus"), "--dask bogus", "scheduler")


def test_a_forced_build_that_fails_keeps_what_was_cached(raff, libdir):
    main = _library(libdir)
    assert raff("build", "ped", "-c", main).code == 0
    assert_clean_error(raff("build", "ped", "-c", main, "--force", "--dask", "local:none"), "local:N")
    assert raff("plan", "ped", "-c", main, "--check").code == 0  # the dataset and analysis are still there
