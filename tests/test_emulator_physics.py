"""The emulator's response next to the real board's (data/hexactrl-timewalk).

The same scan on both: HighRange injection on channels 10, 20, 40, 50 of
every chip, characterisation mode, Calib 0 ... 1920 in steps of 128 at
phase_strobe 1 and 2 (runs 17-32 and 33-48; runs 1-16 repeat phase 2).
Chip 1 of the real board sends neither TOA nor TOT, so the real numbers come
from chips 0 and 2. Real-data tests skip without ../shared/data; the emulator
tests always run, on `Board` directly (no sockets).

Measured on the real runs (the constants below):

- TOA of the injected channels: efficiency 0 at Calib 0 (where their ADC sits
  about 59 ADC above the other channels: a small residual pulse), 1 from 128.
- TOT: efficiency 0 at Calib 128, 1 at 256 on every channel (315-518 events),
  so its 10-90 % turn-on is at most about 68 Calib steps wide; TOT 88-106
  counts at 256 with an event-to-event spread of 0.4-1.0 counts.
- Timewalk (TOA at Calib 128 minus TOA at 1920): 43-65 LSB, mean curve
  54, 17, 9, 5, 3 LSB at Calib 128 ... 640. From phase 1 to phase 2 it changes
  by -4.8 ... +2.2 LSB per channel (mean |change| 2.2), while the repeat of
  phase 2 reproduces it within 0.1 LSB; the phase step itself reads
  62.8 ... 68.4 LSB depending on where the codes fall (TDC non-linearity).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import EXAMPLES, shared

from raffinerie.daq.runs import decode_run, open_raw
from raffinerie.emulator.model import Board, RunSettings, raw_file
from raffinerie.emulator.registers import RegisterFile

INJECTION = yaml.safe_load((EXAMPLES / "init" / "injection.yaml").read_text())
INJECTED = (10, 20, 40, 50)
REAL_CHIPS = (0, 2)
CALIBS = tuple(range(128, 2048, 128))

REAL_TOT_WIDTH_MAX = 68.0          # Calib steps, 10-90 % (95 % CL from 0 of N at 128, N of N at 256)
REAL_WALK = {128: 53.9, 256: 16.6, 384: 8.8, 512: 5.4, 640: 3.1}   # LSB after a Calib 1920 pulse
REAL_WALK_CHANGE = 2.2             # mean |walk(phase 2) - walk(phase 1)|, LSB
REAL_STEP_SPREAD = 2.0             # sd of the phase step between channels, LSB


# -- helpers -------------------------------------------------------------------------------------

def wrapped(d):
    return (np.asarray(d, float) + 512) % 1024 - 512


def per_channel(events: dict, chips) -> dict:
    """(chip, channel) -> TOA efficiency, TOA mean (wrap-safe), TOT efficiency, TOT median, TOT sd."""
    out = {}
    good = (events["corruption"] == 0) & (events["channeltype"] == 0)
    for chip in chips:
        for channel in INJECTED:
            m = good & (events["chip"] == chip) & (events["channel"] == channel)
            toa, tot = events["toa"][m].astype(float), events["tot"][m].astype(float)
            hits = toa[toa > 0]
            ref = np.median(hits) if hits.size else np.nan
            measured = tot[(tot > 0) & (tot < 4088)]
            out[chip, channel] = {
                "toa_eff": float(np.mean(toa > 0)),
                "toa": ref + wrapped(hits - ref).mean() if hits.size else np.nan,
                "toa_median": ref,
                "tot_eff": float(np.mean(tot > 0)), "n": int(m.sum()),
                "tot": np.median(measured) if measured.size else np.nan,
                "tot_sd": measured.std() if measured.size else np.nan,
                "adc": float(np.median(events["adc"][m])),
            }
    return out


def real_run(calib: int, phase: int, repeat: bool = False) -> dict:
    first = {1: 17, 2: 1 if repeat else 33}[phase]
    return per_channel(open_raw(shared("hexactrl-timewalk", f"test_run_{first + calib // 128}.raw")).events(),
                       REAL_CHIPS)


class Emulated:
    """One emulated board driven like the real scan."""

    def __init__(self, seed: int):
        self.board, self.regs = Board(seed), RegisterFile()
        self.regs.write(INJECTION)

    def run(self, calib: int, phase: int = 2, n: int = 400, injecting: bool = True, occurrence: int = 0):
        self.regs.write({f"roc_s{c}": {"ReferenceVoltage": {0: {"Calib": calib}, 1: {"Calib": calib}},
                                       "Top": {0: {"phase_strobe": phase}}} for c in range(3)})
        event, chip, words = self.board.run(self.regs, RunSettings(n, injecting, "physics"), occurrence)
        return per_channel(decode_run(raw_file(event, chip, words), Path("emulated"), True).events(), (0, 1, 2))


def at_wrap(row: dict) -> bool:
    """TOA code 0 reads as "no TOA": a channel whose codes straddle the wrap loses events."""
    return min(row["toa_median"], 1024 - row["toa_median"]) < 3


def walks(run) -> dict:
    """(phase, chip, channel) -> TOA(Calib) - TOA(1920) for every Calib of the scan."""
    out = {}
    for phase in (1, 2):
        large = run(1920, phase)
        for calib in CALIBS:
            for key, row in run(calib, phase).items():
                out.setdefault((phase,) + key, {})[calib] = wrapped(row["toa"] - large[key]["toa"])
    return out


def walk_summary(w: dict) -> dict:
    keys = sorted({k[1:] for k in w})
    change = np.array([w[(2,) + k][128] - w[(1,) + k][128] for k in keys])
    curve = {c: float(np.mean([w[k][c] for k in w])) for c in REAL_WALK}
    return {"walk": np.array([w[k][128] for k in w]), "change": change, "curve": curve}


def tot_width(efficiency: np.ndarray, calibs: np.ndarray) -> float:
    """10-90 % width of a rising efficiency curve (linear interpolation)."""
    rising = np.maximum.accumulate(efficiency)
    low, high = np.interp([0.1, 0.9], rising + np.arange(rising.size) * 1e-9, calibs)
    return float(high - low)


# -- no TOA without injection -------------------------------------------------------------------

def test_real_board_fires_no_toa_at_calib_0_and_always_from_128():
    for phase in (1, 2):
        zero, small = real_run(0, phase), real_run(128, phase)
        assert all(row["toa_eff"] == 0 and row["tot_eff"] == 0 for row in zero.values())
        assert all(row["toa_eff"] == 1 for row in small.values())
    # yet the injected channels sit above the rest at Calib 0: a residual pulse the discriminators ignore
    events = open_raw(shared("hexactrl-timewalk", "test_run_33.raw")).events()
    normal = (events["channeltype"] == 0) & (events["corruption"] == 0)
    excess = []
    for chip in range(3):
        m = normal & (events["chip"] == chip)
        medians = np.array([np.median(events["adc"][m & (events["channel"] == c)]) for c in range(72)])
        others = np.setdiff1d(np.arange(72), [9, 10, 11, 19, 20, 21, 39, 40, 41, 49, 50, 51])
        excess.append(medians[list(INJECTED)] - medians[others].mean())
    assert 40 < np.mean(excess) < 80        # measured: +59 ADC


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_emulator_fires_no_toa_at_calib_0_and_always_from_128(seed):
    emu = Emulated(seed)
    zero, small = emu.run(0), emu.run(128)
    assert all(row["toa_eff"] == 0 and row["tot_eff"] == 0 for row in zero.values())
    assert all(row["toa_eff"] > 0.99 for row in small.values() if not at_wrap(row))
    quiet = emu.run(0, injecting=False)
    excess = np.mean([zero[k]["adc"] - quiet[k]["adc"] for k in zero])
    assert 30 < excess < 90                 # the residual pulse is still there (real: +59 ADC)


# -- TOT turn-on ---------------------------------------------------------------------------------

def test_real_tot_turn_on_lies_between_calib_128_and_256():
    for phase in (1, 2):
        below, above = real_run(128, phase), real_run(256, phase)
        assert all(row["tot_eff"] == 0 for row in below.values())
        assert all(row["tot_eff"] == 1 for row in above.values())
        assert all(86 < row["tot"] < 110 and row["tot_sd"] < 1.2 for row in above.values())
        # widest Gaussian turn-on that sees no TOT in N events at 128 and all N at 256 (95 % CL: 3/N)
        z = lambda n: -np.sqrt(2) * _erfinv(2 * 3 / n - 1)  # noqa: E731
        n_below = min(r["n"] for r in below.values())
        n_above = min(r["n"] for r in above.values())
        sigma = 128 / (z(n_below) + z(n_above))
        assert 2.563 * sigma == pytest.approx(REAL_TOT_WIDTH_MAX, abs=4)


def _erfinv(y: float) -> float:
    lo, hi = -6.0, 6.0
    from math import erf
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if erf(mid) < y else (lo, mid)
    return (lo + hi) / 2


def test_emulated_tot_turn_on_is_spread_by_noise_over_tens_of_calib_steps():
    emu = Emulated(0)
    calibs = np.arange(120, 268, 8)
    rows = [emu.run(int(c)) for c in calibs]
    keys = sorted(rows[0])
    widths = np.array([tot_width(np.array([r[k]["tot_eff"] for r in rows]), calibs) for k in keys])
    assert (widths > 15).all() and (widths < REAL_TOT_WIDTH_MAX).all(), widths
    assert np.median(widths) > 20                                # tens of Calib steps
    inside = np.array([[0.1 < r[k]["tot_eff"] < 0.9 for r in rows] for k in keys]).sum(axis=1)
    assert (inside >= 2).all()                                   # resolved by a scan in steps of 8
    # as on the real board: none at 128, all at 256, where the TOT is ~90-110 with < 1 count spread
    # (a channel whose threshold sits 3 sigma high misses ~0.4 % there: an event in 400, by chance)
    assert all(rows[1][k]["tot_eff"] == 0 for k in keys) and all(rows[-2][k]["tot_eff"] >= 0.99 for k in keys)
    assert all(80 < rows[-2][k]["tot"] < 120 and rows[-2][k]["tot_sd"] < 1.2 for k in keys)


# -- timewalk per phase ---------------------------------------------------------------------------

def test_real_timewalk_changes_with_the_phase():
    w = walks(real_run)
    s = walk_summary(w)
    assert 40 < s["walk"].min() and s["walk"].max() < 70
    for calib, value in REAL_WALK.items():
        assert s["curve"][calib] == pytest.approx(value, abs=0.3)
    assert np.abs(s["change"]).mean() == pytest.approx(REAL_WALK_CHANGE, abs=0.3)
    assert np.abs(s["change"]).max() > 1.5
    # ... which is no noise: the repeat of phase 2 (runs 1-16) gives the same walk within 0.2 LSB
    small, large = real_run(128, 2, repeat=True), real_run(1920, 2, repeat=True)
    repeat = np.array([wrapped(small[k]["toa"] - large[k]["toa"]) - w[(2,) + k][128] for k in small])
    assert np.abs(repeat).max() < 0.2
    # the phase step reads more codes where the timewalk does: the TDC's code density
    step = np.array([wrapped(real_run(1920, 2)[k]["toa"] - real_run(1920, 1)[k]["toa"]) for k in small])
    assert step.std() == pytest.approx(REAL_STEP_SPREAD, abs=0.5)
    assert np.corrcoef(step, s["change"])[0, 1] < -0.5


def test_emulated_timewalk_changes_with_the_phase_like_the_real_one():
    changes, all_walks, curves, steps = [], [], [], []
    for seed in range(3):
        emu = Emulated(seed)
        run = lambda calib, phase: emu.run(calib, phase, n=200)  # noqa: E731
        s = walk_summary(walks(run))
        changes.append(s["change"])
        all_walks.append(s["walk"])
        curves.append(s["curve"])
        large1, large2 = run(1920, 1), run(1920, 2)
        steps.append([wrapped(large2[k]["toa"] - large1[k]["toa"]) for k in large1])
        # the same phase again gives the same walk: the change is no noise
        again = emu.run(128, 2, n=200, occurrence=1)
        small = run(128, 2)
        assert max(abs(wrapped(again[k]["toa"] - small[k]["toa"])) for k in small if not at_wrap(small[k])) < 0.3
    changes, all_walks, steps = np.concatenate(changes), np.concatenate(all_walks), np.concatenate(steps)
    assert 1.0 < np.abs(changes).mean() < 4.0           # real: 2.2
    assert np.abs(changes).max() > 2.5                  # real: up to 4.8
    assert 45 < np.median(all_walks) < 62               # real: 53.9 (43-65)
    for calib, value in REAL_WALK.items():              # the curve of the real board, to about 20 %
        assert np.mean([c[calib] for c in curves]) == pytest.approx(value, rel=0.25, abs=1.0)
    assert 62 < np.median(steps) < 66 and 1.0 < steps.std() < 3.5   # real: 62.8-68.4, sd 2.0
    assert np.corrcoef(steps, changes)[0, 1] < -0.4     # real: -0.97, the TDC's code density


def test_model_5_keeps_the_characterisation_setting_and_moves_with_the_trims_by_each_channels_step():
    """Model 5's new mismatches act only away from Inv_vref 300, Noinv_vref 100 and trims 0."""
    board, regs = Board(4), RegisterFile()
    regs.write(yaml.safe_load((EXAMPLES / "init" / "characterisation_mode.yaml").read_text()))
    base = board.state(regs, False)
    board.inv_vref_gain[:] = board.noinv_vref_gain[:] = 3.0   # no effect at Inv_vref 300, Noinv_vref 100
    assert np.array_equal(board.state(regs, False)["pedestal"], base["pedestal"])
    trimmed = RegisterFile()
    trimmed.write(yaml.safe_load((EXAMPLES / "init" / "characterisation_mode.yaml").read_text()))
    trimmed.write({f"roc_s{c}": {"ch": {ch: {"trim_toa": 20, "trim_tot": 20} for ch in range(72)}} for c in range(3)})
    moved = board.state(trimmed, False)
    step = (base["toa_threshold"] - moved["toa_threshold"])[:, :, :36] / 20
    assert np.allclose(step, 0.3 * board.toa_trim_step[:, :, :36])
    assert 0.01 < step.std() / step.mean() < 0.1          # each channel its own step, a few per cent apart
    # a TOA threshold below the pedestal fires on noise alone: not held at 2 fC any more
    low = RegisterFile()
    low.write({f"roc_s{c}": {"ReferenceVoltage": {h: {"Toa_vref": 50} for h in (0, 1)}} for c in range(3)})
    assert (board.state(low, False)["toa_threshold"] < 0).all()


def test_an_untunable_channel_lies_beyond_its_trims_and_the_rest_of_the_board_is_its_seeds():
    plain, far = Board(2), Board(2, untunable=[(1, 40)])
    where = (1, 1, 4)   # chip 1, half 1, slot 4 = channel 40
    assert far.pedestal_offset[where] - plain.pedestal_offset[where] == 150
    assert far.toa_threshold[where] - plain.toa_threshold[where] == 30
    assert far.pedestal_offset[where] - np.median(plain.pedestal_offset[1, 1]) > 63 * far.trim_slope[where]
    far.pedestal_offset[where] = plain.pedestal_offset[where]
    far.toa_threshold[where] = plain.toa_threshold[where]
    far.tot_threshold[where] = plain.tot_threshold[where]
    assert np.array_equal(far.pedestal_offset, plain.pedestal_offset)
    assert np.array_equal(far.toa_threshold, plain.toa_threshold)
