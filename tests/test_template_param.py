"""The `template` parameter of raffinerie's format (config/templated.py): rendered per value,
its places grouped into columns, a place left out keeping what the configuration gives it;
the same keys as the same scan written with `keys:` and explicit points; errors at the template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_clean_error
from raffinerie.config.expand import Axis, Scan, settle
from raffinerie.config.library import Origin
from raffinerie.config.tree import KEEP

HIGHRANGE = """\
- template: |
    target:
      roc_s0:
        ch:
          {{ value }}:
            HighRange: 1
  range: {stop: 72, step: 36}
- key: [roc_s0, ReferenceVoltage, 0, Calib]
  values: [50, 100]
"""
# the same scan, by hand: ch 0 and ch 36 keep their power-on HighRange (0) where not scanned
BY_HAND = """\
- keys: [[roc_s0, ch, 0, HighRange]]
  values: [1, 0]
- keys: [[roc_s0, ch, 36, HighRange]]
  values: [0, 1]
- key: [roc_s0, ReferenceVoltage, 0, Calib]
  values: [50, 100]
"""


def _points(raff, main, name, cache):
    r = raff("plan", name, "-c", main, "--json", "--cache", cache)
    assert r.code == 0, r.err
    return [(p["key"], p["repeat"]) for p in json.loads(r.out)["points"]]


def test_a_template_scans_the_points_and_keys_of_the_same_scan_written_by_hand(libdir, raff, tmp_path):
    main = libdir.main(libdir.daq("templated", HIGHRANGE) + libdir.daq("by_hand", BY_HAND, extra="""\
        points: [[1, 0, 50], [1, 0, 100], [0, 1, 50], [0, 1, 100]]
        """))
    assert raff("validate", "-c", main).code == 0
    templated = _points(raff, main, "templated", tmp_path / "c")
    assert len(templated) == 4 and len({k for k, _ in templated}) == 4
    assert templated == _points(raff, main, "by_hand", tmp_path / "c")
    shown = raff("plan", "templated", "-c", main)
    assert "sets roc_s0.ch.0.HighRange" in shown.out and "sets roc_s0.ch.36.HighRange" in shown.out, shown.out


def test_a_template_with_a_repeat_and_a_daq_setting(libdir, raff, tmp_path):
    scan = """\
    - template: |
        target: {roc_s0: {ReferenceVoltage: {0: {Calib: {{ value * 10 }}}}}}
        daq: {server: {NEvents: {{ 100 + value }}}}
      values: [1, 2, 3]
    """
    main = libdir.main(libdir.daq("scan", scan, extra="repeat: 2\n"))
    points = _points(raff, main, "scan", tmp_path / "c")
    assert [r for _, r in points] == [0, 1] * 3 and len({k for k, _ in points}) == 6
    listed = raff("plan", "scan", "-c", main, "--points").out
    assert "Calib" in listed and "NEvents" in listed and "130" in listed, listed


def test_a_template_builds_on_the_embedded_emulator(libdir, raff):
    main = libdir.main(libdir.daq("templated", HIGHRANGE))
    r = raff("build", "templated", "-c", main, timeout=300)
    assert r.code == 0 and "4 points acquired" in r.out + r.err, r.out + r.err
    again = raff("plan", "templated", "-c", main)
    assert again.out.splitlines()[-1].startswith("4 points: 4 cached, 0 to acquire"), again.out


@pytest.mark.parametrize("template, values, needles", [
    ("target: {roc_s0: {ch: {'{{ valeu }}': {HighRange: 1}}}}", "[0]",
     ("parameters[0].template", "the template, for value 0", "valeu")),
    ("roc_s0: {ch: {'{{ value }}': {HighRange: 1}}}", "[0]",
     ("parameters[0].template", "sets 'roc_s0' at its top", "rooted at target: and/or daq:")),
    ("target: {roc_s0: {ch: {'{{ value }}': {HighRange: 7}}}}", "[0, 1]",
     ("parameters[0].template", "HighRange = 7 does not fit its 1-bit register")),
    ("target: [{{ value }}]", "[0]", ("parameters[0].template", "sets target to [0], not to a mapping of settings")),
    ("target: {roc_s0: {ch: {0: {HighRange: 1}}}}", "{stop: 0}", ("parameters[0].range", "range is empty")),
])
def test_a_wrong_template_is_one_clean_error_at_the_template(libdir, raff, tmp_path, template, values, needles):
    field = "range" if values.startswith("{") else "values"
    main = libdir.main(libdir.daq("scan", f"- template: \"{template}\"\n  {field}: {values}\n"))
    assert_clean_error(raff("validate", "-c", main), *needles)
    assert_clean_error(raff("plan", "scan", "-c", main, "--cache", tmp_path / "c"), *needles)


def test_a_template_and_explicit_points_do_not_go_together(libdir, raff):
    main = libdir.main(libdir.daq("scan", "- template: 'target: {}'\n  values: [1]\n", extra="points: [[1]]\n"))
    assert_clean_error(raff("validate", "-c", main), "points", "explicit points and a template parameter")


def test_a_place_left_out_that_nothing_configures_is_an_error_when_planned(libdir, raff, tmp_path):
    scan = "- template: \"daq: {server: {'extra_{{ value }}': 1}}\"\n  values: [a, b]\n"
    main = libdir.main(libdir.daq("scan", scan))
    assert_clean_error(raff("plan", "scan", "-c", main, "--cache", tmp_path / "c"),
                       "parameters[0].template", "sets daq.server.extra_a for some of its values only")


def test_settle_takes_each_place_left_out_from_the_base_and_splits_places_that_differ():
    origin = Origin(Path("x.yaml"))
    places = (("target", "a", "v"), ("target", "b", "v"))
    scan = Scan((Axis("v", places, [1, KEEP], origin, "template"),
                 Axis("w", (("target", "w"),), [5, 6], origin)), 1,
                ((0, 0), (0, 1), (1, 0), (1, 1)))
    same, missing = settle(scan, {"target": {"a": {"v": 0}, "b": {"v": 0}, "w": 0}})
    assert not missing and [a.values for a in same.axes] == [[1, 0], [5, 6]] and same.explicit == scan.explicit
    split, _ = settle(scan, {"target": {"a": {"v": 0}, "b": {"v": 1}, "w": 0}})
    assert [(a.name, a.places, a.values) for a in split.axes] == [
        ("v#1", places[:1], [1, 0]), ("v#2", places[1:], [1]), ("w", (("target", "w"),), [5, 6])]
    assert split.explicit == ((0, 0, 0), (0, 0, 1), (1, 0, 0), (1, 0, 1))
    _, missing = settle(scan, {"target": {"a": {"v": 0}, "w": 0}})
    assert [place for _, place in missing] == [places[1]]
    assert settle(split, {})[0] is split   # nothing left to settle

