"""The built-in analyses on the real LD-hexaboard timewalk runs (skip without ../shared/data).

The numbers are those a physicist checks by hand on these runs
(docs: hexactrl-raw-format.md section 7): runs 1-16 lack phase_strobe (really
phase 2), Calib steps of 128 leave the TOA turn-on unresolved, chip 1 has no
TDC output, and raw TOT 0x3FF is an overflow code.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml

from conftest import run_raff, shared

INJECTED = [10, 20, 40, 50]
ANALYSES = """\
procedures:
  - {name: timewalk, type: analysis, daq: runs, module: builtin.timewalk}
  - {name: injection, type: analysis, daq: runs, module: builtin.injection}
  - {name: scurve, type: analysis, daq: runs, module: builtin.scurve}
  - {name: pedestal, type: analysis, daq: runs, module: builtin.pedestal}
"""


def _import(folder, lib, *extra):
    lib.mkdir(parents=True, exist_ok=True)
    main = lib / "main.yaml"
    main.write_text(ANALYSES)
    result = run_raff("import", folder, "--name", "runs", "-c", main, "--board", "LD-proto", *extra)
    assert result.code == 0, result.err
    out = {"import": result}
    for name in ("timewalk", "injection", "scurve", "pedestal"):
        out[name] = run_raff("build", name, "-c", main)
        assert out[name].code == 0, out[name].err
    return main, out


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The 49 runs imported as they are (phase_strobe unknown for runs 1-16), every analysis built."""
    return _import(shared("hexactrl-timewalk"), tmp_path_factory.mktemp("real"))


def summary(main, name):
    return pd.read_csv(main.parent / "raff-out" / name / "summary.csv")


def injected(s, chips=(0, 2)):
    return s[s.chip.isin(chips) & (s.channeltype == 0) & s.channel.isin(INJECTED)]


def test_import_names_the_runs_without_phase_strobe_and_the_corrupt_halves(real):
    main, out = real
    result = out["import"]
    assert "16 runs lack phase_strobe in their yaml (test_run_1, test_run_2 .. test_run_16)" in result.err
    assert "test_run_71: 24 corrupt halves left out (chip 1: 24 corrupt halves in 12 events (events 5-16))" \
        in result.out
    assert "corrupt halves: 24 in 1 of 49 runs" in result.out
    entry = yaml.safe_load((main.parent / "imported" / "runs.yaml").read_text())[0]
    assert entry["imported"]["missing"] == {"phase_strobe": [f"test_run_{n}" for n in range(1, 17)]}
    plan = run_raff("plan", "runs", "-c", main)
    assert "board LD-proto (imported runs)" in plan.out and "emulator" not in plan.out
    assert '"identity": "LD-proto"' in run_raff("plan", "runs", "-c", main, "--json").out


def test_timewalk_per_injected_channel_and_toa_per_phase_step(real):
    main, out = real
    tw = injected(summary(main, "timewalk")).set_index(["chip", "channel"])
    # TOA(Calib 128) - TOA(Calib 1920), median of phases 1 and 2 (runs 17-48), in LSB
    walk = {(0, 10): 49.5, (0, 20): 44.2, (0, 40): 64.1, (0, 50): 52.8,
            (2, 10): 63.4, (2, 20): 55.7, (2, 40): 52.6, (2, 50): 48.9}
    for key, value in walk.items():
        assert tw.timewalk_lsb[key] == pytest.approx(value, abs=0.3), key
    assert (tw.calib_low == 128).all() and (tw.calib_high == 1920).all() and (tw.flag == "ok").all()
    # TOA per phase step (phases 1, 2 and the single phase-4 point): 63-64 on chip 0, 65.5-68.5 on chip 2
    step = {(0, 10): 63.9, (0, 20): 63.1, (0, 40): 64.1, (0, 50): 64.0,
            (2, 10): 67.6, (2, 20): 68.4, (2, 40): 65.5, (2, 50): 66.2}
    for key, value in step.items():
        assert tw.toa_per_phase_step[key] == pytest.approx(value, abs=0.3), key
    assert (tw.n_phases == 3).all()    # 1, 2, 4: the 16 runs of unknown phase are not "phase 0"
    assert "16 points of unknown phase_strobe left out" in out["timewalk"].err
    chip1 = summary(main, "timewalk").query("chip == 1")
    assert (chip1.flag == "no firing points").all()


def test_scurve_in_steps_of_128_is_unresolved_between_0_and_128(real):
    main, _ = real
    s = summary(main, "scurve")
    rows = injected(s)
    steps = rows[rows.n_points == 16]   # phases 1, 2 and unknown; phase 4 has one point
    assert len(steps) == 24 and (steps.status == "unresolved").all() and not steps.fit_ok.any()
    assert (steps.bracket_low == 0).all() and (steps.bracket_high == 128).all()
    assert steps.threshold.isna().all() and steps.width.isna().all()
    assert (s[s.phase_strobe == 4].status == "fires below the scan").all()
    assert 1 not in set(s.chip)        # chip 1 never fires TOA


def test_tot_overflow_is_out_of_the_statistics_and_slopes(real, tmp_path):
    main, _ = real
    out = tmp_path / "runs.csv"
    assert run_raff("export", "runs", "-c", main, "-o", out).code == 0
    data = pd.read_csv(out)
    # test_run_9 (Calib 1024, phase unknown): chip 2 channel 50 has the code in 310 of 518 events
    run9 = data[(data.point == 8) & (data.chip == 2) & (data.channel == 50) & (data.channeltype == 0)].iloc[0]
    assert run9.tot_overflow == 310 and run9.tot_efficiency == 1
    assert run9.tot_median == 752 and run9.tot_mean == pytest.approx(752.08, abs=0.01)
    assert (data.tot_mean - data.tot_median).abs().max() < 10   # was > 200 in 12 rows of one run
    inj = injected(summary(main, "injection"))
    per_calib = inj[inj.phase_strobe.isin([1, 2]) | inj.phase_strobe.isna()].tot_slope_per_calib
    assert len(per_calib) == 24 and per_calib.between(0.75, 0.82).all(), per_calib
    c2 = inj.set_index(["chip", "channel", inj.phase_strobe.fillna(-1)])
    assert c2.tot_slope_per_calib[(2, 50, -1)] == pytest.approx(0.791, abs=0.003)   # overflow-heavy runs
    assert c2.tot_overflow[(2, 50, -1)] >= 310


def test_pedestal_over_the_campaign_uses_only_the_calib_0_runs(real):
    main, out = real
    ped = summary(main, "pedestal")
    assert (ped.flag == "ok").all() and (ped.n_points == 3).all()   # runs 1, 17, 33
    quiet = ped[(ped.channeltype == 0) & ~ped.channel.isin([10, 11, 12, 20, 21, 22, 40, 41, 42, 50, 51, 52])]
    assert 280 < quiet.pedestal.mean() < 295 and 0.95 < quiet.noise.median() < 1.1
    assert "46 points inject charge and are left out" in out["pedestal"].err


def test_assumed_phase_is_applied_and_recorded(tmp_path):
    folder = shared("hexactrl-timewalk")
    main, out = _import(folder, tmp_path / "lib", "--assume", "phase_strobe=2", "--runs", "1-16")
    assert "phase_strobe = 2 assumed for 16 runs" in out["import"].out
    entry = yaml.safe_load((main.parent / "imported" / "runs.yaml").read_text())[0]
    assert entry["imported"]["assumed"]["phase_strobe"]["value"] == 2 and "missing" not in entry["imported"]
    tw = injected(summary(main, "timewalk")).set_index(["chip", "channel"])
    # runs 1-16 repeat runs 33-48 (TOA within 0.25 LSB): the timewalk barely moves
    assert tw.timewalk_lsb[(0, 10)] == pytest.approx(49.5, abs=0.5)
    assert (tw.n_phases == 3).all()


def test_a_mislabelled_real_run_is_flagged(tmp_path):
    folder = shared("hexactrl-timewalk")
    runs = tmp_path / "runs"
    runs.mkdir()
    for n in range(17, 49):   # phases 1 and 2
        for ext in ("raw", "yaml"):
            shutil.copy(folder / f"test_run_{n}.{ext}", runs / f"test_run_{n}.{ext}")
    # run 48 (Calib 1920, phase 2) labelled Calib 0, as runs 81, 86, 97 ... of the full campaign
    config = runs / "test_run_48.yaml"
    config.write_text(config.read_text().replace("Calib: 1920", "Calib: 0"))
    main, out = _import(runs, tmp_path / "lib")
    assert "contradicts its label" in out["timewalk"].err and "Calib 0, phase_strobe 2" in out["timewalk"].err
    tw = injected(summary(main, "timewalk")).set_index(["chip", "channel"])
    assert (tw.flag == "mislabelled points left out").all()
    # without the check the "smallest charge" would be the mislabelled 1920 run: timewalk ~0 at phase 2
    assert tw.timewalk_lsb[(0, 40)] == pytest.approx(64.1, abs=1.5)
    assert tw.timewalk_lsb.between(40, 70).all(), tw.timewalk_lsb
    ped = summary(main, "pedestal")
    assert (ped.flag == "ok").all() and (ped.n_points == 2).all()
