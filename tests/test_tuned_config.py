"""builtin.tuned_config: the merged calibrations a tuned daq procedure stood on, as one target file.

The chain here: a trim_inv scan standing on a reference-voltage calibration (`setter`, which
writes its parameter), pedestal_trim on that scan, a tuned pedestal run on both, and the
tuned_config analysis of it. The tuned file, loaded as an initial config, must configure a
point exactly as the calibrations did: the same key, so the plan finds it cached.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from test_calibrations import SETTER

VREF = {"roc_s0": {"ReferenceVoltage": {0: {"Inv_vref": 320}, 1: {"Inv_vref": 290}}},
        "roc_s1": {"ReferenceVoltage": {0: {"Inv_vref": 305}}}}
TRIM_VALUES = "[0, 32, 63]"


def _chain(libdir, init: str = "") -> str:
    trim_axis = "- key: [[roc_s0, roc_s1, roc_s2], ch, [%s], trim_inv]\n  values: %s\n" % (
        ", ".join(map(str, range(72))), TRIM_VALUES)
    trim_scan = libdir.daq("trim_scan", trim_axis).replace("  type: daq\n", "  type: daq\n  calibration: vref\n")
    tuned = libdir.daq("tuned_run").replace("  type: daq\n", "  type: daq\n  calibration: [vref, trim]\n")
    return (libdir.daq("base") + trim_scan + tuned
            + f"- {{name: vref, type: analysis, daq: base, module: setter, parameters: {{sets: {json.dumps(VREF)}}}}}\n"
            "- {name: trim, type: analysis, daq: trim_scan, module: builtin.pedestal_trim}\n"
            "- {name: hexaboard_tuning, type: analysis, daq: tuned_run, module: builtin.tuned_config}\n")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    from conftest import LibraryFolder, run_raff

    libdir = LibraryFolder(tmp_path_factory.mktemp("tuned"))
    libdir.write("defaults/daq.yaml", "server: {NChips: 3, NEvents: 100, zmqPushPull_port: 8888}\nclient: {}\n")
    libdir.write("analyses/setter.py", SETTER)
    main = libdir.main(_chain(libdir))
    r = run_raff("build", "hexaboard_tuning", "-c", main, timeout=300)
    assert r.code == 0, r.err
    return libdir, main


def test_the_tuned_config_is_every_calibration_merged_in_order(tuned):
    libdir, _ = tuned
    out = libdir.root / "raff-out"
    doc = yaml.safe_load((out / "hexaboard_tuning" / "tuned_config.yaml").read_text())
    trims = yaml.safe_load((out / "trim" / "calibration.yaml").read_text())
    assert doc["roc_s0"]["ReferenceVoltage"] == {0: {"Inv_vref": 320}, 1: {"Inv_vref": 290}}
    assert doc["roc_s1"]["ReferenceVoltage"] == {0: {"Inv_vref": 305}}
    for chip in ("roc_s0", "roc_s1", "roc_s2"):
        assert doc[chip]["ch"] == trims[chip]["ch"] and len(doc[chip]["ch"]) == 72
    summary = pd.read_csv(out / "hexaboard_tuning" / "summary.csv")
    row = summary[(summary.chip == "roc_s0") & (summary.parameter == "Inv_vref")].iloc[0]
    assert (row.set_by, row.places, row.missing, row["min"], row["max"]) == ("vref", 2, 0, 290, 320)
    assert set(summary[summary.parameter == "trim_inv"].set_by) == {"trim"}
    notes = (out / "hexaboard_tuning" / "notes.txt").read_text()
    assert "tuned configuration from vref → trim" in notes and "roc_s2 half 1: pedestal median" in notes
    assert (out / "hexaboard_tuning" / "tuned_board.png").read_bytes()[:4] == b"\x89PNG"


def test_the_tuned_config_as_an_initial_config_configures_the_points_as_the_chain_did(tuned, raff):
    libdir, main = tuned
    tuned_file = libdir.root / "raff-out" / "hexaboard_tuning" / "tuned_config.yaml"
    check = libdir.daq("from_file").replace(
        "    power_on_default: ./defaults/pod.yaml\n",
        f"    power_on_default: ./defaults/pod.yaml\n    initial_config: {tuned_file}\n")
    main = libdir.main(_chain(libdir) + check)
    plan = json.loads(raff("plan", "from_file", "tuned_run", "-c", main, "--json").out)
    nodes = {n["id"]: n for n in plan["nodes"]}
    # the same resolved configuration, so the same key: the tuned run's point, already acquired
    assert nodes["points:from_file"]["status"] == "cached", nodes["points:from_file"]
    keys = {p["procedure"]: p["key"] for p in plan["points"]}
    assert keys["from_file"] == keys["tuned_run"]


def test_a_rebuild_does_nothing(tuned, raff):
    _, main = tuned
    r = raff("build", "hexaboard_tuning", "-c", main)
    assert r.code == 0 and "is up to date" in r.out, r.out


def test_without_calibrations_it_says_what_is_missing(raff, libdir):
    libdir.write("defaults/daq.yaml", "server: {NChips: 3, NEvents: 10, zmqPushPull_port: 8888}\nclient: {}\n")
    main = libdir.main(libdir.daq("base") + "- {name: t, type: analysis, daq: base, module: builtin.tuned_config}\n")
    r = raff("build", "t", "-c", main, timeout=120)
    assert r.code != 0 and "stands on no calibration" in r.err, r.err


def test_the_hcc_slow_control_takes_the_tuned_config_as_it_is(tuned, tmp_path):
    from test_emulator_protocol import running_emulator

    libdir, _ = tuned
    doc = yaml.safe_load((libdir.root / "raff-out" / "hexaboard_tuning" / "tuned_config.yaml").read_text())
    with running_emulator(tmp_path) as emu:
        sc = emu.req("target")
        assert sc.hcc("set", doc)["status"] == "success"
        back = sc.hcc("get", {"roc_s0": {"ReferenceVoltage": {1: None}}, "roc_s2": {"ch": {71: None}}},
                      from_hardware=True)
        assert back["status"] == "success", back
        assert back["args"]["roc_s0"]["ReferenceVoltage"][1]["Inv_vref"] == 290
        assert back["args"]["roc_s2"]["ch"][71]["trim_inv"] == doc["roc_s2"]["ch"][71]["trim_inv"]


def test_the_validate_table_of_naming_parameters_is_the_classes_own():
    """`raff validate` checks the parameters that name used analyses without importing the
    analyses: its table must say what each built-in class says."""
    import importlib

    from raffinerie.analysis.code import BUILTIN_DIR, NAMING_PARAMETERS

    declared = {}
    for path in sorted(BUILTIN_DIR.glob("[!_]*.py")):
        module = importlib.import_module(f"raffinerie.analysis.builtin.{path.stem}")
        cls = getattr(module, "DISTILLERY", None)
        if cls is not None and getattr(cls, "naming_parameters", ()):
            declared[path.stem] = tuple(cls.naming_parameters)
    assert declared == NAMING_PARAMETERS


def test_a_named_analysis_it_does_not_use_is_an_error_before_anything_runs(raff, tmp_path):
    """The example chain with a typo in `before`: validate names the place and the analysis
    meant; plan and build stop on it, before a point is acquired."""
    import shutil

    from conftest import EXAMPLES, assert_clean_error

    # not the cache or outputs of a build of the examples made before (the README main job)
    shutil.copytree(EXAMPLES, tmp_path / "lib", ignore=shutil.ignore_patterns(".raffinerie-cache", "raff-out"))
    procedures = tmp_path / "lib" / "tuning_procedures.yaml"
    text = procedures.read_text()
    assert "before: tuning_pedestal," in text
    procedures.write_text(text.replace("before: tuning_pedestal,", "before: tuning_pedestl,"))
    main = tmp_path / "lib" / "main_config.yaml"
    want = ("tuning_procedures.yaml:", "procedure 'hexaboard_tuning': parameters.before: 'tuning_pedestl' "
            "is not an analysis 'hexaboard_tuning' uses (did you mean 'tuning_pedestal'?): add it to `uses:`")
    assert_clean_error(raff("validate", "-c", main), *want)
    assert_clean_error(raff("plan", "hexaboard_tuning", "-c", main), *want)
    assert_clean_error(raff("build", "hexaboard_tuning", "-c", main), *want)
    assert not list((tmp_path / "lib").glob(".raffinerie-cache/measurements/*"))
    assert raff("plan", "tuning_pedestal", "-c", main).code == 0  # what does not need it plans
