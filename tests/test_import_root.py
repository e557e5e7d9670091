"""`raff import` of hexactrl runsummary ROOT files (runs whose raw file is gone) as points."""

from __future__ import annotations

import json
import math
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import EXAMPLES, run_raff, shared
from raffinerie.daq import rootio

RUNS = ("reference", "hexaboard-maps", "real-pedestal-runs")
QC = "- {name: %s_qc, type: analysis, daq: %s, module: builtin.qc}\n"


def _library(tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(EXAMPLES, lib, ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
    return lib


def _runs(tmp_path, name, source, yaml_text):
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(source, folder / "pedestal_run0.root")
    (folder / "pedestal_run0.yaml").write_text(yaml_text)
    return folder


# an HD run (6 chips) resolves over the HD board's power-on default, its points have 6 chips
@pytest.mark.parametrize("file, chips, geometry", [("E02_pedestal_run0.root", 3, "LD-full"),
                                                   ("hd_pedestal_run0.root", 6, "HD-full")])
def test_an_imported_summary_is_a_point_the_qc_analysis_judges_as_raff_qc_does(tmp_path, file, chips,
                                                                               geometry):
    source = shared(*RUNS, file)
    lib = _library(tmp_path)
    main = lib / "main_config.yaml"
    runs = _runs(tmp_path, "runs", source, f"daq:\n  server: {{NEvents: 10000, NChips: {chips}}}\n")
    result = run_raff("import", runs, "--name", "module_run", "-c", main)
    assert result.code == 0, result.err
    assert "1 runs imported" in result.out
    with open(lib / "analysis_procedures.yaml", "a") as f:
        f.write(QC % ("module_run", "module_run"))
    built = run_raff("build", "module_run_qc", "-c", main)
    assert built.code == 0, built.err
    assert "0 points acquired" in built.out
    mine = json.loads((lib / "raff-out" / "module_run_qc" / "verdict.json").read_text())
    judged = json.loads(run_raff("qc", source, "--json").out)
    assert mine["geometry"] == judged["geometry"] == geometry
    for field in ("verdict", "grade", "dead_pads", "noisy_pads"):
        assert mine[field] == judged[field], field

    from raffinerie.store.store import Store

    store = Store(lib / ".raffinerie-cache")
    key = next((store.root / "measurements").glob("*/*")).name
    point = store.read_summary(key)
    tree = rootio.read_root_summary(source)
    order = np.lexsort((tree["channel"], tree["channeltype"], tree["chip"]))
    again = np.lexsort((point["channel"], point["channeltype"], point["chip"]))
    for column in ("adc_mean", "adc_stdd", "toa_efficiency"):
        np.testing.assert_array_equal(point[column][again], tree[column][order].astype(np.float64))
    assert set(point["n_events"]) == {10000} and set(point["tot_overflow"]) == {-1}   # -1: not known
    meta = store.meta("measurements", key)
    assert meta["imported_from"].endswith("pedestal_run0.root") and meta["raw_bytes"] == 0


def test_summary_rows_are_in_the_decoders_order():
    """The slots of an imported summary line up with those of a decoded run: one dataset grid."""
    from raffinerie.daq.runs import open_raw

    raw = shared("hexactrl-timewalk", "test_run_1.raw")
    decoded = open_raw(raw).summary()
    path = shared(*RUNS, "E02_pedestal_run0.root")
    imported = rootio.summary_as_decoded(rootio.read_root_summary(path), 100, path)
    for column in ("chip", "half", "channel", "channeltype"):
        np.testing.assert_array_equal(imported[column], decoded[column])
    assert [str(imported[c].dtype) for c in imported] == [str(decoded[c].dtype) for c in decoded]


def test_a_raw_file_wins_over_its_summary_and_a_summary_without_nevents_is_left_out(tmp_path):
    lib = _library(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    for suffix in (".raw", ".yaml"):
        shutil.copy(shared("hexactrl-timewalk", "test_run_1" + suffix), runs / ("test_run_1" + suffix))
    shutil.copy(shared(*RUNS, "test_pedestal_run0.root"), runs / "test_run_1.root")
    shutil.copy(shared(*RUNS, "test_pedestal_run0.root"), runs / "pedestal_run0.root")
    (runs / "pedestal_run0.yaml").write_text("daq:\n  server: {NChips: 3}\n")
    result = run_raff("import", runs, "--name", "mixed", "-c", lib / "main_config.yaml")
    assert result.code == 0, result.err
    assert "pedestal_run0.root: not imported: no NEvents in pedestal_run0.yaml" in result.err
    assert "1 runs imported" in result.out and "Traceback" not in result.err
    text = (lib / "imported" / "mixed.yaml").read_text()
    assert "test_run_1" in text and "pedestal_run0" not in text.split("runs:")[1].split("\n")[0]


def test_an_imported_summary_exports_to_the_database_with_its_nan_noise_left_out(tmp_path):
    source = shared(*RUNS, "E02_pedestal_run0.root")
    lib = _library(tmp_path)
    main = lib / "main_config.yaml"
    runs = _runs(tmp_path, "runs", source, "daq:\n  server: {NEvents: 10000}\n")
    assert run_raff("import", runs, "--name", "e02", "-c", main).code == 0
    assert run_raff("build", "e02", "-c", main).code == 0
    out = tmp_path / "upload"
    rocs = [a for c in range(3) for a in ("--roc-serial", f"roc_s{c}=ROC{c}")]
    result = run_raff("export", "e02", "-c", main, "--format", "hgcdb", "-o", out,
                      "--part", "320MLF3TCM0102", "--kind-of-part", "EM 300um Si Module LD Full", *rocs,
                      "--location", "CMU",
                      "--shipping-code", "1301", "--user", "jdoe", "--temperature", "20", "--humidity", "35")
    assert result.code == 0, result.err
    root = ET.parse(next(out.glob("*_pedestal.xml"))).getroot()
    tree = rootio.read_root_summary(source)
    rows = {(int(c), int(t), int(ch)): (float(m), float(s))
            for c, t, ch, m, s in zip(tree["chip"], tree["channeltype"], tree["channel"], tree["adc_mean"],
                                      tree["adc_stdd"])}
    offsets = {0: 0, 80: 1, 90: 100}
    seen = 0
    for chip, data_set in enumerate(root.findall("DATA_SET")):
        for data in data_set.findall("DATA"):
            number = int(data.findtext("CHANNEL"))
            base = 90 if number >= 90 else 80 if number >= 80 else 0
            mean, noise = rows[(chip, offsets[base], number - base)]
            assert float(data.findtext("MEAN")) == mean
            if math.isnan(noise):
                assert data.find("STDEV") is None
            else:
                assert float(data.findtext("STDEV")) == noise
            assert float(data.findtext("FRAC_UNC")) == 1 / math.sqrt(10000)
            seen += 1
    assert seen == 234
    judged = json.loads(run_raff("qc", source, "--json").out)
    assert f"{len(judged['noisy_pads'])} noisy" in result.out
