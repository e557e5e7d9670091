"""Analyses end to end: the example workflow, code-aware rebuilds, calibration chains, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import EXAMPLES, assert_clean_error, shared

PEDESTAL_PLOTS = {"pedestal_hexmap.png", "noise_hexmap.png", "pedestal.png", "noise.png"}
PLOTS = {"pedestal": PEDESTAL_PLOTS, "trimmed_pedestal": PEDESTAL_PLOTS,
         "pedestal_trim": {"trim_hexmap.png", "trim_scan.png", "trimmed_pedestals.png"},
         "injection": {"adc_vs_charge.png", "tot_vs_charge.png"},
         "toa_scurve": {"scurves.png", "thresholds.png"},
         "timewalk": {"toa_vs_phase.png", "toa_vs_charge.png", "adc_vs_phase.png"}}


def acquisitions(cache: Path) -> list[dict]:
    path = cache / "journal.jsonl"
    events = [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []
    return [e for e in events if e["event"] == "acquired"]  # the journal also says what was built


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example library, built once on the embedded emulator."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("example") / "lib"
    shutil.copytree(EXAMPLES, folder)
    result = subprocess.run([sys.executable, "-m", "raffinerie", "build", "characterisation", "-c",
                             str(folder / "main_config.yaml"), "-w", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder


def test_example_workflow_builds_every_analysis_with_its_plots(example):
    out = example / "raff-out"
    for name, plots in PLOTS.items():
        files = {p.name for p in (out / name).iterdir()}
        assert {"summary.csv"} | plots <= files, name
        for plot in plots:
            assert (out / name / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "pedestal_trim" / "calibration.yaml").is_file()


def test_second_build_does_nothing_and_plan_agrees(raff, example):
    main = example / "main_config.yaml"
    before = len(acquisitions(example / ".raffinerie-cache"))
    result = raff("build", "characterisation", "-c", main)
    assert result.code == 0 and "characterisation is up to date" in result.out
    assert len(acquisitions(example / ".raffinerie-cache")) == before
    assert raff("plan", "characterisation", "-c", main, "--check").code == 0


def test_builtin_results_make_physical_sense(example):
    out = example / "raff-out"
    ped = pd.read_csv(out / "pedestal" / "summary.csv")
    normal = ped[ped.channeltype == 0]
    assert 260 < normal.pedestal.mean() < 320 and 0.9 < normal.noise.median() < 1.2
    assert set(ped.flag) == {"ok"}
    trimmed = pd.read_csv(out / "trimmed_pedestal" / "summary.csv")
    spread = lambda s: s[s.channeltype == 0].groupby(["chip", "half"]).pedestal.std().median()  # noqa: E731
    assert spread(trimmed) < 0.25 * spread(ped)  # the trimmed pedestals are aligned
    inj = pd.read_csv(out / "injection" / "summary.csv")
    assert 5.5 < inj.gain_adc_per_fc.median() < 7.5          # 1024 ADC / 160 fC
    assert 0.7 < inj.tot_slope_per_calib.median() < 0.9      # real board: 0.76-0.82
    tw = pd.read_csv(out / "timewalk" / "summary.csv")
    assert 62 < tw.toa_per_phase_step.median() < 66
    assert 30 < tw.timewalk_lsb.median() < 80
    s = pd.read_csv(out / "toa_scurve" / "summary.csv")
    # a fit only where two points lie inside the 10-90 % transition; a turn-on narrower than one
    # Calib step is reported as the interval that brackets it
    fitted, unresolved = s[s.status == "fit"], s[s.status == "unresolved"]
    assert fitted.fit_ok.all() and (fitted.width < 2).all() and (fitted.n_transition >= 2).all()
    assert not unresolved.fit_ok.any() and unresolved.threshold.isna().all()
    assert ((unresolved.bracket_high - unresolved.bracket_low) <= 3).all()
    assert len(fitted) + len(unresolved) >= 6


def test_trim_parameter_change_reruns_it_and_reacquires_only_the_trimmed_run(raff, example, tmp_path):
    lib = tmp_path / "lib"
    shutil.copytree(example, lib)
    main = lib / "main_config.yaml"
    cache = lib / ".raffinerie-cache"
    analyses = lib / "analysis_procedures.yaml"
    analyses.write_text(analyses.read_text().replace("max_trim: 63", "max_trim: 40"))
    plan = json.loads(raff("plan", "characterisation", "-c", main, "--json").out)
    reasons = {n["id"]: n["reason"] for n in plan["nodes"] if n["status"] != "cached"}
    waiting = "waiting for calibration pedestal_trim (parameters changed: max_trim 63 → 40)"
    assert reasons == {"analysis:pedestal_trim": "parameters changed (max_trim 63 → 40)",
                       "points:trimmed_pedestal_run": waiting,
                       "dataset:trimmed_pedestal_run": waiting, "analysis:trimmed_pedestal": waiting}
    before = len(acquisitions(cache))
    result = raff("build", "characterisation", "-c", main)
    assert result.code == 0, result.err
    new = acquisitions(cache)[before:]
    assert [e["procedure"] for e in new] == ["trimmed_pedestal_run"]
    assert "1 point acquired, 1 dataset and 2 analyses" in result.out
    record = json.loads((cache / "names" / "datasets" / "trimmed_pedestal_run.json").read_text())
    assert record["inputs"]["calibration"]


DR_STYLE = '''\
import os


class mine(object):
    """A Datenraffinerie-style distillery."""

    def __init__(self, parameters):
        self.scale = parameters.get("scale", 1)

    def output(self):
        return {"summary": "summary.csv", "plots": [], "calibration": None}

    def run(self, data, output_dir):
        from helper import mean_of
        summary = data.groupby(["chip", "channel"]).adc_mean.mean().reset_index()
        summary["scaled"] = mean_of(summary.adc_mean) * self.scale  # the result
        summary.to_csv(os.path.join(output_dir, "summary.csv"), index=False)
'''


def _user_library(libdir):
    libdir.write("analyses/mine.py", DR_STYLE)
    libdir.write("analyses/helper.py", "def mean_of(values):\n    return values.mean()\n")
    scan = "- key: [roc_s0, Top, 0, phase_strobe]\n  values: [1, 2]\n"
    return libdir.main(libdir.daq("scan", parameters=scan)
                       + "- {name: mine, type: analysis, daq: scan, parameters: {scale: 2}}\n")


def test_datenraffinerie_style_distillery_and_code_aware_keys(raff, libdir):
    main = _user_library(libdir)
    cache = libdir.root / ".raffinerie-cache"
    first = raff("build", "mine", "-c", main)
    assert first.code == 0, first.err
    summary = pd.read_csv(libdir.root / "raff-out" / "mine" / "summary.csv")
    assert len(summary) == 3 * 72 and summary.scaled.nunique() == 1
    acquired = len(acquisitions(cache))
    mine = libdir.root / "analyses" / "mine.py"
    mine.write_text(mine.read_text().replace("# the result", "# the result, doubled") + "\n\n# a comment\n")
    assert raff("plan", "mine", "-c", main, "--check").code == 0  # comments change nothing
    assert "mine is up to date" in raff("build", "mine", "-c", main).out
    mine.write_text(mine.read_text().replace("* self.scale", "* self.scale + 1"))
    plan = json.loads(raff("plan", "mine", "-c", main, "--json").out)
    assert [n["reason"] for n in plan["nodes"] if n["status"] != "cached"] == ["code changed (mine.py)"]
    rebuilt = raff("build", "mine", "-c", main)
    assert "0 points acquired, 0 datasets and 1 analysis" in rebuilt.out
    helper = libdir.root / "analyses" / "helper.py"
    helper.write_text("def mean_of(values):\n    return values.median()\n")
    plan = json.loads(raff("plan", "mine", "-c", main, "--json").out)
    assert [n["reason"] for n in plan["nodes"] if n["status"] != "cached"] == ["code changed (helper.py)"]
    assert raff("build", "mine", "-c", main).code == 0
    assert len(acquisitions(cache)) == acquired  # analysis code never re-acquires


def test_analysis_errors_name_the_analysis_and_the_file(raff, libdir):
    main = _user_library(libdir)
    mine = libdir.root / "analyses" / "mine.py"
    mine.write_text(DR_STYLE.replace("summary.to_csv(", "raise RuntimeError('bad fit'); summary.to_csv("))
    assert_clean_error(raff("build", "mine", "-c", main), "analysis 'mine' failed in run(): RuntimeError: bad fit",
                       "mine.py:")
    mine.write_text(DR_STYLE.replace('summary.to_csv(os.path.join(output_dir, "summary.csv"), index=False)', "pass"))
    assert_clean_error(raff("build", "mine", "-c", main),
                       "analysis 'mine' declared summary output summary.csv but did not write it")
    mine.write_text(DR_STYLE.replace("class mine", "class other"))
    assert_clean_error(raff("build", "mine", "-c", main), "no distillery class 'mine'")
    mine.unlink()
    assert_clean_error(raff("plan", "mine", "-c", main), "module 'mine' not found")
    main2 = libdir.main(libdir.daq("scan") + "- {name: x, type: analysis, daq: scan, module: builtin.nope}\n")
    assert_clean_error(raff("plan", "x", "-c", main2), "no built-in analysis 'builtin.nope'", "builtin.pedestal")


def test_analyses_of_the_real_timewalk_runs(raff, tmp_path):
    folder = shared("hexactrl-timewalk")
    main = tmp_path / "main.yaml"
    main.write_text("procedures:\n"
                    "  - {name: timewalk, type: analysis, daq: runs, module: builtin.timewalk}\n"
                    "  - {name: pedestal, type: analysis, daq: runs, module: builtin.pedestal,\n"
                    "     parameters: {where: {Calib: 0, phase_strobe: [1, 2]}}}\n")
    imported = raff("import", folder, "--name", "runs", "-c", main, "--board", "LD")
    assert imported.code == 0, imported.err
    assert raff("build", "timewalk", "-c", main).code == 0
    tw = pd.read_csv(tmp_path / "raff-out" / "timewalk" / "summary.csv")
    # phases 1, 2 and 4 (runs 1-16 have no phase_strobe: not a phase-0 slice); chip 2 steps
    # 65.5-68.4 LSB between phases 1 and 2, chip 0 63-64
    for chip, (low, high) in ((0, (62.5, 64.5)), (2, (65, 69))):
        steps = tw[(tw.chip == chip) & tw.channel.isin([10, 20, 40, 50])].toa_per_phase_step
        assert len(steps) == 4 and steps.between(low, high).all(), steps
    assert raff("build", "pedestal", "-c", main).code == 0
    ped = pd.read_csv(tmp_path / "raff-out" / "pedestal" / "summary.csv")
    quiet = ped[(ped.channeltype == 0) & ~ped.channel.isin([10, 11, 12, 20, 21, 22, 40, 41, 42, 50, 51, 52])]
    assert 270 < quiet.pedestal.median() < 310 and 0.85 < quiet.noise.median() < 1.2
