"""The trim and sampling-phase links of the tuning chain (builtin.toa_trim, tot_trim, sampling_phase),
built with the real `raff` CLI on the embedded emulator and checked against the emulator's truth
(raffinerie.emulator.model.Board of the seed), never through the analyses themselves."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import EXAMPLES, LibraryFolder
from raffinerie.analysis.builtin.trims import MAX_TRIM, choose_shift
from raffinerie.emulator.model import HIGH_RANGE_FC, LOW_RANGE_FC, PHASE_NS, TAU_NS, Board, pulse_shape
from raffinerie.emulator.registers import RegisterFile

SEED = 0
TOA_CALIB = 74       # LowRange: 9.0 fC, the threshold of the median channel near trim_toa 55 (model 5)
TOT_CALIB = 2900     # LowRange: 181 fC = 92.6 HighRange Calib units, the median TOT channel near trim_tot 9
PHASE_CALIB = 40     # HighRange: 88 fC, 560 ADC: a pulse that does not saturate
SATURATING = 1024    # HighRange: 2 pC, far above the 160 fC full scale
TRIMS = list(range(0, 64, 4)) + [63]
CALPULSE = [{"name": "A", "enable": 1, "BX": 16, "length": 1, "flavor": "CALPULINT", "prescale": 0,
             "followMode": "DISABLE"}] + [
    {"name": n, "enable": 0, "BX": bx, "length": 1, "flavor": "L1A", "prescale": 0, "followMode": "DISABLE"}
    for n, bx in (("B", 38), ("C", 48), ("D", 64))]   # examples/daq_procedures.yaml, injection_scan
CHIPS = [f"roc_s{c}" for c in range(3)]
ALL = list(range(72))


def injection(calib: int, low_range: bool) -> dict:
    """examples/init/injection.yaml (characterisation mode, IntCtest, phase 2), with `calib` in both
    halves; LowRange: every channel through the 0.5 pF capacitor instead of its four HighRange ones.
    The model's crosstalk reaches only the ADC, so all 72 channels can be injected at once."""
    init = yaml.safe_load((EXAMPLES / "init" / "injection.yaml").read_text())
    for chip in init.values():
        for half in chip["ReferenceVoltage"].values():
            half["Calib"] = calib
        if low_range:
            chip["ch"] = {c: {"LowRange": 1} for c in ALL}
    return init


def daq(name: str, n_events: int, parameters: list) -> dict:
    return {"name": name, "type": "daq",
            "target_settings": {"power_on_default": "./defaults/pod.yaml",
                                "initial_config": f"./init/{name}.yaml"},
            "daq_settings": {"default": "./defaults/daq.yaml",
                             "server_override": {"NEvents": n_events, "l1a_generator_settings": CALPULSE}},
            "parameters": parameters}


def analysis(name: str, scan: str, module: str, **parameters) -> dict:
    return {"name": name, "type": "analysis", "daq": scan, "module": f"builtin.{module}",
            "parameters": parameters}


def library(lib: LibraryFolder):
    lib.write("init/toa_trim_scan.yaml", yaml.safe_dump(injection(TOA_CALIB, True)))
    lib.write("init/tot_trim_scan.yaml", yaml.safe_dump(injection(TOT_CALIB, True)))
    lib.write("init/sampling_scan.yaml", yaml.safe_dump(injection(PHASE_CALIB, False)))
    trim = lambda register: [{"key": [CHIPS, "ch", ALL, register], "values": TRIMS}]  # noqa: E731
    procedures = [
        daq("toa_trim_scan", 200, trim("trim_toa")),
        daq("tot_trim_scan", 200, trim("trim_tot")),
        daq("sampling_scan", 100, [{"key": [CHIPS, "ReferenceVoltage", [0, 1], "Calib"],
                                    "values": [PHASE_CALIB, SATURATING]},
                                   {"key": [CHIPS, "Top", 0, "phase_strobe"], "values": list(range(16))}]),
        analysis("toa_trim", "toa_trim_scan", "toa_trim"),
        analysis("toa_trim_centred", "toa_trim_scan", "toa_trim", target_trim=31),
        analysis("tot_trim", "tot_trim_scan", "tot_trim"),
        analysis("sampling_phase", "sampling_scan", "sampling_phase", where={"Calib": PHASE_CALIB}),
        analysis("sampling_saturated", "sampling_scan", "sampling_phase", where={"Calib": SATURATING}),
        analysis("sampling_late", "sampling_scan", "sampling_phase",
                 where={"Calib": PHASE_CALIB, "phase_strobe": list(range(2, 16))}),
    ]
    return lib.write("main.yaml", yaml.safe_dump({"procedures": procedures}, sort_keys=False))


ANALYSES = ["toa_trim", "toa_trim_centred", "tot_trim",
            "sampling_phase", "sampling_saturated", "sampling_late"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    lib = LibraryFolder(tmp_path_factory.mktemp("tuning"))
    main = library(lib)
    command = [sys.executable, "-m", "raffinerie", "build", *ANALYSES, "-c", str(main), "-w", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    return lib.root


def out(root, name: str, file: str = "summary.csv"):
    path = root / "raff-out" / name / file
    if file.endswith(".csv"):
        return pd.read_csv(path)
    return yaml.safe_load(path.read_text()) if file.endswith(".yaml") else path.read_text()


def truth(root, scan: str, calibration: dict | None = None) -> dict:
    """The emulator model's per-slot state for the scan's resolved registers (power-on default,
    initial config) with `calibration` over them: what the board does, from the seed."""
    regs = RegisterFile()
    for name in ("defaults/pod.yaml", f"init/{scan}.yaml"):
        regs.write(yaml.safe_load((root / name).read_text()))
    regs.write(calibration or {})
    return Board(SEED).state(regs, True)


def per_channel(array: np.ndarray, summary: pd.DataFrame) -> np.ndarray:
    """The (chips, halves, 37 slots) `array` at each summary row's normal channel."""
    c = summary.channel.to_numpy()
    return array[summary.chip.to_numpy(), c // 36, c % 36]


def check_trims(root, name: str, scan: str, trim: str, threshold: str, charge: float, step: np.ndarray,
                tolerance: float) -> dict:
    """Truth after the analysis's trims: every trimmed channel's threshold within `tolerance` trim steps
    of the scanned charge; every flagged one the truth cannot align inside the scan; figures back."""
    s = out(root, name)
    calibration = out(root, name, "calibration.yaml")
    ok = s.status == "trimmed"
    written = {(int(chip[5:]), ch): v[trim] for chip, blocks in calibration.items()
               for ch, v in blocks["ch"].items()}
    assert written == {(r.chip, r.channel): int(getattr(r, trim)) for r in s[ok].itertuples()}
    after = per_channel(truth(root, scan, calibration)[threshold], s)
    untrimmed = per_channel(truth(root, scan)[threshold], s)    # every trim 0
    k = per_channel(step, s)
    off = (after - charge) / k                        # 50 % point after trimming, in its own trim steps
    needed = (untrimmed - charge) / k                 # the trim that puts it at the scanned charge
    assert np.abs(off[ok]).max() <= tolerance, np.sort(np.abs(off[ok]))[-5:]
    halves = pd.Series(off[ok]).groupby([s.chip[ok].to_numpy(), s.half[ok].to_numpy()])
    assert (halves.max() - halves.min()).max() <= 2 * tolerance      # within +-tolerance of each other
    inside = (needed > TRIMS[0] + 1) & (needed < TRIMS[-1] - 1)
    assert ok[inside].all(), s[inside & ~ok]           # what the truth can align is aligned ...
    assert not ok[(needed < TRIMS[0] - 1) | (needed > TRIMS[-1] + 1)].any()  # ... and nothing else
    return {"flagged": int((~ok).sum()), "max_off": float(np.abs(off[ok]).max()),
            "rms_off": float(off[ok].std()), "rms_before": float(((untrimmed - charge) / k - 31.5)[ok].std()),
            "needed_of_flagged": needed[~ok]}


def test_toa_trims_put_every_threshold_at_the_scanned_charge(built):
    board = Board(SEED)
    step = 0.3 * board.toa_trim_step                  # fC per trim_toa step (model: TOA_TRIM_FC)
    figures = check_trims(built, "toa_trim", "toa_trim_scan", "trim_toa", "toa_threshold",
                          TOA_CALIB * LOW_RANGE_FC, step, tolerance=1.0)
    assert figures["flagged"] >= 5 and (figures["needed_of_flagged"] > TRIMS[-1] - 1).all()
    assert figures["rms_off"] < 0.5 < 4 < figures["rms_before"], figures
    s = out(built, "toa_trim")
    flagged = s[s.status != "trimmed"]
    assert set(flagged.status) == {"below 50 % at every trim"} and flagged.trim_toa.isna().all()
    notes = out(built, "toa_trim", "notes.txt")
    assert all(f"ch {r.channel}" in notes for r in flagged.itertuples())
    assert (s[s.status == "trimmed"]["shift"] == 0).all()    # D = 0: the default target


def test_toa_trims_around_a_target_trim(built):
    """target_trim 31: each half's median channel at trim 31 (D about 22 steps), the thresholds D steps
    above the charge, aligned as well as the channels' trim steps (5 % apart) allow."""
    s = out(built, "toa_trim_centred")
    ok = s[s.status == "trimmed"]
    medians = ok.groupby(["chip", "half"]).trim_toa.median()
    assert (medians - 31).abs().max() <= 1, medians
    board = Board(SEED)
    after = per_channel(truth(built, "toa_trim_scan", out(built, "toa_trim_centred", "calibration.yaml"))
                        ["toa_threshold"], ok)
    before = per_channel(truth(built, "toa_trim_scan", {c: {"ch": {n: {"trim_toa": 31} for n in ALL}}
                                                        for c in CHIPS})["toa_threshold"], ok)
    spread = lambda v: pd.Series(v).groupby([ok.chip.to_numpy(), ok.half.to_numpy()]).std()  # noqa: E731
    assert (spread(after) < spread(before) / 3).all(), (spread(after), spread(before))
    shift = ok["shift"].to_numpy()
    k = per_channel(0.3 * board.toa_trim_step, ok)
    assert np.abs((after - TOA_CALIB * LOW_RANGE_FC) / k - shift).max() <= 1 + 0.1 * shift.max()


def test_tot_trims_put_every_threshold_at_the_scanned_charge(built):
    board = Board(SEED)
    step = 2.0 * board.tot_trim_step                  # Calib units per trim_tot step (model: TOT_TRIM_CALIB)
    # the TOT turn-on is 6 trim steps wide (12 Calib units of noise, 2 per step): with 200 events its
    # 50 % point is known to 0.3 steps (rms; TOA: 0.23), so rounding (0.5) and 3 sigma of it reach 1.25
    figures = check_trims(built, "tot_trim", "tot_trim_scan", "trim_tot", "tot_threshold",
                          TOT_CALIB * LOW_RANGE_FC / HIGH_RANGE_FC, step, tolerance=1.25)
    assert figures["rms_off"] < 0.5 < 3 < figures["rms_before"], figures
    assert (figures["needed_of_flagged"] < TRIMS[0] + 1).all()


def test_sampling_phase_at_the_pulse_maximum(built):
    phases = np.arange(16)
    peak = int(phases[np.argmax(pulse_shape(TAU_NS + (phases - 2) * PHASE_NS))])   # the model's truth
    s = out(built, "sampling_phase")
    assert list(s.status) == ["chosen"] * 3 and (s.phase_strobe - peak).abs().max() <= 1
    assert (s.peak_adc < 1000).all() and (s.agreeing == s.n_channels).all() and (s.n_channels == 4).all()
    calibration = out(built, "sampling_phase", "calibration.yaml")
    assert calibration == {c: {"Top": {0: {"phase_strobe": int(p)}}} for c, p in zip(CHIPS, s.phase_strobe)}


def test_sampling_phase_flags_saturation_and_a_maximum_at_the_scan_edge(built):
    saturated, late = out(built, "sampling_saturated"), out(built, "sampling_late")
    assert list(saturated.status) == ["saturated"] * 3 and (saturated.peak_adc >= 1000).all()
    assert list(late.status) == ["maximum at the scan's edge"] * 3 and (late.peak_phase == 2).all()
    for name in ("sampling_saturated", "sampling_late"):
        assert out(built, name, "calibration.yaml") == {}
        assert out(built, name).phase_strobe.isna().all()
        assert "no phase_strobe written" in out(built, name, "notes.txt")


def test_every_analysis_draws_its_plots(built):
    for name in ANALYSES:
        plots = ["adc_vs_phase"] if name.startswith("sampling") else ["trim_hexmap", "efficiency_vs_trim",
                                                                       "alignment"]
        for plot in plots:
            assert (built / "raff-out" / name / f"{plot}.png").read_bytes()[:4] == b"\x89PNG", (name, plot)


def test_shift_keeps_the_most_channels_in_range_and_flags_the_rest():
    """A half whose 50 % points span more than the 6-bit range: the shift keeps the most inside,
    closest to the wanted one, and the rest fall outside 0..63 (the analysis flags them)."""
    t50 = np.array([0.0, 10, 20, 30, 40, 50, 60, 75, 120])
    shift = choose_shift(t50, 0.0, MAX_TRIM)
    trims = np.rint(t50 - shift)
    assert ((trims >= 0) & (trims <= MAX_TRIM)).sum() == 7 and shift == 0
    assert choose_shift(t50[:7], 0.0) == 0
    assert -3.5 < choose_shift(t50[:7], -5.0) <= -3     # as close to -5 as keeps 60 at most 63
    assert 11.5 < choose_shift(t50[2:8], 0.0) <= 12   # 20..75 fit only when shifted down by 11.5-12




def test_points_on_the_tdc_wrap_are_left_out_and_a_crossing_in_their_gap_is_flagged():
    from raffinerie.analysis.builtin.trims import GAP, TRIMMED, at_wrap, crossing

    # the TOA codes of fired events: mid-range, then on the wrap either side, then fine again
    rows = pd.DataFrame({"toa_median": [500.0, 1023.0, 1.0, 3.0, 4.0, np.nan],
                         "toa_efficiency": [0.2, 0.3, 0.4, 0.5, 0.6, 0.0]})
    assert at_wrap(rows).tolist() == [False, True, True, True, False, False]
    x = np.arange(0, 30, 3.0)
    eff = np.array([0, 0, 0, 0.15, 0.3, 0.7, 0.95, 1, 1, 1])
    assert crossing(x, eff, 3.0)[5] == TRIMMED
    kept = np.ones(len(x), bool)
    kept[[4, 5, 6]] = False                        # three points on the wrap: a 12-step gap
    t50, *_, low, high, status = crossing(x[kept], eff[kept], 3.0)
    assert status == GAP and (low, high) == (9.0, 21.0) and np.isnan(t50)
    kept[[4, 6]] = True                            # one left out: 6 steps, still read
    assert crossing(x[kept], eff[kept], 3.0)[5] == TRIMMED
