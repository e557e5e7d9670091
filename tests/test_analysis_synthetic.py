"""The analyses on emulated runs with planted defects, written as real .raw + .yaml and imported.

Each run is made by a small response model (pedestal, saturating ADC, TOT
linear above an onset, TOA with phase shift and timewalk) and encoded with
the project's raw-format encoder; nothing here talks to the emulator. Every
test plants one kind of defect and checks that the analysis flags it and
that the numbers stay those of the model.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import yaml

from raffinerie.daq.rawformat import build_halves, encode_records, make_channel_words, make_header

INJECTED = (10, 20, 40, 50)          # chip-wide channels with HighRange
TOA_PER_PHASE = 64.0
WALK = 50.0                          # TOA(Calib 128) - TOA(Calib -> large), LSB
TOT_PER_CALIB = 0.8
TOT_ZERO = 78                        # TOT crosses 0 at this Calib
N_EVENTS = 200


def toa_of(calib, phase, chip):
    """Arrival time: per-chip offset, 64 LSB per phase step, later for small pulses."""
    return 300 + 200 * chip + TOA_PER_PHASE * phase + WALK * np.exp(-(np.asarray(calib) - 128) / 200.0)


def compress_tot(tot: np.ndarray) -> np.ndarray:
    tot = np.asarray(tot, dtype=np.int64)
    return np.where(tot > 511, 0x200 | (tot >> 3), tot).astype(np.uint32)


def write_run(folder, name, calib, phase, *, response_calib=None, overflow=None, threshold=None,
              tdc_chips=(0, 2), seed=0):
    """One run: `calib`/`phase` go into the yaml (phase None: no key); the data are those of
    `response_calib` (default: calib). overflow: {(chip, channel): fraction of events with raw
    TOT 0x3FF}. threshold: (mu, sigma) of the TOA turn-on in Calib, else it fires for Calib > 0."""
    rng = np.random.default_rng(seed)
    q = calib if response_calib is None else response_calib
    n_chips, slots = 3, 37
    adc = np.zeros((N_EVENTS, n_chips, 2, slots), np.uint32)
    tot = np.zeros_like(adc)
    toa = np.zeros_like(adc)
    flags = np.zeros_like(adc)
    pedestal = 280 + (np.arange(n_chips * 2 * slots).reshape(n_chips, 2, slots) * 7) % 40
    adc[:] = np.clip(np.rint(pedestal + rng.normal(0, 1, adc.shape)), 0, 1023)
    for chip in range(n_chips):
        for channel in INJECTED:
            h, s = divmod(channel, 36)
            if q > 0:
                adc[:, chip, h, s] = 1023
            if chip not in tdc_chips or q <= 0:
                continue
            fires = (rng.random(N_EVENTS) < 0.5 * (1 + math.erf((q - threshold[0]) / (math.sqrt(2) * threshold[1]))))\
                if threshold else np.ones(N_EVENTS, bool)
            t = np.rint(toa_of(q, 0 if phase is None else phase, chip) + rng.normal(0, 0.5, N_EVENTS)) % 1024
            toa[:, chip, h, s] = np.where(fires, np.maximum(t, 1), 0)
            if q >= 256:
                value = np.rint(TOT_PER_CALIB * (q - TOT_ZERO) + rng.normal(0, 2, N_EVENTS))
                code = compress_tot(value)
                frac = (overflow or {}).get((chip, channel), 0)
                code = np.where(rng.random(N_EVENTS) < frac, 0x3FF, code)
                tot[:, chip, h, s] = code
                flags[:, chip, h, s] = 3
    channels = make_channel_words(adc, tot, toa, flags)
    events = np.arange(N_EVENTS)
    header = np.broadcast_to(make_header(np.full(N_EVENTS, 44), events % 64)[:, None, None], (N_EVENTS, n_chips, 2))
    cm_adc = np.rint(250 + rng.normal(0, 2, (N_EVENTS, n_chips, 2))).astype(np.uint32)
    cm = (cm_adc << 10) | cm_adc
    words = build_halves(np.ascontiguousarray(header), cm, channels).reshape(N_EVENTS * n_chips, 2, -1)
    raw = encode_records(np.repeat(events, n_chips), np.tile(np.arange(n_chips), N_EVENTS), words)
    (folder / f"{name}.raw").write_bytes(raw)
    roc = {"ReferenceVoltage": {h: {"Calib": int(calib), "IntCtest": 1} for h in (0, 1)},
           "DigitalHalf": {h: {"CalibrationSC": 1} for h in (0, 1)},
           "ch": {c: {"HighRange": 1} for c in INJECTED},
           "Top": {0: {"RunL": 1, "RunR": 1, **({} if phase is None else {"phase_strobe": int(phase)})}}}
    config = {"daq": {"server": {"NChips": 3, "NEvents": N_EVENTS}, "client": {"hw_type": "LD"}},
              "target": {f"roc_s{c}": roc for c in range(n_chips)}}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))


def campaign(folder, calibs=range(0, 2048, 128), phases=(1, 2), **kw):
    """A timewalk campaign: run n has Calib calibs[i], phase phases[j] (phase slowest)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for phase in phases:
        for calib in calibs:
            n += 1
            options = {k: v(n, calib, phase) if callable(v) else v for k, v in kw.items()}
            label_phase = options.pop("label_phase", phase)
            label_calib = options.pop("label_calib", calib)
            write_run(folder, f"run_{n}", label_calib, label_phase, seed=n,
                      response_calib=calib, **options)
    return folder


ANALYSES = """\
procedures:
  - {name: timewalk, type: analysis, daq: runs, module: builtin.timewalk}
  - {name: injection, type: analysis, daq: runs, module: builtin.injection}
  - {name: scurve, type: analysis, daq: runs, module: builtin.scurve}
  - {name: pedestal, type: analysis, daq: runs, module: builtin.pedestal}
"""


def imported(raff, tmp_path, folder, *extra):
    main = tmp_path / "main.yaml"
    main.write_text(ANALYSES)
    result = raff("import", folder, "--name", "runs", "-c", main, "--board", "synthetic", *extra)
    assert result.code == 0, result.err
    return main, result


def build(raff, main, name):
    result = raff("build", name, "-c", main)
    assert result.code == 0, result.err
    return pd.read_csv(main.parent / "raff-out" / name / "summary.csv"), result


def expected_walk(low=128, high=1920):
    return WALK * (math.exp(-(low - 128) / 200) - math.exp(-(high - 128) / 200))


def injected(summary, chips=(0, 2)):
    return summary[summary.chip.isin(chips) & (summary.channeltype == 0) & summary.channel.isin(INJECTED)]


def test_a_point_labelled_without_injection_that_fires_is_flagged_and_left_out(raff, tmp_path):
    # the Calib 1920 run of phase 2 carries the label Calib 0 (as run 86 of the real campaign)
    folder = campaign(tmp_path / "runs", label_calib=lambda n, c, p: 0 if (p, c) == (2, 1920) else c)
    main, _ = imported(raff, tmp_path, folder)
    tw, result = build(raff, main, "timewalk")
    assert "contradicts its label" in result.err and "Calib 0, phase_strobe 2" in result.err, result.err
    rows = injected(tw)
    assert len(rows) == 8 and (rows.flag == "mislabelled points left out").all() and (rows.n_left_out == 1).all()
    # the fake "smallest charge" would give a timewalk of ~0; the model's is 50 LSB (Calib 128 vs 1920,
    # or 128 vs 1792 in the phase that lost its 1920 point)
    assert np.allclose(rows.timewalk_lsb, expected_walk(), atol=1.0), rows.timewalk_lsb
    assert np.allclose(rows.toa_per_phase_step, TOA_PER_PHASE, atol=0.3)
    assert (rows.calib_low == 128).all()
    notes = (main.parent / "raff-out" / "timewalk" / "notes.txt").read_text()
    assert "left out" in notes
    inj, _ = build(raff, main, "injection")
    assert (injected(inj).flag == "mislabelled points left out").all()
    ped, _ = build(raff, main, "pedestal")
    # the mislabelled point is not a pedestal point: the injected channels keep their pedestal
    assert (ped.flag == "ok").all() and ped[ped.channeltype == 0].pedestal.max() < 330
    assert (ped.n_points == 2).all()   # the true Calib 0 points of phases 1 and 2, not the mislabelled one


def test_unresolved_turn_on_is_reported_as_an_interval_and_a_fine_scan_is_fitted(raff, tmp_path):
    coarse = campaign(tmp_path / "coarse", phases=(2,), threshold=(60.0, 3.0))
    main, _ = imported(raff, tmp_path, coarse)
    s, result = build(raff, main, "scurve")
    rows = injected(s)
    assert len(rows) == 8 and (rows.status == "unresolved").all() and not rows.fit_ok.any()
    assert rows.threshold.isna().all() and rows.width.isna().all()
    assert (rows.bracket_low == 0).all() and (rows.bracket_high == 128).all()
    assert "unresolved" in result.err
    fine_dir = tmp_path / "fine"
    fine = campaign(fine_dir / "runs", calibs=range(40, 84, 2), phases=(2,), threshold=(60.0, 3.0))
    main2, _ = imported(raff, fine_dir, fine)
    s2, _ = build(raff, main2, "scurve")
    rows2 = injected(s2)
    assert (rows2.status == "fit").all() and rows2.fit_ok.all()
    assert np.allclose(rows2.threshold, 60, atol=1.0) and np.allclose(rows2.width, 3, atol=1.0)
    assert (rows2.n_transition >= 2).all()


def test_tot_overflow_codes_are_counted_and_left_out_of_tot_statistics_and_slopes(raff, tmp_path):
    folder = campaign(tmp_path / "runs", phases=(2,), overflow={(2, 50): 0.6, (0, 10): 0.1})
    main, _ = imported(raff, tmp_path, folder)
    assert raff("build", "runs", "-c", main).code == 0
    out = tmp_path / "runs.csv"
    assert raff("export", "runs", "-c", main, "-o", out).code == 0
    data = pd.read_csv(out)
    ch50 = data[(data.chip == 2) & (data.channel == 50) & (data.channeltype == 0) & (data.Calib >= 256)]
    assert (ch50.tot_overflow > 0.45 * N_EVENTS).all() and (ch50.tot_overflow < 0.75 * N_EVENTS).all()
    truth = TOT_PER_CALIB * (ch50.Calib - TOT_ZERO)
    assert np.allclose(ch50.tot_mean, truth, atol=8) and np.allclose(ch50.tot_median, truth, atol=8)
    assert (ch50.tot_efficiency == 1).all()          # an overflow is still a TOT that fired
    assert (data.tot_mean - data.tot_median).abs().max() < 20
    inj, _ = build(raff, main, "injection")
    rows = injected(inj)
    assert np.allclose(rows.tot_slope_per_calib, TOT_PER_CALIB, atol=0.02), rows.tot_slope_per_calib
    assert rows.set_index(["chip", "channel"]).tot_overflow[(2, 50)] > 0.45 * N_EVENTS * 14


def test_runs_without_the_scanned_key_stay_unknown_unless_assumed(raff, tmp_path):
    # runs of phase 2 lost their phase_strobe key, as runs 1-16 of the real campaign
    folder = campaign(tmp_path / "runs", phases=(1, 2, 3),
                      label_phase=lambda n, c, p: None if p == 2 else p)
    main, result = imported(raff, tmp_path, folder)
    assert "16 runs lack phase_strobe" in result.err and "run_17" in result.err, result.err
    library = yaml.safe_load((tmp_path / "imported" / "runs.yaml").read_text())[0]
    assert library["imported"]["missing"]["phase_strobe"] == [f"run_{n}" for n in range(17, 33)]
    assert raff("build", "runs", "-c", main).code == 0
    out = tmp_path / "runs.csv"
    assert raff("export", "runs", "-c", main, "-o", out).code == 0
    data = pd.read_csv(out)
    assert sorted(data.drop_duplicates("point").phase_strobe_unknown.value_counts()) == [16, 32]
    tw, built = build(raff, main, "timewalk")
    rows = injected(tw)
    assert (rows.n_phases == 2).all()              # phases 1 and 3 only: the unknown one is left out
    assert np.allclose(rows.toa_per_phase_step, TOA_PER_PHASE, atol=0.3)
    assert "no phase_strobe" in built.err
    inj, _ = build(raff, main, "injection")
    assert set(injected(inj).phase_strobe.fillna(-1)) == {1, 3, -1}   # NaN: unknown, analysed as its own slice
    # the user knows: phase 2
    again = tmp_path / "assumed"
    again.mkdir()
    main2, result2 = imported(raff, again, folder, "--assume", "phase_strobe=2", "--runs", "17-32")
    assert "phase_strobe = 2 assumed for 16 runs" in result2.out and "lack phase_strobe" not in result2.err
    library2 = yaml.safe_load((again / "imported" / "runs.yaml").read_text())[0]
    assert library2["imported"]["assumed"]["phase_strobe"] == {"value": 2, "runs": [f"run_{n}" for n in range(17, 33)]}
    tw2, _ = build(raff, main2, "timewalk")
    assert (injected(tw2).n_phases == 3).all()
    bad = raff("import", folder, "--name", "x", "-c", main2, "--assume", "phase_strobe=2", "--runs", "1-5")
    assert bad.code != 0 and "only fills values" in bad.err


def test_pedestal_of_a_whole_campaign_uses_the_points_without_injection(raff, tmp_path):
    folder = campaign(tmp_path / "runs", calibs=(0, 512, 1024), phases=(1, 2))
    main, _ = imported(raff, tmp_path, folder)
    ped, result = build(raff, main, "pedestal")
    assert (ped.flag == "ok").all(), ped[ped.flag != "ok"]
    assert (ped.n_points == 2).all()     # the Calib 0 point of each phase
    assert "inject charge and are left out" in result.err
    # with no point without injection it says so rather than guessing
    only = campaign(tmp_path / "only" / "runs", calibs=(512, 1024), phases=(1,))
    main2, _ = imported(raff, tmp_path / "only", only)
    ped2, _ = build(raff, main2, "pedestal")
    sat = ped2[(ped2.channeltype == 0) & ped2.channel.isin(INJECTED)]
    assert (sat.flag == "no pedestal point").all() and sat.pedestal.isna().all()


def test_every_plot_renders_on_emulated_data(raff, tmp_path):
    folder = campaign(tmp_path / "runs", phases=(1, 2), overflow={(2, 50): 0.5})
    main, _ = imported(raff, tmp_path, folder)
    for name, plots in {"timewalk": ("toa_vs_phase", "toa_vs_charge", "adc_vs_phase"),
                        "injection": ("adc_vs_charge", "tot_vs_charge"), "scurve": ("scurves", "thresholds"),
                        "pedestal": ("pedestal", "noise")}.items():
        build(raff, main, name)
        for plot in plots:
            assert (tmp_path / "raff-out" / name / f"{plot}.png").read_bytes()[:4] == b"\x89PNG", (name, plot)


def test_toa_lines_are_unwrapped_against_one_reference():
    from raffinerie.analysis.builtin.timewalk import unwrap_from

    # two lines crossing the 1024 wrap at different phases: each unwrapped from its own first
    # point, the second would sit 1024 below the first
    first = unwrap_from(1000.0, np.array([1000.0, 40.0, 104.0]))
    second = unwrap_from(1000.0, np.array([20.0, 84.0, 148.0]))
    assert np.allclose(first, [1000, 1064, 1128]) and np.allclose(second, [1044, 1108, 1172])
