"""The emulator: register model, fidelity to the real board, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import EXAMPLES, shared

from raffinerie.daq.runs import decode_run
from raffinerie.daq.summary import SUMMARY_COLUMNS
from raffinerie.daq.rawformat import CHANNEL_WORDS, read_frames
from raffinerie.emulator.model import Board, RunSettings, injecting_2021, messages, raw_file, settings_identity
from raffinerie.emulator.registers import RegisterError, RegisterFile
from raffinerie.emulator.target import Target

INJECTION = yaml.safe_load((EXAMPLES / "init" / "injection.yaml").read_text())
PULSES = RunSettings(400, True, "pulses")
QUIET = RunSettings(400, False, "quiet")
INJECTED = [10, 20, 40, 50]


def setting(calib: int, phase: int = 2) -> dict:
    return {f"roc_s{c}": {"ReferenceVoltage": {0: {"Calib": calib}, 1: {"Calib": calib}},
                          "Top": {0: {"phase_strobe": phase}}} for c in range(3)}


def summary(regs: RegisterFile, board: Board, settings=PULSES, occurrence: int = 0) -> dict:
    event, chip, words = board.run(regs, settings, occurrence)
    return decode_run(raw_file(event, chip, words), Path("emulated"), True).summary()


def rows(table: dict, channels, chips=(0, 1, 2)) -> np.ndarray:
    return np.isin(table["channel"], channels) & (table["channeltype"] == 0) & np.isin(table["chip"], chips)


@pytest.fixture(scope="module")
def board():
    return Board(seed=0)


@pytest.fixture
def regs():
    r = RegisterFile()
    r.write(INJECTION)
    return r


def test_register_writes_are_checked_and_all_or_nothing():
    r = RegisterFile()
    with pytest.raises(RegisterError, match=r"roc_s0.ReferenceVoltage.0.Calib: .*12-bit"):
        r.write({"roc_s0": {"ReferenceVoltage": {0: {"Inv_vref": 10, "Calib": 5000}}}})
    assert r.get("ReferenceVoltage", "Inv_vref")[0, 0] == 572  # nothing was written
    with pytest.raises(RegisterError, match="roc_s0.Top.0.phase_strob: unknown parameter"):
        r.write({"roc_s0": {"Top": {0: {"phase_strob": 1}}}})
    with pytest.raises(RegisterError, match="roc_s7: no such chip"):
        r.write({"roc_s7": {}})
    with pytest.raises(RegisterError, match="roc_s0.ch.72: no such ch instance"):
        r.write({"roc_s0": {"ch": {72: {"HighRange": 1}}}})
    r.write({"roc_s1": {"HalfWise": {1: {"trim_inv": 7}}}})
    assert (r.get("ch", "trim_inv")[1, 36:] == 7).all() and (r.get("ch", "trim_inv")[1, :36] == 0).all()
    assert r.read({"roc_s1": {"ch": {40: None}}}) == {"roc_s1": {"ch": {40: r.read()["roc_s1"]["ch"][40]}}}


def test_pedestals_and_noise_look_like_the_real_board(board, regs):
    regs.write(setting(0))
    t = summary(regs, board, QUIET)
    normal = rows(t, [c for c in range(72) if c not in INJECTED])
    pedestals, noise = t["adc_mean"][normal], t["adc_stdd"][normal]
    assert 265 < pedestals.mean() < 310          # real: 287.5
    assert 12 < pedestals.std() < 32             # real: 22 across channels
    assert 0.9 < np.median(noise) < 1.15         # real: median 1.02, 5-95 % 0.85-1.22
    cm = t["channeltype"] == 100
    assert 1.4 < np.median(t["adc_stdd"][cm]) < 2.4  # real: about 1.9


def test_tot_onset_and_slope_per_calib_step(board, regs):
    calibs = [128, 256, 512, 1024, 1536, 1920]
    tot = []
    for calib in calibs:
        regs.write(setting(calib))
        t = summary(regs, board)
        injected = rows(t, INJECTED)
        tot.append(t["tot_median"][injected])
        if calib == 128:
            assert (t["tot_efficiency"][injected] == 0).all()     # no TOT at 128
        if calib == 256:
            assert (t["tot_efficiency"][injected] == 1).all()     # TOT in every event from 256
    tot = np.array(tot)
    slope = (tot[-1] - tot[2]) / (1920 - 512)
    assert 0.7 < np.median(slope) < 0.9                          # real: 0.76-0.82 per step


def test_toa_moves_64_lsb_per_phase_step_with_timewalk(board, regs):
    means = []
    for phase in range(1, 6):
        regs.write(setting(1024, phase))
        t = summary(regs, board)
        injected = rows(t, INJECTED)
        # a TOA code of 0 reads as "no TOA": a channel whose codes straddle the wrap loses those events
        at_wrap = np.minimum(t["toa_median"], 1024 - t["toa_median"])[injected] < 3
        assert (t["toa_efficiency"][injected] > 0.99)[~at_wrap].all() and at_wrap.sum() <= 2
        means.append(t["toa_mean"][injected])
    steps = np.diff(np.array(means), axis=0) % 1024
    assert 62 < np.median(steps) < 66                           # real: +64.3 LSB per step
    regs.write(setting(128))
    small = summary(regs, board)
    regs.write(setting(1920))
    large = summary(regs, board)
    injected = rows(small, INJECTED)
    walk = (small["toa_mean"][injected] - large["toa_mean"][injected]) % 1024
    assert 35 < np.median(walk) < 75                            # real: +51 (37-70)
    assert (rows(small, [30, 31]) & (small["toa_efficiency"] > 0)).sum() == 0  # far channels never fire


def test_trim_inv_moves_the_pedestal_of_one_channel(board):
    regs = RegisterFile()
    regs.write(yaml.safe_load((EXAMPLES / "init" / "characterisation_mode.yaml").read_text()))
    before = summary(regs, board, RunSettings(200, False))
    regs.write({"roc_s0": {"ch": {5: {"trim_inv": 20}}}})
    after = summary(regs, board, RunSettings(200, False))
    moved = after["adc_mean"] - before["adc_mean"]
    ch5 = rows(before, [5], [0])
    assert -40 < moved[ch5][0] < -20
    assert np.abs(moved[rows(before, [6, 7, 30], [0])]).max() < 1


def test_same_seed_and_configuration_give_the_same_data(regs):
    regs.write(setting(512))
    a = Board(3).run(regs, PULSES, 0)[2]
    b = Board(3).run(regs, PULSES, 0)[2]
    c = Board(4).run(regs, PULSES, 0)[2]
    d = Board(3).run(regs, PULSES, 1)[2]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_emulated_summary_has_the_shape_of_a_real_one(board, regs):
    t = summary(regs, board)
    assert list(t) == SUMMARY_COLUMNS and len(t["chip"]) == 234
    from raffinerie.daq.runs import open_raw

    real = open_raw(shared("hexactrl-timewalk", "test_run_1.raw")).summary()
    assert list(real) == list(t)
    for column in ("chip", "half", "channel", "channeltype"):
        assert np.array_equal(real[column], t[column])


def test_normal_mode_is_encoded_and_decoded(board):
    regs = RegisterFile()
    regs.write(INJECTION)
    regs.write({f"roc_s{c}": {"DigitalHalf": {0: {"CalibrationSC": 0}, 1: {"CalibrationSC": 0}}}
                for c in range(3)})
    regs.write(setting(1024))
    event, chip, words = board.run(regs, PULSES, 0)
    run = decode_run(raw_file(event, chip, words), Path("emu"), False)
    t = run.summary()
    injected = rows(t, INJECTED)
    assert (t["tot_efficiency"][injected] == 1).all()
    assert 250 < np.median(t["adc_mean"][rows(t, [30, 31])]) < 330


def test_every_message_is_an_independent_archive(board, regs):
    event, chip, words = board.run(regs, RunSettings(70, True), 0)
    parts = [read_frames(m) for m in messages(event, chip, words, per_message=96)]
    assert [len(p) for p in parts] == [96, 96, 18]
    assert np.array_equal(np.concatenate([p.event for p in parts]), event)
    assert np.array_equal(np.concatenate([p.words for p in parts]), words)


def test_run_settings_of_the_2021_generation():
    gens = [{"name": "A", "enable": 1, "flavor": "CALPULINT"}, {"name": "B", "enable": 0, "flavor": "L1A"}]
    assert injecting_2021({"l1a_generator_settings": gens})
    assert not injecting_2021({"l1a_generator_settings": gens[1:]}) and not injecting_2021({})
    # ports are places, not conditions: the same data wherever the stream goes
    assert settings_identity({"NEvents": 5, "zmqPushPull_port": 1}) == settings_identity({"NEvents": 5})


def test_invalid_master_tdc_scrambles_toa_only(regs):
    regs.write(setting(1024))
    good = Board(0).run(regs, PULSES, 0, tdc_ok=np.array([True, True, True]))[2]
    bad = Board(0).run(regs, PULSES, 0, tdc_ok=np.array([True, False, True]))[2]
    chip1 = np.arange(len(good)) % 3 == 1
    assert np.array_equal(good[~chip1], bad[~chip1])
    good, bad = good[chip1][..., CHANNEL_WORDS], bad[chip1][..., CHANNEL_WORDS]
    assert np.array_equal(good >> 10, bad >> 10)                  # flags, ADC, TOT
    assert not np.array_equal(good & 0x3FF, bad & 0x3FF)          # TOA


def test_master_tdc_state_of_the_target():
    t = Target()
    assert not t.tdc_ok.any()                                    # power-on
    counters = lambda v: {"roc_s0": {"MasterTdc": {0: {"START_COUNTER": v}, 1: {"START_COUNTER": v}}}}  # noqa: E731
    assert t.write(counters(1)).tdc_reset == []                  # already 1: no rising edge
    t.write(counters(0))
    assert t.write(counters(1)).tdc_reset == [0] and t.tdc_ok.tolist() == [True, False, False]
    effect = t.write({"roc_s0": {"Top": {0: {"phase_ck": 3}}}})
    assert effect.phase_changed == [0] and not t.tdc_ok.any()
    assert t.reset_tdc().tdc_reset == [0, 1, 2] and t.tdc_ok.all()
    t.power_on()
    assert not t.tdc_ok.any()
