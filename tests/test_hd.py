"""HD hexaboards (6 HGCROCv3) end to end: the emulator plays one, the example library's HD pedestal
run goes through the dataset, the pedestal analysis, the QC and the database export."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from conftest import EXAMPLES, assert_clean_error, run_raff, shared
from raffinerie import geometry
from raffinerie.config.daqconfig import Generation
from raffinerie.emulator.process import EmulatorProcess

# seeded defects on the ROCs an LD board does not have (and one on roc_s0)
DEAD, NOISY = [(3, 5), (5, 61)], [(4, 40), (0, 70), (5, 3)]
SERIALS = {f"roc_s{c}": f"HGCROC-H{c:03d}" for c in range(6)}


def _library(root):
    lib = root / "lib"
    shutil.copytree(EXAMPLES, lib, ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
    return lib / "main_config.yaml"


def _network(path, ports, **extra):
    path.write_text(yaml.safe_dump({
        "server": {"hostname": "127.0.0.1", "port": ports["server"]},
        "target": {"hostname": "127.0.0.1", "port": ports["target"]},
        "data": {"hostname": "127.0.0.1", "port": ports["data"]},
        "timeout": 5, **extra}))
    return path


def _seeded(defects, flag):
    return [a for c in defects for a in (flag, f"{c[0]}:{c[1]}")]


@pytest.fixture(scope="module")
def hd_board(tmp_path_factory):
    """A defective HD board on a standalone emulator: its pedestal run, QC and pedestal analysis built."""
    root = tmp_path_factory.mktemp("hd")
    main = _library(root)
    args = _seeded(DEAD, "--dead-channel") + _seeded(NOISY, "--noisy-channel")
    with EmulatorProcess(seed=6, generation=Generation.Y2021, extra_args=args, board="HD") as emu:
        assert emu.ports["board"] == "HD"
        net = _network(root / "hd-board.yaml", emu.ports, board="320MHF1TCCB0001",
                       database={"part": "320MHF1TCCB0001", "kind_of_part": "HD Full Module",
                                 "rocs": SERIALS, "location": "CMU", "shipping_code": 1301,
                                 "user": "jdoe"})
        result = run_raff("build", "hd_qc", "hd_pedestal", "-c", main, "--network", net)
    assert result.code == 0, result.err
    return main, net


def _pads(g):
    return {(int(c), int(ch)): int(p) for c, t, ch, p in zip(g.chip, g.channeltype, g.channel, g.pad) if t == 0}


def _dataset(main):
    from raffinerie.store.store import Store

    store = Store(main.parent / ".raffinerie-cache")
    key = next((store.root / "datasets").glob("*/*")).name
    return store.open_dataset(key).to_pandas(["chip", "channeltype", "channel", "adc_mean", "adc_stdd"])


def test_the_hd_pedestal_run_has_six_chips_and_its_qc_finds_exactly_the_seeded_defects(hd_board):
    main, _ = hd_board
    data = _dataset(main)
    assert len(data) == 6 * 78 and sorted(data.chip.unique()) == list(range(6))
    assert (data.adc_stdd > 0).sum() == 6 * 78 - len(DEAD)      # the dead ones are stuck
    g = geometry.load("HD-full")
    pad = _pads(g)
    out = main.parent / "raff-out"
    verdict = json.loads(next((out / "hd_qc").rglob("verdict.json")).read_text())
    assert verdict["geometry"] == "HD-full"
    assert sorted(verdict["corrupt_fraction"]) == [f"roc_s{c}" for c in range(6)]
    assert verdict["dead_pads"] == sorted(pad[c] for c in DEAD if pad[c] > 0)
    assert verdict["noisy_pads"] == sorted(pad[c] for c in NOISY if pad[c] > 0)
    assert len(verdict["dead_pads"]) + len(verdict["noisy_pads"]) >= 4   # the seeded ones read cells
    for analysis, plots in (("hd_qc", ("pedestal_hexmap", "noise_hexmap")),
                            ("hd_pedestal", ("pedestal_hexmap", "noise_hexmap"))):
        for plot in plots:
            assert next((out / analysis).rglob(f"{plot}.png")).stat().st_size > 20_000


def test_the_hd_export_has_six_data_sets_of_78_rows_and_the_dataset_values(hd_board, tmp_path):
    main, net = hd_board
    out = tmp_path / "upload"
    result = run_raff("export", "hd_pedestal_run", "-c", main, "--format", "hgcdb", "-o", out,
                      "--network", net, "--temperature", "21", "--humidity", "40")
    assert result.code == 0, result.err
    (path,) = [p for p in out.glob("*_pedestal.xml")]
    sets = ET.parse(path).getroot().findall("DATA_SET")
    assert [s.findtext("PART/SERIAL_NUMBER") for s in sets] == list(SERIALS.values())
    assert {s.findtext("PART/KIND_OF_PART") for s in sets} == {"HD HGCROC"}
    data = _dataset(main)
    for chip, data_set in enumerate(sets):
        rows = data_set.findall("DATA")
        assert len(rows) == 78
        mine = data[data.chip == chip]
        number = np.where(mine.channeltype == 1, mine.channel + 80,
                          np.where(mine.channeltype == 100, mine.channel + 90, mine.channel))
        expected = dict(zip(number.tolist(), mine.adc_mean.tolist()))
        got = {int(r.findtext("CHANNEL")): float(r.findtext("MEAN")) for r in rows}
        assert got.keys() == expected.keys()
        assert all(abs(got[k] - expected[k]) <= 1e-4 * max(1.0, abs(expected[k])) for k in got)
    flagged = sum(r.find("FLAGS") is not None and r.findtext("FLAGS") in "DN"
                  for s in sets for r in s.findall("DATA"))
    pad = _pads(geometry.load("HD-full"))
    assert flagged == sum(pad[c] > 0 for c in DEAD + NOISY)


def test_the_embedded_emulator_plays_the_board_each_daq_config_is_for(tmp_path):
    """One build of an LD and an HD pedestal run: the emulator is restarted as an HD board for the
    second, and each dataset has its board's chips."""
    main = _library(tmp_path)
    result = run_raff("build", "pedestal_run", "hd_pedestal_run", "-c", main)
    assert result.code == 0, result.err
    assert "embedded emulator (LD hexaboard" in result.out + result.err
    assert "embedded emulator (HD hexaboard" in result.out + result.err
    again = run_raff("plan", "hd_pedestal_run", "-c", main)
    assert "1 cached" in again.out


@pytest.mark.parametrize("generation", [Generation.Y2021, Generation.MENUS])
def test_an_ld_board_refuses_a_daq_config_for_six_chips(tmp_path, generation):
    """NChips above the board's ROCs: the daq server does not run (the real link capture would wait
    for links that are not there), and the build ends in one line naming the daq server."""
    main = _library(tmp_path)
    name = "pedestal_run" if generation is Generation.Y2021 else "pedestal_run_menus"
    daq = main.parent / "daq_procedures.yaml"
    text = daq.read_text()
    head, sep, tail = text.partition(f"- name: {name}\n")
    tail = tail.replace("server_override: {NEvents: 1000}", "server_override: {NEvents: 1000, NChips: 6}", 1)
    daq.write_text(head + sep + tail)
    with EmulatorProcess(seed=1, generation=generation) as emu:
        extra = {"client": {"hostname": "127.0.0.1", "port": emu.ports["client"]}} \
            if generation is Generation.MENUS else {}
        net = _network(tmp_path / "ld.yaml", emu.ports, generation=generation.value,
                       slow_control=emu.ports["slow_control"], **extra)
        result = run_raff("build", name, "-c", main, "--network", net, timeout=60)
    assert_clean_error(result, "daq server", "127.0.0.1", code=3)
    if generation is Generation.Y2021:
        assert "NChips 6: this hexaboard has 3 ROCs" in result.err


def test_fewer_chips_than_the_board_reads_the_first_ones(tmp_path):
    """NChips 2 on an HD board: the run holds roc_s0 and roc_s1 only."""
    main = _library(tmp_path)
    daq = main.parent / "daq_procedures.yaml"
    daq.write_text(daq.read_text().replace(
        "default: ./defaults/daq-system-config-hd.yaml\n    server_override: {NEvents: 1000}",
        "default: ./defaults/daq-system-config-hd.yaml\n    server_override: {NEvents: 100, NChips: 2}"))
    with EmulatorProcess(seed=1, generation=Generation.Y2021, board="HD") as emu:
        net = _network(tmp_path / "hd.yaml", emu.ports)
        result = run_raff("build", "hd_pedestal_run", "-c", main, "--network", net)
    assert result.code == 0, result.err
    data = _dataset(main)
    assert sorted(data.chip.unique()) == [0, 1] and len(data) == 2 * 78


def test_seeded_defects_must_be_on_the_board(raff):
    result = raff("emulator", "--dead-channel", "4:10", timeout=20)
    assert_clean_error(result, "--dead-channel 4:10", "an LD hexaboard has chips 0 to 2")
    result = raff("emulator", "--board", "HD", "--noisy-channel", "6:1", timeout=20)
    assert result.code == 2 and "CHIP 0-5" in result.err


def test_the_hd_power_on_default_is_generated_from_the_table():
    import importlib.util

    spec = importlib.util.spec_from_file_location("power_on_defaults",
                                                  EXAMPLES.parent / "tools" / "power_on_defaults.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for board in ("LD", "HD"):
        path = EXAMPLES / "defaults" / f"V3{board}Hexaboard-poweron-default.yaml"
        assert path.read_text() == tool.power_on_default_text(board)
    doc = yaml.load((EXAMPLES / "defaults" / "V3HDHexaboard-poweron-default.yaml").read_text(),
                    Loader=yaml.CSafeLoader)
    assert sorted(doc) == [f"roc_s{c}" for c in range(6)]


def test_an_hd_run_yaml_without_nchips_is_imported_with_the_chips_of_its_target(tmp_path):
    """A run yaml that configures roc_s0..roc_s5 but says no NChips: six chips, over the HD default."""
    source = shared("reference", "hexaboard-maps", "real-pedestal-runs", "hd_pedestal_run0.root")
    main = _library(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy(source, runs / "pedestal_run0.root")
    target = {f"roc_s{c}": {"Top": {0: {"phase_strobe": 2}}} for c in range(6)}
    (runs / "pedestal_run0.yaml").write_text(yaml.safe_dump(
        {"target": target, "daq": {"server": {"NEvents": 10000}}}))
    result = run_raff("import", runs, "--name", "hd_module", "-c", main)
    assert result.code == 0, result.err
    base = next((main.parent / "imported" / "hd_module").glob("target-*.yaml"))
    assert sorted(yaml.safe_load(base.read_text())) == [f"roc_s{c}" for c in range(6)]
    with open(main.parent / "analysis_procedures.yaml", "a") as f:
        f.write("- {name: hd_module_qc, type: analysis, daq: hd_module, module: builtin.qc}\n")
    built = run_raff("build", "hd_module_qc", "-c", main)
    assert built.code == 0, built.err
    verdict = json.loads((main.parent / "raff-out" / "hd_module_qc" / "verdict.json").read_text())
    assert verdict["geometry"] == "HD-full"


def test_the_readme_names_the_hd_example():
    text = (EXAMPLES.parent / "README.md").read_text()
    assert re.search(r"hd_pedestal_run", text) and "--board HD" in text


def test_an_untunable_channel_on_a_chip_the_board_lacks_is_an_error(raff):
    assert_clean_error(raff("emulator", "--untunable-channel", "3:1", timeout=20),
                       "--untunable-channel 3:1", "an LD hexaboard has chips 0 to 2")
