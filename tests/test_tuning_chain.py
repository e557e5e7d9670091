"""The example tuning chain (`raff build hexaboard_tuning`) against the emulator's truth.

Three boards (seeds 1-3) are tuned in one build. For each, the registers the chain chose
(its tuned_config.yaml) are written into the model of that seed's board
(`raffinerie.emulator.model.Board`), which says what the chip then does: the truth, read
here, never through the analyses. A fourth board, on a standalone emulator, has one cell
out of its trims' reach: the chain must name it and still finish.
"""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import EXAMPLES, run_raff

from raffinerie.emulator.model import Board
from raffinerie.emulator.registers import RegisterFile

SEEDS = (1, 2, 3)
TARGET = 250.0            # the library's pedestal target (vref, pedestal_trim_tuning)
MAX_NOISE_RATE = 1e-3     # toa_threshold's default
MARGIN = 10               # toa_threshold's default, DAC steps above the noise edge
UNTUNABLE = (1, 40)       # chip, channel of the fourth board
NORMAL = slice(0, 36)     # the normal channels' slots of a half


def _library(root, config="main_config.yaml"):
    shutil.copytree(EXAMPLES, root)
    return root / config


# the chain on fixed grids, and the same chain with its links searched (issue 26): every truth
# test below holds for both, and test_a_search_chooses_what_the_grid_chooses compares them
CONFIGS = {"main_config.yaml": "tuning_procedures.yaml", "search_config.yaml": "tuning_search_procedures.yaml"}


@pytest.fixture(scope="module", params=list(CONFIGS))
def chain(tmp_path_factory, request):
    main = _library(tmp_path_factory.mktemp("tuning") / "lib", request.param)
    seeds = [a for s in SEEDS for a in ("--seed", str(s))]
    r = run_raff("build", "hexaboard_tuning", "-c", main, *seeds, "-w", "2", timeout=600)
    assert r.code == 0, r.err
    return main


def _tuned(main, seed: int) -> dict:
    path = main.parent / "raff-out" / "hexaboard_tuning" / f"emulator-seed-{seed}" / "tuned_config.yaml"
    return yaml.safe_load(path.read_text())


def _registers(*overlays) -> RegisterFile:
    regs = RegisterFile()
    for path in ("defaults/V3LDHexaboard-poweron-default.yaml", "init/tuning_start.yaml"):
        doc = yaml.safe_load((EXAMPLES / path).read_text())
        regs.write({k: v for k, v in doc.items() if k.startswith("roc_s")})
    for overlay in overlays:
        regs.write(overlay)
    return regs


def _only(tuned: dict, *params) -> dict:
    """The part of a tuned config that sets `params` (what one link of the chain wrote)."""
    out: dict = {}
    for chip, blocks in tuned.items():
        for block, instances in blocks.items():
            for index, values in instances.items():
                kept = {k: v for k, v in values.items() if k in params}
                if kept:
                    out.setdefault(chip, {}).setdefault(block, {})[index] = kept
    return out


def _phi(x):
    return 0.5 * np.vectorize(math.erfc)(-np.asarray(x, float) / math.sqrt(2))


@pytest.mark.parametrize("seed", SEEDS)
def test_pedestals_of_each_half_sit_at_the_target_and_line_up(chain, seed):
    tuned, board = _tuned(chain, seed), Board(seed)
    before = board.state(_registers(), False)["pedestal"][:, :, NORMAL]
    after = board.state(_registers(tuned), False)["pedestal"][:, :, NORMAL]
    assert np.all(np.abs(np.median(after, axis=2) - TARGET) <= 10)
    assert np.all(after.std(axis=2) <= 3.0) and np.all(before.std(axis=2) > 12)


@pytest.mark.parametrize("seed", SEEDS)
def test_each_trim_inv_is_within_one_step_of_the_truths_best(chain, seed):
    tuned, board = _tuned(chain, seed), Board(seed)
    vref = _only(tuned, "Inv_vref", "Noinv_vref")
    trims = np.array([[tuned[f"roc_s{c}"]["ch"][ch]["trim_inv"] for ch in range(72)] for c in range(3)])
    untrimmed = _registers(vref)
    untrimmed.write({f"roc_s{c}": {"ch": {ch: {"trim_inv": 0} for ch in range(72)}} for c in range(3)})
    at_zero = board.state(untrimmed, False)["pedestal"][:, :, NORMAL].reshape(3, 72)
    slope = board.trim_slope[:, :, NORMAL].reshape(3, 72)
    steps = np.arange(64)
    best = np.abs(at_zero[..., None] - slope[..., None] * steps - TARGET).argmin(axis=2)
    assert np.abs(trims - best).max() <= 1


@pytest.mark.parametrize("seed", SEEDS)
def test_toa_vref_sits_a_margin_above_the_noise_edge_and_noise_stays_below_the_rate(chain, seed):
    tuned, board = _tuned(chain, seed), Board(seed)
    scanned = _registers(_only(tuned, "Inv_vref", "Noinv_vref", "trim_inv"))   # as the Toa_vref scan was configured
    values = np.arange(150, 500)
    rates = []
    for v in values:
        scanned.write({f"roc_s{c}": {"ReferenceVoltage": {h: {"Toa_vref": int(v)} for h in (0, 1)}} for c in range(3)})
        rates.append(_phi(-board.state(scanned, False)["toa_threshold"][:, :, NORMAL]).max(axis=2))
    rates = np.array(rates)                                     # [value, chip, half]
    for c in range(3):
        for h in range(2):
            chosen = tuned[f"roc_s{c}"]["ReferenceVoltage"][h]["Toa_vref"]
            quiet = np.logical_and.accumulate((rates[::-1, c, h] < MAX_NOISE_RATE))[::-1]
            edge = int(values[np.argmax(quiet)])
            assert edge + MARGIN - 5 <= chosen <= edge + MARGIN + 10, (c, h, edge, chosen)
            assert rates[values == chosen, c, h][0] < MAX_NOISE_RATE
    final = board.state(_registers(tuned), False)["toa_threshold"][:, :, NORMAL]
    assert _phi(-final).max() < MAX_NOISE_RATE      # the trims lowered some thresholds: still quiet


@pytest.mark.parametrize("seed", SEEDS)
def test_the_50_percent_toa_points_of_a_half_agree_within_one_trim_step(chain, seed):
    tuned, board = _tuned(chain, seed), Board(seed)
    threshold = board.state(_registers(tuned), True)["toa_threshold"][:, :, NORMAL]
    step = 0.3 * board.toa_trim_step[:, :, NORMAL]          # fC per trim_toa step, per channel
    spread = (threshold - np.median(threshold, axis=2, keepdims=True)) / step
    # a channel toa_trim flagged (its crossing hidden by TOA codes on the TDC's wrap) has no trim
    trimmed = np.array([[[("trim_toa" in tuned[f"roc_s{c}"]["ch"][h * 36 + ch]) for ch in range(36)]
                         for h in range(2)] for c in range(3)])
    assert (~trimmed).sum() <= 2, np.argwhere(~trimmed)
    assert np.abs(spread[trimmed]).max() <= 1.0, np.abs(spread[trimmed]).max()


@pytest.mark.parametrize("seed", SEEDS)
def test_the_chosen_phase_is_the_pulse_maximum(chain, seed):
    tuned = _tuned(chain, seed)
    # the model's pulse peaks at phase_strobe 2 on every chip (TAU_NS + (phase - 2) * PHASE_NS)
    assert all(abs(tuned[f"roc_s{c}"]["Top"][0]["phase_strobe"] - 2) <= 1 for c in range(3))


@pytest.mark.parametrize("seed", SEEDS)
def test_the_one_page_summary_gives_each_halfs_spread_before_and_after_as_the_truth_has_them(chain, seed):
    folder = chain.parent / "raff-out" / "hexaboard_tuning" / f"emulator-seed-{seed}"
    assert (folder / "tuning_summary.png").read_bytes()[:4] == b"\x89PNG"
    notes = (folder / "notes.txt").read_text()
    board, tuned = Board(seed), _tuned(chain, seed)
    live = board.noise[:, :, NORMAL] > 0
    truth = [board.state(_registers(*o), False)["pedestal"][:, :, NORMAL] for o in ((), (tuned,))]
    for chip in range(3):
        for half in range(2):
            found = re.search(rf"^roc_s{chip} half {half}: pedestal spread ([0-9.]+) → ([0-9.]+) ADC, "
                              r"gain ([0-9.]+) ADC/fC; Inv_vref", notes, re.M)
            assert found, notes
            before, after, gain = map(float, found.groups())
            expected = [t[chip, half][live[chip, half]].std(ddof=1) for t in truth]
            assert abs(before - expected[0]) < 0.5 and abs(after - expected[1]) < 0.5, (before, after, expected)
            assert abs(gain - 6.4) < 0.64   # 1024 ADC over the usual 160 fC full scale (hgcroc-physics.md)


def test_a_rebuild_does_nothing_and_a_new_toa_trim_target_replans_only_what_stands_on_it(chain, raff):
    seeds = [a for s in SEEDS for a in ("--seed", str(s))]
    r = raff("build", "hexaboard_tuning", "-c", chain, *seeds)
    assert r.code == 0 and "is up to date" in r.out, r.out
    lib = chain.parent / CONFIGS[chain.name]
    text = lib.read_text()
    lib.write_text(text.replace("  module: builtin.toa_trim\n", "  module: builtin.toa_trim\n"
                                "  parameters: {target_trim: 31}\n"))
    try:
        plan = json.loads(raff("plan", "hexaboard_tuning", "-c", chain, "--seed", "1", "--json").out)
    finally:
        lib.write_text(text)
    status = {n["id"]: n["status"] for n in plan["nodes"]}
    redone = {i for i, s in status.items() if s != "cached"}
    assert redone == {"analysis:toa_trim", "points:tuning_tot_vref_scan", "dataset:tuning_tot_vref_scan",
                      "analysis:tot_threshold", "points:tuning_tot_trim_scan", "dataset:tuning_tot_trim_scan",
                      "analysis:tot_trim", "points:tuning_phase_scan", "dataset:tuning_phase_scan",
                      "analysis:sampling_phase", "points:tuned_board_run", "dataset:tuned_board_run",
                      "analysis:hexaboard_tuning", "points:tuned_injection_scan", "dataset:tuned_injection_scan",
                      "analysis:tuned_injection"}, redone


def test_an_untunable_cell_is_named_and_the_chain_still_finishes(tmp_path):
    from raffinerie.config.daqconfig import Generation
    from raffinerie.emulator.process import EmulatorProcess

    main = _library(tmp_path / "lib")
    chip, channel = UNTUNABLE
    with EmulatorProcess(seed=4, generation=Generation.Y2021,
                         extra_args=["--untunable-channel", f"{chip}:{channel}"]) as emu:
        p = emu.ports
        net = tmp_path / "board.yaml"
        sockets = {k: {"hostname": "127.0.0.1", "port": p[k]} for k in ("server", "target", "data")}
        net.write_text(yaml.safe_dump(sockets | {"board": "untunable", "timeout": 10}))
        r = run_raff("build", "hexaboard_tuning", "-c", main, "--network", net, "-w", "2", timeout=600)
    assert r.code == 0, r.err
    out = main.parent / "raff-out"
    trims = pd.read_csv(out / "pedestal_trim_tuning" / "untunable" / "summary.csv")
    flagged = trims[trims.status == "unreachable"]
    assert ((flagged.chip == chip) & (flagged.channel == channel)).any(), flagged
    assert f"roc_s{chip} ch {channel} (" in (out / "pedestal_trim_tuning" / "untunable" / "notes.txt").read_text()
    toa = pd.read_csv(out / "toa_trim" / "untunable" / "summary.csv")
    cell = toa[(toa.chip == chip) & (toa.channel == channel)].iloc[0]
    assert cell.status != "trimmed" and np.isnan(cell.trim_toa)
    assert f"roc_s{chip}" in (out / "toa_trim" / "untunable" / "notes.txt").read_text()
    tuned = yaml.safe_load((out / "hexaboard_tuning" / "untunable" / "tuned_config.yaml").read_text())
    assert "trim_toa" not in tuned[f"roc_s{chip}"]["ch"][channel]       # left at its base value
    notes = (out / "hexaboard_tuning" / "untunable" / "notes.txt").read_text()
    assert f"roc_s{chip} trim_toa: toa_trim left" in notes and str(channel) in notes, notes


@pytest.mark.parametrize("seed", SEEDS)
def test_a_search_chooses_what_the_grid_chooses_within_one_step_or_closer_to_the_truth(chain, seed):
    """Each channel's trims of the searched chain against the grid chain's (built in a sibling folder
    by the same module run): within one step, or, where they differ more (most often a whole half,
    because an upstream link chose its half's reference a step apart, which moves every crossing of
    the half), the truth puts the search's choice at least as near its chain's aim."""
    if chain.name != "search_config.yaml":
        pytest.skip("compares the searched chain with the grid's")
    grids = sorted(chain.parent.parent.parent.glob("tuning*/lib/main_config.yaml"))
    if not grids or not (grids[0].parent / "raff-out" / "hexaboard_tuning").is_dir():
        pytest.skip("the grid chain was not built in this run")
    searched, grid, board = _tuned(chain, seed), _tuned(grids[0], seed), Board(seed)
    regs = _registers(searched)
    for register in ("trim_inv", "trim_toa", "trim_tot"):
        for c in range(3):
            for ch in range(72):
                a = searched[f"roc_s{c}"]["ch"][ch].get(register)
                b = grid[f"roc_s{c}"]["ch"][ch].get(register)
                if a is None or b is None or abs(a - b) <= 1:
                    continue
                truth = {x: _truth_error(board, regs, register, c, ch, x) for x in (b, a)}   # a last: kept
                assert truth[a] <= truth[b] + 0.05, (register, c, ch, a, b, truth)


def _truth_error(board, regs, register, chip, channel, value) -> float:
    """How far the truth puts channel `channel` from its chain's aim with `register` at `value`, the
    rest as `regs` (left with that value): the pedestal from 250 ADC; the TOA or TOT threshold
    from its half's median."""
    regs.write({f"roc_s{chip}": {"ch": {channel: {register: int(value)}}}})
    half, slot = divmod(channel, 36)
    if register == "trim_inv":
        return abs(board.state(regs, False)["pedestal"][chip, half, slot] - TARGET)
    key = "toa_threshold" if register == "trim_toa" else "tot_threshold"
    threshold = board.state(regs, True)[key][chip, half, NORMAL]
    return abs(threshold[slot] - np.median(threshold))
