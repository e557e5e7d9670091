"""Board geometries, QC verdicts and hexmaps (issue 22, items 1, 2, 3 and 5).

The verdicts on the real module runs are checked against the public rule
computed here from the public channel map, independently of raffinerie's
geometry files.
"""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest

from conftest import ROOT, assert_clean_error, shared
from raffinerie import geometry, qc
from raffinerie.geometry import Role

MAPS = ("reference", "hexaboard-maps")
RUNS = {"E02_pedestal_run0.root": "ld", "test_pedestal_run0.root": "ld", "hd_pedestal_run0.root": "hd"}


def _tool():
    spec = importlib.util.spec_from_file_location("geo_tool", ROOT / "tools" / "geometry_from_public_maps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["LD-full", "HD-full"])
def test_shipped_geometries_are_what_the_public_maps_give(name):
    folder = shared(*MAPS)
    assert (ROOT / "raffinerie" / "geometry" / f"{name}.csv").read_text() == _tool().text(folder, name)


@pytest.mark.parametrize("name, chips, cells, calib, nc",
                         [("LD-full", 3, 192, 6, 24), ("HD-full", 6, 432, 12, 0)])
def test_geometry_roles_and_places(name, chips, cells, calib, nc):
    g = geometry.load(name)
    assert g.n_chips == chips and len(g.pad) == chips * 78
    counts = {r: int(g.mask(r).sum()) for r in Role}
    assert counts == {Role.CELL: cells, Role.CALIB: calib, Role.CM0: 2 * chips, Role.CM1: 2 * chips,
                      Role.NC: nc}
    assert len(set(g.pad)) == len(g.pad)                       # one pad per channel
    assert (g.pad[g.mask(Role.CELL) | g.mask(Role.CALIB)] > 0).all()
    assert (g.pad[g.mask(Role.NC) | g.mask(Role.CM0) | g.mask(Role.CM1)] < 0).all()
    # every calibration cell sits inside a normal cell; cells never overlap
    cells_xy = g.xy(g.mask(Role.CELL))
    for x, y in g.xy(g.mask(Role.CALIB)):
        assert np.hypot(*(cells_xy - (x, y)).T).min() < 0.05
    assert g.pitch > 0.5 if name == "LD-full" else g.pitch > 0.4


def test_index_of_finds_each_channel_and_nothing_else():
    g = geometry.load("LD-full")
    rows = g.index_of(g.chip, g.channeltype, g.channel)
    assert (rows == np.arange(len(g.pad))).all()
    assert list(g.index_of(np.array([3, 0, 0]), np.array([0, 1, 100]), np.array([0, 2, 4]))) == [-1, -1, -1]


@pytest.mark.parametrize("name", ["LD-full", "HD-full"])
def test_chip_boundaries_lie_on_cell_edges_between_chips(name):
    g = geometry.load(name)
    segments = g.chip_boundaries()
    assert len(segments) > 10
    radius = g.pitch / np.sqrt(3)
    cells, chip = g.xy(g.mask(Role.CELL)), g.chip[g.mask(Role.CELL)]
    for end in segments.reshape(-1, 2)[::7]:            # an edge's ends are corners of its two cells
        d = np.hypot(*(cells - end).T)
        near = chip[d < radius * 1.25]
        assert len(set(near)) >= 2, (end, near)
    assert np.allclose(np.hypot(*(segments[:, 1] - segments[:, 0]).T), radius, rtol=0.3)


def test_unknown_geometry_and_chip_count_are_errors():
    with pytest.raises(Exception, match="unknown board geometry 'XX'"):
        geometry.load("XX")
    with pytest.raises(Exception, match="no board geometry has 4 chips"):
        geometry.for_chips(4)


# --- the public rule, computed from the public files -----------------------------------

def _public_rule(root_file, mapping_csv, kind="module"):
    import uproot

    tree = uproot.open(root_file)["runsummary/summary"].arrays(library="np")
    pads = {}
    with open(mapping_csv, newline="") as f:
        for r in csv.DictReader(f):
            pads[(int(r["ASIC"]), int(r["Channeltype"]), int(r["Channel"]))] = int(r["PAD"])
    pad = np.array([pads[k] for k in zip(tree["chip"].astype(int), tree["channeltype"].astype(int),
                                         tree["channel"].astype(int))])
    noise, kind_ = tree["adc_stdd"].astype(float), tree["channeltype"]
    normal, calib = (kind_ == 0) & (pad > 0), kind_ == 1
    median = np.median(noise[normal][np.isfinite(noise[normal])])
    high = (noise - median > 2) if kind == "module" else (noise > 2)
    dead = sorted(pad[(noise == 0) & (pad > 0)].tolist())
    noisy = sorted(pad[high & (pad > 0) & ~calib].tolist())
    return dead, noisy


@pytest.mark.parametrize("run", sorted(RUNS))
def test_qc_of_real_module_runs_follows_the_public_rule(raff, run, tmp_path):
    path = shared(*MAPS, "real-pedestal-runs", run)
    dead, noisy = _public_rule(path, shared(*MAPS, f"{RUNS[run]}_pad_to_channel_mapping.csv"))
    result = raff("qc", path, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert (doc["dead_pads"], doc["noisy_pads"]) == (dead, noisy)
    assert doc["geometry"] == ("HD-full" if RUNS[run] == "hd" else "LD-full")
    assert doc["verdict"] == "pass" and doc["reasons"] == []
    assert set(doc["corrupt_fraction"]) == {f"roc_s{c}" for c in range(6 if RUNS[run] == "hd" else 3)}
    assert noisy, "each real run has a noisy cell: the rule is exercised"


def test_bare_hexaboard_rule_and_grade_c_fail(raff):
    path = shared(*MAPS, "real-pedestal-runs", "hd_pedestal_run0.root")
    dead, noisy = _public_rule(path, shared(*MAPS, "hd_pad_to_channel_mapping.csv"), kind="hexaboard")
    result = raff("qc", path, "--json", "--kind", "hexaboard")
    assert result.code == 3
    doc = json.loads(result.out)
    assert doc["noisy_pads"] == noisy and len(noisy) > 100
    assert doc["verdict"] == "fail" and doc["grade"] == "C" and "readout grade C" in doc["reasons"][0]
    raised = json.loads(raff("qc", path, "--json", "--kind", "hexaboard", "--limit", "noisy_above=4").out)
    assert raised["noisy_pads"] == _public_rule_above(path, 4)


def _public_rule_above(path, limit):
    g = geometry.load("HD-full")
    from raffinerie.daq import rootio

    t = rootio.read_root_summary(path)
    v = qc.on_geometry(t, g, "adc_stdd")
    return sorted(g.pad[(g.pad > 0) & ~g.mask(Role.CALIB) & (v > limit)].tolist())


def test_undecided_cells_are_listed_not_judged(raff):
    """hexactrl writes NaN noise for some live channels: neither dead nor noisy, listed."""
    path = shared(*MAPS, "real-pedestal-runs", "test_pedestal_run0.root")
    doc = json.loads(raff("qc", path, "--json").out)
    assert len(doc["no_noise_pads"]) == 22
    assert not set(doc["no_noise_pads"]) & set(doc["dead_pads"] + doc["noisy_pads"])


def _synthetic(g, noise=2.5):
    n = len(g.pad)
    return {"chip": g.chip, "channeltype": g.channeltype, "channel": g.channel,
            "adc_mean": np.full(n, 250.0), "adc_stdd": np.full(n, noise)}


def test_dead_noisy_untunable_flagged_exactly():
    g = geometry.load("LD-full")
    table = _synthetic(g)
    cell_rows = np.flatnonzero(g.mask(Role.CELL))
    dead, noisy, cm = cell_rows[[3, 50]], cell_rows[[7, 120, 150]], np.flatnonzero(g.mask(Role.CM0))[0]
    table["adc_stdd"][dead] = 0.0
    table["adc_stdd"][noisy] = 4.6                       # median 2.5 + 2.1
    table["adc_stdd"][cm] = 0.0                          # a CM word is not a cell: never judged
    table["adc_stdd"][np.flatnonzero(g.mask(Role.CALIB))[0]] = 9.0   # calibration cells: never noisy
    untunable = np.zeros(len(g.pad), bool)
    untunable[cell_rows[9]] = True
    v = qc.judge(table, g, untunable=untunable)
    assert v.pads["dead"] == sorted(g.pad[dead].tolist())
    assert v.pads["noisy"] == sorted(g.pad[noisy].tolist())
    assert v.pads["untunable"] == [int(g.pad[cell_rows[9]])]
    assert v.grade == "B" and v.passed                    # 6 of 198 bad: 3.0 %
    assert (v.flags[dead] & qc.CellFlag.DEAD).all() and not v.flags[cm]


def test_missing_chip_and_corrupt_halves_fail_the_board():
    g = geometry.load("LD-full")
    table = {k: v[g.chip < 2] for k, v in _synthetic(g).items()}
    v = qc.judge(table, g, corrupt_fraction={0: 0.0, 1: 0.01, 2: None})
    assert not v.passed
    assert any("roc_s1: 1.00 % of its halves corrupt" in r for r in v.reasons)
    assert any("cells have no data" in r for r in v.reasons)
    assert len(v.pads["no_data"]) == int(((g.chip == 2) & (g.pad > 0)).sum())


def test_qc_of_a_raw_run_counts_corrupt_halves_and_leaves_injected_channels_undecided(raff, tmp_path):
    path = shared("hexactrl-timewalk", "test_run_71.raw")
    result = raff("qc", path, "--json", "-o", tmp_path / "maps")
    assert result.code == 3, result.err
    doc = json.loads(result.out)
    assert doc["corrupt_fraction"]["roc_s1"] == pytest.approx(24 / (2 * 301), abs=1e-3) or \
        doc["corrupt_fraction"]["roc_s1"] > 0.01
    assert doc["corrupt_fraction"]["roc_s0"] == 0.0
    assert any(r.startswith("roc_s1:") for r in doc["reasons"])
    g = geometry.load("LD-full")
    injected = sorted(int(g.pad[(g.channeltype == 0) & (g.channel == ch) & (g.chip == chip)][0])
                      for chip, ch in [(0, 10), (0, 50), (1, 10), (1, 20), (1, 40), (1, 50), (2, 20), (2, 50)]
                      if g.pad[(g.channeltype == 0) & (g.channel == ch) & (g.chip == chip)][0] > 0)
    assert set(injected) <= set(doc["injected_pads"])
    assert doc["dead_pads"] == []                        # the saturated injected channels are not "dead"
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        "test_run_71_adc_mean_hexmap.png", "test_run_71_adc_stdd_hexmap.png"]


def test_qc_errors_are_one_line(raff, tmp_path):
    hd = shared(*MAPS, "real-pedestal-runs", "hd_pedestal_run0.root")
    assert_clean_error(raff("qc", hd, "--geometry", "LD-full"), "the run has 6 chips, the LD-full geometry 3")
    assert_clean_error(raff("qc", hd, "--geometry", "XX"), "unknown board geometry 'XX'")
    assert_clean_error(raff("qc", hd, "--limit", "foo=1"), "no limit 'foo'")
    assert_clean_error(raff("qc", hd, "--limit", "noisy_above=x"), "'x' is not a number of 0 or more")
    (tmp_path / "notes.txt").write_text("x")
    assert_clean_error(raff("qc", tmp_path / "notes.txt"), "notes.txt: not a run file")
    assert_clean_error(raff("qc", tmp_path / "none.root"), "none.root: ROOT file not found")
    (tmp_path / "bad.root").write_bytes(b"root" * 100)
    assert_clean_error(raff("qc", tmp_path / "bad.root"), "bad.root: not a readable ROOT file")
    (tmp_path / "file").write_text("")
    assert_clean_error(raff("qc", hd, "-o", tmp_path / "file" / "sub"), "cannot make the output folder")


# --- hexmaps ---------------------------------------------------------------------------

def _collections(fig):
    return {c.get_gid(): c for c in fig.axes[0].collections}


@pytest.mark.parametrize("run, name", [("E02_pedestal_run0.root", "LD-full"),
                                       ("hd_pedestal_run0.root", "HD-full")])
def test_hexmap_of_a_real_run(run, name, tmp_path):
    from raffinerie.analysis.builtin.common import save
    from raffinerie.analysis.hexmap import colour_range, hexmap
    from raffinerie.daq import rootio

    table = rootio.read_root_summary(shared(*MAPS, "real-pedestal-runs", run))
    g = geometry.load(name)
    verdict = qc.judge(table, g)
    fig = hexmap(table, g, quantity="adc_stdd", unit="ADC", flags=verdict.flags)
    parts = _collections(fig)
    values = qc.on_geometry(table, g, "adc_stdd")
    cells = g.mask(Role.CELL)
    known, unknown = cells & np.isfinite(values), cells & ~np.isfinite(values)
    # one polygon per connected cell, at its place, coloured by its value
    polygons = parts["cell"].get_paths()
    assert len(polygons) == known.sum()
    centres = np.array([p.vertices[:-1].mean(axis=0) if len(p.vertices) > 6 else p.vertices.mean(axis=0)
                        for p in polygons])
    assert np.allclose(centres, g.xy(known), atol=0.02)
    assert np.allclose(parts["cell"].get_array(), values[known])
    # NaN cells are their own grey collection, never a colour of the scale
    assert len(parts.get("cell-no-value", _Empty()).get_paths()) == unknown.sum()
    # the colour bar's range is the cells' data range
    sensor = (cells | g.mask(Role.CALIB)) & np.isfinite(values)
    norm = parts["cell"].norm
    assert (norm.vmin, norm.vmax) == pytest.approx((values[sensor].min(), values[sensor].max()))
    assert colour_range(values, g) == pytest.approx((norm.vmin, norm.vmax))
    assert len(parts["outline-noisy"].get_paths()) == len(verdict.pads["noisy"])
    assert len(parts["calib"].get_paths()) == int(g.mask(Role.CALIB).sum())
    assert "chip-boundaries" in parts
    save(lambda: fig, str(tmp_path / "map.png"))
    assert (tmp_path / "map.png").stat().st_size > 20_000


class _Empty:
    def get_paths(self):
        return []


def test_hexmap_takes_an_array_of_the_geometry_and_refuses_a_wrong_length():
    from raffinerie.analysis.hexmap import hexmap

    g = geometry.load("LD-full")
    values = np.arange(len(g.pad), dtype=float)
    values[g.mask(Role.CELL)] = np.nan
    parts = _collections(hexmap(values, g, quantity="nothing"))
    assert "cell" in parts and len(parts["cell"].get_paths()) == 0
    assert len(parts["cell-no-value"].get_paths()) == int(g.mask(Role.CELL).sum())
    with pytest.raises(ValueError, match="10 values for the 234 channels of LD-full"):
        hexmap(np.zeros(10), g, quantity="x")


# --- the built-in `qc` analysis, on the embedded emulator --------------------------------

def test_qc_analysis_of_an_emulated_board_matches_its_truth_and_shows_first_in_the_report(raff, tmp_path):
    import shutil

    import pandas as pd

    from conftest import EXAMPLES
    from raffinerie.emulator.model import Board

    lib = tmp_path / "lib"
    shutil.copytree(EXAMPLES, lib, ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
    built = raff("build", "qc", "-c", lib / "main_config.yaml", "--report")
    assert built.code == 0, built.err
    out = lib / "raff-out" / "qc"
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["dead_pads"] == verdict["noisy_pads"] == []
    truth = Board(0).noise[:, :, :36]                        # the seeded board's noise (ADC), per channel
    assert verdict["median_noise"] == pytest.approx(float(np.median(truth)), abs=0.06)
    summary = pd.read_csv(out / "summary.csv")
    g = geometry.load("LD-full")
    assert len(summary) == len(g.pad) and (summary.pad.to_numpy() == g.pad).all()
    assert set(summary.qc_flags) == {"ok"}
    assert {p.name for p in out.glob("*_hexmap.png")} == {"pedestal_hexmap.png", "noise_hexmap.png"}
    page = next((lib / "raff-out").glob("report*.html"), None) or next((lib / "raff-out").rglob("*.html"))
    html = page.read_text()
    assert "QC verdict: PASS" in html
    assert html.index("QC verdict") < html.index("pedestal_hexmap")
    # the workflow's page: the verdict before every other analysis, built or not
    assert raff("report", "characterisation", "-c", lib / "main_config.yaml").code == 0
    page = (lib / "raff-out" / "characterisation.html").read_text()
    sections = [page.index(f"<h2>analysis {n}") for n in ("qc", "pedestal", "injection", "timewalk")]
    assert sections == sorted(sections) and page.index("QC verdict: PASS") < sections[1]


def test_qc_analysis_code_covers_the_raffinerie_modules_it_draws_with():
    from raffinerie.analysis.code import CodeIndex, locate

    class Where:
        file = line = None

    digests = CodeIndex().digests(locate("builtin.qc", "qc", None, Where()))
    assert {"qc.py", "pedestal.py", "common.py", "raffinerie/qc.py", "raffinerie/analysis/hexmap.py",
            "raffinerie/geometry/__init__.py"} <= set(digests)


def test_an_emulated_board_with_seeded_dead_and_noisy_channels_gets_exactly_those_flagged(raff, tmp_path):
    """The defects given to `raff emulator` are the truth; the qc analysis must find them, no more."""
    import shutil

    import yaml

    from conftest import EXAMPLES
    from raffinerie.config.daqconfig import Generation
    from raffinerie.emulator.process import EmulatorProcess

    dead, noisy = [(0, 5), (2, 61)], [(1, 40), (2, 3), (0, 70)]
    args = [a for c in dead for a in ("--dead-channel", f"{c[0]}:{c[1]}")]
    args += [a for c in noisy for a in ("--noisy-channel", f"{c[0]}:{c[1]}")]
    lib = tmp_path / "lib"
    shutil.copytree(EXAMPLES, lib, ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
    with EmulatorProcess(seed=4, generation=Generation.Y2021, extra_args=args) as emu:
        p = emu.ports
        net = tmp_path / "defective.yaml"
        net.write_text(yaml.safe_dump({
            "server": {"hostname": "127.0.0.1", "port": p["server"]},
            "target": {"hostname": "127.0.0.1", "port": p["target"]},
            "data": {"hostname": "127.0.0.1", "port": p["data"]},
            "board": "defective-board-4", "timeout": 5}))
        result = raff("build", "qc", "-c", lib / "main_config.yaml", "--network", net)
    assert result.code == 0, result.err
    g = geometry.load("LD-full")
    pad = {(int(c), int(ch)): int(p)
           for c, t, ch, p in zip(g.chip, g.channeltype, g.channel, g.pad) if t == 0}
    verdict = json.loads(next((lib / "raff-out" / "qc").rglob("verdict.json")).read_text())
    assert verdict["dead_pads"] == sorted(pad[c] for c in dead if pad[c] > 0)
    assert verdict["noisy_pads"] == sorted(pad[c] for c in noisy if pad[c] > 0)
    assert verdict["verdict"] == "pass" and verdict["grade"] == "B"      # 5 of 198 cells: 2.5 %


def test_qc_of_many_runs_names_their_maps_by_folder_and_goes_on_past_a_bad_file(raff, tmp_path):
    """hexactrl names every pedestal summary pedestal_run0.root, each in its run's folder."""
    import shutil

    runs = []
    for folder, run in (("run_a", "E02_pedestal_run0.root"), ("run_b", "test_pedestal_run0.root")):
        (tmp_path / folder).mkdir()
        runs.append(tmp_path / folder / "pedestal_run0.root")
        shutil.copy(shared(*MAPS, "real-pedestal-runs", run), runs[-1])
    result = raff("qc", *runs, tmp_path / "missing.root", "--json", "-o", tmp_path / "maps")
    assert result.code == 1 and "missing.root: ROOT file not found" in result.err
    docs = json.loads(result.out)
    assert [d["file"] for d in docs] == [str(r) for r in runs]
    assert [d["noisy_pads"] for d in docs] == [[18, 28, 80, 126, 189], [67]]
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        f"{f}_pedestal_run0_{c}_hexmap.png" for f in ("run_a", "run_b") for c in ("adc_mean", "adc_stdd")]
    assert raff("qc", *runs).code == 0


def test_qc_analysis_leaves_channels_measured_only_under_injection_undecided(tmp_path):
    """A point that injects into a half measures a pulse there: its channels are undecided, not
    "no data", and the board is judged on the rest."""
    import pandas as pd

    from raffinerie.analysis.builtin.qc import Qc

    g = geometry.load("LD-full")
    n = len(g.pad)
    frame = pd.DataFrame({"point": 0, "chip": g.chip, "channeltype": g.channeltype, "channel": g.channel,
                          "half": np.where(g.channeltype == 0, g.channel // 36,
                                           np.where(g.channeltype == 1, g.channel, g.channel // 2)),
                          "adc_mean": 250.0, "adc_stdd": 1.0, "adc_median": 250.0, "toa_efficiency": 0.0,
                          "tot_efficiency": 0.0, "Calib": np.where(g.chip == 0, 500, 0), "IntCtest": 1,
                          "HighRange": ((g.chip == 0) & (g.channeltype == 0)
                                        & (g.channel == 10)).astype(int)})
    frame.loc[(frame.chip == 0) & (frame.channel == 10) & (frame.channeltype == 0), "adc_mean"] = 800.0
    analysis = Qc({})
    analysis.run(frame, tmp_path)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["no_data_pads"] == []
    pad10 = int(g.pad[(g.chip == 0) & (g.channeltype == 0) & (g.channel == 10)][0])
    assert pad10 in verdict["injected_pads"]
    assert "no point without injection" in (tmp_path / "notes.txt").read_text()
    assert n == 234


def test_a_summary_without_the_noise_branch_and_a_file_given_twice(raff, tmp_path):
    import uproot

    path = tmp_path / "odd.root"
    with uproot.recreate(path) as f:
        f["runsummary/summary"] = {"chip": np.zeros(3, np.uint32), "channel": np.arange(3, dtype=np.uint16),
                                   "channeltype": np.zeros(3, np.uint16), "adc_mean": np.ones(3, np.float32)}
    assert_clean_error(raff("qc", path), "odd.root: the runsummary/summary tree has no adc_stdd branch")
    run = shared(*MAPS, "real-pedestal-runs", "E02_pedestal_run0.root")
    assert raff("qc", run, run, "-o", tmp_path / "maps").code == 0
    assert len(list((tmp_path / "maps").iterdir())) == 4            # numbered: none overwritten
