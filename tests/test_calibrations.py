"""Composable calibrations: a daq procedure standing on several, applied in order, a chain of them.

`setter` is a distillery whose calibration is its parameter `sets`, so each test says exactly
which registers a calibration writes; the points' measurement records (`target_diff`) show
what the daq procedure's points were configured with.
"""

from __future__ import annotations

import json

from conftest import assert_clean_error

SETTER = '''\
import os

import yaml


class setter:
    def __init__(self, parameters):
        self.sets = parameters["sets"]

    def output(self):
        return {"summary": "summary.csv", "plots": [], "calibration": "calibration.yaml"}

    def run(self, data, output_dir):
        data.head(1).to_csv(os.path.join(output_dir, "summary.csv"), index=False)
        with open(os.path.join(output_dir, "calibration.yaml"), "w") as f:
            yaml.safe_dump(self.sets, f)
'''
VREF = {"roc_s0": {"ReferenceVoltage": {0: {"Inv_vref": 310}}, "ch": {0: {"trim_inv": 10}}}}
TRIM = {"roc_s0": {"ch": {0: {"trim_inv": 40}, 1: {"trim_inv": 5}}}}


def _setter(name: str, daq: str, sets: dict) -> str:
    return f"- {{name: {name}, type: analysis, daq: {daq}, module: setter, parameters: {{sets: {json.dumps(sets)}}}}}\n"


def _library(libdir, vref=VREF, trim=TRIM, calibration="[vref, trim]"):
    libdir.write("defaults/daq.yaml", "server: {NChips: 3, NEvents: 10, zmqPushPull_port: 8888}\nclient: {}\n")
    libdir.write("analyses/setter.py", SETTER)
    tuned = libdir.daq("tuned").replace("  type: daq\n", f"  type: daq\n  calibration: {calibration}\n")
    # trim's scan stands on vref: a chain, not a star
    trim_scan = libdir.daq("trim_scan").replace("  type: daq\n", "  type: daq\n  calibration: vref\n")
    return libdir.main(libdir.daq("base") + _setter("vref", "base", vref) + trim_scan
                       + _setter("trim", "trim_scan", trim) + tuned)


def _targets(cache, procedure: str) -> list[dict]:
    """The target_diff of each measurement of `procedure` in the cache."""
    from raffinerie.store.store import Store

    store = Store(cache)
    metas = [store.meta("measurements", entry.name) for entry in (cache / "measurements").glob("*/*")
             if len(entry.name) == 64]
    return [m["target_diff"] for m in metas if m.get("procedure") == procedure]


def test_a_later_calibration_wins_where_two_set_a_register(raff, libdir, tmp_path):
    main, cache = _library(libdir), tmp_path / "cache"
    r = raff("build", "tuned", "-c", main, "--cache", cache, timeout=180)
    assert r.code == 0, r.err
    [target] = _targets(cache, "tuned")
    ch = target["roc_s0"]["ch"]
    assert ch["0"]["trim_inv"] == 40 and ch["1"]["trim_inv"] == 5       # trim's, over vref's 10
    assert target["roc_s0"]["ReferenceVoltage"]["0"]["Inv_vref"] == 310   # vref's, which trim leaves
    [scan] = _targets(cache, "trim_scan")
    assert scan["roc_s0"]["ch"]["0"]["trim_inv"] == 10                   # the chain's first link only
    record = json.loads(next((cache / "names" / "datasets").glob("tuned.json")).read_text())
    assert [name for name, key in record["inputs"]["calibrations"]] == ["vref", "trim"]


def test_the_plan_shows_the_chain_and_names_the_calibration_that_changed(raff, libdir, tmp_path):
    main, cache = _library(libdir), tmp_path / "cache"
    assert raff("build", "tuned", "-c", main, "--cache", cache, timeout=180).code == 0
    plan = raff("plan", "tuned", "-c", main, "--cache", cache)
    assert "stands on calibrations vref, trim (applied in this order, a later one winning)" in plan.out
    # a change of trim's output re-plans tuned only; vref and what stands on it alone stay
    main = _library(libdir, trim={"roc_s0": {"ch": {0: {"trim_inv": 41}}}})
    plan = json.loads(raff("plan", "tuned", "-c", main, "--cache", cache, "--json").out)
    nodes = {n["id"]: n for n in plan["nodes"]}
    assert nodes["analysis:trim"]["status"] == "build"
    assert {i: nodes[i]["status"] for i in ("analysis:vref", "dataset:trim_scan", "points:trim_scan")} \
        == {"analysis:vref": "cached", "dataset:trim_scan": "cached", "points:trim_scan": "cached"}
    assert nodes["points:tuned"]["why"] == {"kind": "waiting_for_calibration", "calibration": "trim",
                                           "cause": nodes["analysis:trim"]["why"]}
    r = raff("build", "tuned", "-c", main, "--cache", cache, timeout=180)
    assert r.code == 0 and "1 point acquired" in r.out, r.out
    # a change of vref's output: everything standing on it, through trim_scan too
    main = _library(libdir, vref={"roc_s0": {"ReferenceVoltage": {0: {"Inv_vref": 320}}}},
                    trim={"roc_s0": {"ch": {0: {"trim_inv": 41}}}})
    assert raff("build", "vref", "-c", main, "--cache", cache, timeout=180).code == 0
    plan = json.loads(raff("plan", "tuned", "-c", main, "--cache", cache, "--json").out)
    nodes = {n["id"]: n for n in plan["nodes"]}
    assert nodes["points:trim_scan"]["why"]["kind"] == "calibration_changed"
    assert nodes["points:trim_scan"]["why"]["calibration"] == "vref"
    text = raff("plan", "tuned", "-c", main, "--cache", cache).out
    assert "points trim_scan" in text and "calibration changed (vref): 1 new point, 0 cached" in text, text


def test_a_single_calibration_still_reads_as_before(raff, libdir, tmp_path):
    main = _library(libdir, calibration="trim")
    r = raff("build", "tuned", "-c", main, "--cache", tmp_path / "cache", timeout=180)
    assert r.code == 0, r.err
    [target] = _targets(tmp_path / "cache", "tuned")
    assert target["roc_s0"]["ch"]["0"]["trim_inv"] == 40 and "ReferenceVoltage" not in target["roc_s0"]
    record = json.loads((tmp_path / "cache" / "names" / "datasets" / "tuned.json").read_text())
    assert [["trim", record["inputs"]["calibration"]]] == record["inputs"]["calibrations"]


def test_errors_name_the_calibration_and_its_place(raff, libdir):
    main = _library(libdir, calibration="[vref, nope]")
    assert_clean_error(raff("validate", "-c", main), "main.yaml:", "calibration[1]",
                       "'tuned' takes its calibration from 'nope'")
    main = _library(libdir, calibration="[vref, base]")
    assert_clean_error(raff("validate", "-c", main), "calibration[1]", "'base' is a daq procedure")
    main = _library(libdir, calibration="[]")
    assert_clean_error(raff("validate", "-c", main), "calibration")


def test_a_calibration_that_does_not_fit_is_named_in_a_list(raff, libdir, tmp_path):
    main = _library(libdir, trim={"roc_s0": {"ch": {0: {"trim_inv": 99}}}})
    r = raff("build", "tuned", "-c", main, "--cache", tmp_path / "cache", timeout=180)
    assert_clean_error(r, "calibration[1]", "the calibration 'trim' that 'tuned' takes sets roc_s0.ch.0.trim_inv",
                       "does not fit its 6-bit register")
