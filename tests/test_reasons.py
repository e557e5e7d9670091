"""`raff plan` says what changed: the first differing settings of each kind of input."""

from __future__ import annotations

import json
import re

from raffinerie.graph.reasons import Change, Reason, ReasonKind

MINE = '''\
import os


class mine:
    def __init__(self, parameters):
        self.parameters = parameters

    def output(self):
        return {"summary": "summary.csv", "plots": [], "calibration": None}

    def run(self, data, output_dir):
        data.groupby(["chip", "channel"]).adc_mean.mean().reset_index().to_csv(
            os.path.join(output_dir, "summary.csv"), index=False)
'''

CALIB = '''\
import os


class calib:
    def __init__(self, parameters):
        self.trim = parameters.get("trim", 5)

    def output(self):
        return {"summary": None, "plots": [], "calibration": "calibration.yaml"}

    def run(self, data, output_dir):
        with open(os.path.join(output_dir, "calibration.yaml"), "w") as f:
            f.write("roc_s0: {ch: {0: {trim_inv: %d}}}\\n" % self.trim)
'''

MAIN = """\
procedures:
  - name: scan
    type: daq
    target_settings:
      power_on_default: ./defaults/pod.yaml
      overrides: {roc_s0: {Top: {0: {phase_strobe: 3}}}}
    daq_settings:
      default: ./defaults/daq.yaml
      server_override: {NEvents: 100}
    parameters:
      - key: [[roc_s0, roc_s1], ReferenceVoltage, [0, 1], Calib]
        values: [0, 100]
  - name: trimmed
    type: daq
    calibration: calib
    target_settings:
      power_on_default: ./defaults/pod.yaml
    daq_settings:
      default: ./defaults/daq.yaml
  - {name: mine, type: analysis, daq: scan, parameters: {min_efficiency: 0.9}}
  - {name: calib, type: analysis, daq: scan, parameters: {trim: 5}}
  - {name: mine_trimmed, type: analysis, daq: trimmed, module: mine}
workflows:
  - {name: all, procedures: [mine, mine_trimmed]}
"""


def _plan(raff, main) -> dict:
    r = raff("plan", "all", "-c", main, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    doc["by_id"] = {n["id"]: n for n in doc["nodes"]}
    return doc


def test_each_kind_of_change_is_named(raff, libdir):
    libdir.write("analyses/mine.py", MINE)
    libdir.write("analyses/calib.py", CALIB)
    main = libdir.write("main.yaml", MAIN)
    first = raff("build", "all", "-c", main)
    assert first.code == 0, first.err
    assert "3 points acquired, 2 datasets and 3 analyses" in first.out
    assert "analysis finished in" in first.err and "analysis done (not built yet" not in first.err
    record = libdir.root / ".raffinerie-cache" / "names" / "datasets" / "scan.json"
    assert record.stat().st_size < 20_000   # the resolved base config is kept compressed
    assert json.loads(record.read_text())["inputs"]["resolved"]["axes"][0]["name"] == "Calib"

    def edit(old: str, new: str, path=main) -> None:
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    # a target register
    edit("phase_strobe: 3", "phase_strobe: 4")
    doc = _plan(raff, main)
    points = doc["by_id"]["points:scan"]
    assert points["reason"] == "2 new points, 0 cached (roc_s0.Top.0.phase_strobe 3 → 4)"
    assert points["why"] == {"kind": "new_points", "new": 2, "cached": 0, "changes": [
        {"path": "roc_s0.Top.0.phase_strobe", "before": 3, "after": 4}]}
    assert doc["points"][0]["why"]["changes"][0]["path"] == "roc_s0.Top.0.phase_strobe"
    assert doc["by_id"]["dataset:scan"]["reason"] == "new points (roc_s0.Top.0.phase_strobe 3 → 4)"
    assert doc["by_id"]["analysis:mine"]["reason"] == "input dataset changed (roc_s0.Top.0.phase_strobe 3 → 4)"
    listing = raff("plan", "scan", "-c", main, "--points").out
    assert re.search(r"Calib=0 +new point \(roc_s0.Top.0.phase_strobe 3 → 4\)", listing), listing
    edit("phase_strobe: 4", "phase_strobe: 3")

    # a daq setting
    edit("NEvents: 100}", "NEvents: 200}")
    doc = _plan(raff, main)
    assert doc["by_id"]["points:scan"]["reason"] == "2 new points, 0 cached (daq.server.NEvents 100 → 200)"
    assert doc["by_id"]["points:scan"]["why"]["changes"] == [
        {"path": "daq.server.NEvents", "before": 100, "after": 200}]
    edit("NEvents: 200}", "NEvents: 100}")

    # an analysis parameter
    edit("min_efficiency: 0.9", "min_efficiency: 0.8")
    doc = _plan(raff, main)
    mine = doc["by_id"]["analysis:mine"]
    assert mine["reason"] == "parameters changed (min_efficiency 0.9 → 0.8)"
    assert mine["why"] == {"kind": "parameters_changed",
                           "changes": [{"path": "min_efficiency", "before": 0.9, "after": 0.8}]}
    assert [n["id"] for n in doc["nodes"] if n["status"] != "cached"] == ["analysis:mine"]
    edit("min_efficiency: 0.8", "min_efficiency: 0.9")

    # analysis code
    code = libdir.root / "analyses" / "mine.py"
    edit("adc_mean.mean()", "adc_mean.median()", code)
    doc = _plan(raff, main)
    assert doc["by_id"]["analysis:mine"]["reason"] == "code changed (mine.py)"
    assert doc["by_id"]["analysis:mine"]["why"] == {"kind": "code_changed", "files": ["mine.py"]}
    edit("adc_mean.median()", "adc_mean.mean()", code)
    assert raff("plan", "all", "-c", main, "--check").code == 0

    # a calibration: first its analysis is out of date, then the scan that uses it
    edit("trim: 5", "trim: 7")
    doc = _plan(raff, main)
    assert doc["by_id"]["analysis:calib"]["reason"] == "parameters changed (trim 5 → 7)"
    waiting = doc["by_id"]["points:trimmed"]
    assert waiting["status"] == "waiting"
    assert waiting["reason"] == "waiting for calibration calib (parameters changed: trim 5 → 7)"
    assert waiting["why"]["cause"]["kind"] == "parameters_changed"
    built = raff("build", "calib", "-c", main)
    assert built.code == 0, built.err
    assert "calib: analysis started: parameters changed (trim 5 → 7)" in built.err
    assert "0 points acquired, 0 datasets and 1 analysis built" in built.out
    doc = _plan(raff, main)
    points = doc["by_id"]["points:trimmed"]
    assert points["reason"] == "calibration changed (calib): 1 new point, 0 cached (roc_s0.ch.0.trim_inv 5 → 7)"
    assert points["why"]["kind"] == "calibration_changed"
    assert points["why"]["changes"] == [{"path": "roc_s0.ch.0.trim_inv", "before": 5, "after": 7}]
    assert doc["by_id"]["dataset:trimmed"]["why"]["kind"] == "calibration_changed"
    assert doc["by_id"]["analysis:mine_trimmed"]["reason"] == "input dataset changed (roc_s0.ch.0.trim_inv 5 → 7)"
    edit("trim: 7", "trim: 5")

    # a new value of an axis: only the new point, and it says which value is new
    edit("values: [0, 100]", "values: [0, 100, 200]")
    doc = _plan(raff, main)
    points = doc["by_id"]["points:scan"]
    assert points["reason"] == "1 new point, 2 cached (axis Calib [0, 100] → [0, 100, 200])"
    new = [p for p in doc["points"] if p["procedure"] == "scan" and p["status"] == "new point"]
    assert [p["why"]["changes"] for p in new] == [[{"path": "Calib", "after": 200, "added": True}]]


def test_same_change_in_many_places_is_one_line(raff, libdir):
    main = libdir.main(libdir.daq(extra="""\
        target_settings:
          power_on_default: ./defaults/pod.yaml
          overrides: {roc_s0: {Top: {0: {phase_strobe: 3}}}, roc_s1: {Top: {0: {phase_strobe: 3}}}}
        """).replace("  target_settings:\n    power_on_default: ./defaults/pod.yaml\n", "", 1))
    assert raff("build", "scan", "-c", main).code == 0
    main.write_text(main.read_text().replace("phase_strobe: 3", "phase_strobe: 5"))
    doc = json.loads(raff("plan", "scan", "-c", main, "--json").out)
    assert doc["nodes"][0]["reason"] == "1 new point, 0 cached ({roc_s0,roc_s1}.Top.0.phase_strobe 3 → 5)"


def test_reason_text_and_data_round_trip():
    why = Reason(ReasonKind.WAITING, calibration="trim",
                 cause=Reason(ReasonKind.PARAMETERS_CHANGED, (Change("max_trim", 63, 40),)))
    assert str(why) == "waiting for calibration trim (parameters changed: max_trim 63 → 40)"
    assert Reason.from_dict(json.loads(json.dumps(why.as_dict()))) == why
    many = Reason(ReasonKind.NEW_POINTS, tuple(Change(f"a{i}", i, i + 1) for i in range(5)), more=2, new=3)
    assert str(many) == "3 new points, 0 cached (a0 0 → 1, a1 1 → 2, a2 2 → 3, +4 more)"
    assert str(Reason(ReasonKind.CODE_CHANGED, files=("analyses/gain.py",))) == "code changed (analyses/gain.py)"
    assert str(Reason(ReasonKind.NOT_BUILT)) == "not built yet"
    assert str(Change("x", before={"a": 1}, removed=True)) == 'x removed (was {"a":1})'
