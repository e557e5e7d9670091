"""`raff export NAME --format hgcdb`: the construction-database upload of a pedestal run, read back."""

from __future__ import annotations

import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import EXAMPLES, assert_clean_error, run_raff
from raffinerie import geometry, hgcdb

SERIALS = {"roc_s0": "HGCROC-A100", "roc_s1": "HGCROC-A101", "roc_s2": "HGCROC-A102"}
WHO = ["--location", "CMU", "--shipping-code", "1301", "--user", "jdoe", "--temperature", "22.5",
       "--humidity", "31"]
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d")


def _options(part="320XLF3TCM0042", rocs=SERIALS):
    out = ["--part", part, "--kind-of-part", "LD Full Hexaboard"]
    for roc, serial in rocs.items():
        out += ["--roc-serial", f"{roc}={serial}"]
    return out + WHO


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The example library with its pedestal run built on the embedded emulator."""
    lib = tmp_path_factory.mktemp("hgcdb") / "lib"
    shutil.copytree(EXAMPLES, lib, ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
    result = run_raff("build", "pedestal_run", "-c", lib / "main_config.yaml")
    assert result.code == 0, result.err
    return lib / "main_config.yaml"


def _export(main, out, *args, name="pedestal_run"):
    return run_raff("export", name, "-c", main, "--format", "hgcdb", "-o", out, *map(str, args))


def _documents(out: Path) -> dict[str, ET.Element]:
    docs = {}
    for path in sorted(out.glob("*.xml")):
        assert path.read_bytes().startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
        docs[re.search(r"T\d{6}_(.+)$", path.stem).group(1)] = ET.parse(path).getroot()
    return docs


def _dataset(main):
    """The built dataset's table (one point): what the upload must say."""
    from raffinerie.store.store import Store

    store = Store(main.parent / ".raffinerie-cache")
    key = next((store.root / "datasets").glob("*/*")).name
    return store.open_dataset(key).to_pandas(["chip", "channeltype", "channel", "adc_mean", "adc_stdd",
                                              "n_events"])


def test_the_upload_parses_and_says_what_the_dataset_holds(built, tmp_path):
    out = tmp_path / "upload"
    result = _export(built, out, *_options())
    assert result.code == 0, result.err
    docs = _documents(out)
    assert set(docs) == {"pedestal", "pedestal_cond", "pedestal_config"}
    names = sorted(p.name for p in out.glob("*.xml"))
    pattern = r"320XLF3TCM0042_CMU_\d{8}T\d{6}_pedestal(_cond|_config)?\.xml"
    assert all(re.fullmatch(pattern, n) for n in names)
    for root in docs.values():                      # one HEADER, the same run in each document
        run = root.find("HEADER/RUN")
        assert run.findtext("RUN_TYPE") == "MAC hexaboard pedestal and noise"
        assert re.fullmatch(r"1301\d{12}", run.findtext("RUN_NUMBER"))
        assert STAMP.fullmatch(run.findtext("RUN_BEGIN_TIMESTAMP"))
        assert run.findtext("RUN_BEGIN_TIMESTAMP") <= run.findtext("RUN_END_TIMESTAMP")
        assert (run.findtext("INITIATED_BY_USER"), run.findtext("LOCATION")) == ("jdoe", "CMU")
    pedestal = docs["pedestal"]
    assert pedestal.findtext("HEADER/TYPE/EXTENSION_TABLE_NAME") == "HGC_PEDESTAL_DATA"
    sets = pedestal.findall("DATA_SET")
    assert [s.findtext("PART/SERIAL_NUMBER") for s in sets] == list(SERIALS.values())
    assert {s.findtext("PART/KIND_OF_PART") for s in sets} == {"LD HGCROC"}
    table = _dataset(built)
    assert len(table) == 234
    for chip, data_set in enumerate(sets):
        rows = data_set.findall("DATA")
        mine = table[table.chip == chip].sort_values(["channeltype", "channel"])
        assert len(rows) == len(mine) == 78                 # one row per channel: 72 + 2 calib + 4 CM
        expected = np.where(mine.channeltype == 1, mine.channel + 80,
                            np.where(mine.channeltype == 100, mine.channel + 90, mine.channel))
        assert [int(r.findtext("CHANNEL")) for r in rows] == expected.tolist()
        assert [float(r.findtext("MEAN")) for r in rows] == mine.adc_mean.tolist()     # exactly
        assert [float(r.findtext("STDEV")) for r in rows] == mine.adc_stdd.tolist()
        assert {float(r.findtext("FRAC_UNC")) for r in rows} == {1 / math.sqrt(1000)}
        assert all(r.find("FLAGS") is None for r in rows)    # a clean board: no flag is set
    cond = docs["pedestal_cond"].findall("DATA_SET")
    assert len(cond) == 1 and cond[0].findtext("PART/SERIAL_NUMBER") == "320XLF3TCM0042"
    assert cond[0].findtext("PART/KIND_OF_PART") == "LD Full Hexaboard"
    assert float(cond[0].findtext("DATA/TEMP_C")) == 22.5
    assert float(cond[0].findtext("DATA/HUMIDITY_REL")) == 31
    configs = docs["pedestal_config"].findall("DATA_SET")
    assert [s.findtext("PART/SERIAL_NUMBER") for s in configs] == list(SERIALS.values())
    pod = yaml.safe_load((built.parent / "defaults" / "V3LDHexaboard-poweron-default.yaml").read_text())
    for chip, data_set in enumerate(configs):
        config = json.loads(data_set.findtext("DATA/CONFIG_JSON"))
        vref = config["ReferenceVoltage"]["0"]["Toa_vref"]
        assert data_set.findtext("DATA/PURPOSE") == f"Tuned for TOA_vref={vref}"
        assert set(config) == set(pod[f"roc_s{chip}"])    # the whole configuration of the ROC
    assert f"{len(SERIALS)} ROCs, 234 channels (0 dead, 0 noisy" in result.out


def test_settings_from_the_network_file_and_the_flags_of_a_defective_board(tmp_path):
    """A bare hexaboard with two dead and two noisy cells: exactly those carry D and N."""
    from raffinerie.config.daqconfig import Generation
    from raffinerie.emulator.process import EmulatorProcess

    dead, noisy = [(0, 5), (2, 61)], [(1, 40), (2, 3)]
    args = [a for c in dead for a in ("--dead-channel", f"{c[0]}:{c[1]}")]
    args += [a for c in noisy for a in ("--noisy-channel", f"{c[0]}:{c[1]}")]
    lib = tmp_path / "lib"
    shutil.copytree(EXAMPLES, lib, ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
    main, out = lib / "main_config.yaml", tmp_path / "upload"
    with EmulatorProcess(seed=4, generation=Generation.Y2021, extra_args=args) as emu:
        p = emu.ports
        net = tmp_path / "board.yaml"
        net.write_text(yaml.safe_dump({
            "server": {"hostname": "127.0.0.1", "port": p["server"]},
            "target": {"hostname": "127.0.0.1", "port": p["target"]},
            "data": {"hostname": "127.0.0.1", "port": p["data"]},
            "board": "320XLF3TCM0007", "timeout": 5, "geometry": "LD-full",
            "database": {"part": "320XLF3TCM0007", "kind_of_part": "LD Full Hexaboard", "rocs": SERIALS,
                         "location": "CMU", "shipping_code": 1301, "user": "jdoe"}}))
        assert run_raff("build", "pedestal_run", "-c", main, "--network", net).code == 0
    result = _export(main, out, "--network", net, "--temperature", 21, "--humidity", 40)
    assert result.code == 0, result.err
    g = geometry.load("LD-full")
    pad = {(int(c), int(ch)): int(p)
           for c, t, ch, p in zip(g.chip, g.channeltype, g.channel, g.pad) if t == 0}
    flagged = {}
    for chip, data_set in enumerate(_documents(out)["pedestal"].findall("DATA_SET")):
        for row in data_set.findall("DATA"):
            if row.find("FLAGS") is not None:
                flagged[(chip, int(row.findtext("CHANNEL")))] = row.findtext("FLAGS")
    expected = {c: "D" for c in dead if pad[c] > 0} | {c: "N" for c in noisy if pad[c] > 0}
    assert flagged == expected and len(expected) == 4
    assert "2 dead, 2 noisy" in result.out


def test_a_module_upload_has_its_run_type_its_name_and_the_bias(built, tmp_path):
    out = tmp_path / "module"
    result = _export(built, out, *_options(part="320MLF3TCM0042"), "--bias-voltage", 300,
                     "--leakage-current", 2.5e-6, "--limit", "noisy_above_median=3")
    assert result.code == 0, result.err
    docs = _documents(out)
    assert set(docs) == {"pedestal", "pedestal_cond", "pedestal_config", "pedestal_bias"}
    assert all(p.name.startswith("320MLF3TCM0042_2") for p in out.glob("*.xml"))   # no location in it
    assert docs["pedestal"].findtext("HEADER/RUN/RUN_TYPE") == "Si module pedestal and noise"
    bias = docs["pedestal_bias"].find("DATA_SET/DATA")
    assert float(bias.findtext("BIAS_VOLTAGE")) == 300
    assert float(bias.findtext("BIAS_CURRENT_TOTAL_AMPS")) == 2.5e-6


@pytest.mark.parametrize("change, needles", [
    ({"rocs": {k: v for k, v in SERIALS.items() if k != "roc_s1"}}, ["no serial number for ROC roc_s1",
                                                                     "--roc-serial roc_s1=SERIAL"]),
    ({"part": "LD-0042"}, ["'LD-0042' is not the serial number of a hexaboard or module"]),
    ({"part": "320XHF3TCM0042"}, ["320XHF3TCM0042 is an HD board", "LD-full (3 chips)"]),
    ({"drop": "--user"}, ["the upload needs the uploading user: give --user"]),
    ({"drop": "--temperature"}, ["the upload needs the temperature during the run (--temperature)"]),
    ({"set": ("--shipping-code", "13")}, ["shipping code '13' is not 4 digits"]),
    ({"set": ("--humidity", "140")}, ["--humidity 140 is not in [0, 100]"]),
    ({"extra": ["--bias-voltage", "300", "--leakage-current", "1e-6"]},
     ["is a hexaboard: it has no sensor bias"]),
])
def test_what_the_upload_lacks_is_named_in_one_line(built, tmp_path, change, needles):
    rocs = change.get("rocs", SERIALS)
    args = _options(part=change.get("part", "320XLF3TCM0042"), rocs=rocs) + change.get("extra", [])
    if "drop" in change:
        i = args.index(change["drop"])
        del args[i:i + 2]
    if "set" in change:
        args[args.index(change["set"][0]) + 1] = change["set"][1]
    result = _export(built, tmp_path / "out", *args)
    assert_clean_error(result, *needles)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_scan_or_an_unbuilt_procedure_is_refused(built, tmp_path):
    assert_clean_error(_export(built, tmp_path / "o", *_options(), name="injection_scan"),
                       "the dataset of 'injection_scan' is not built")
    assert_clean_error(_export(built, tmp_path / "o", *_options(), name="pedestal"),
                       "'pedestal' is not a daq procedure")


def test_pure_parts_follow_the_loader():
    assert [hgcdb.upload_channel(t, c) for t, c in ((0, 71), (1, 0), (1, 1), (100, 0), (100, 3))] == \
        [71, 80, 81, 90, 93]
    assert [hgcdb.flags(*f) for f in ((True, True, True), (False, True, False), (False, False, True),
                                      (False, False, False))] == ["0DN", "D", "N", ""]
    part = hgcdb.Part.parse("320-XHF3TCM0042", "test")
    assert (part.type, part.density) == (hgcdb.PartType.HEXABOARD, "HD")
    upload = hgcdb.Upload(part, "HD Full Hexaboard", {}, "CMU", "1301", "jdoe")
    assert STAMP.fullmatch(hgcdb.timestamp(1_700_000_000.0))
    assert hgcdb.run_number(upload, 1.7e9) == "1301" + hgcdb.local_time(1.7e9).strftime("%y%m%d%H%M%S")
