"""The Datenraffinerie 0.1.2 configuration library (skips without ../shared)."""

from __future__ import annotations

import json

from conftest import DR012, assert_clean_error, shared


def test_datenraffinerie_test_library_validates(raff):
    main = shared("reference", "datenraffinerie-0.1.2", "tests", "configuration", "main_config.yaml")
    result = raff("validate", "-c", main, "--strict")
    assert result.code == 0, result.out + result.err


def test_timewalk_scan_plans_64_points_in_6_places(raff, tmp_path):
    main = shared("reference", "datenraffinerie-0.1.2", "tests", "configuration", "main_config.yaml")
    result = raff("plan", "timewalk_scan", "-c", main, "--cache", tmp_path / "cache")
    assert result.code == 0, result.err
    assert "range(0, 2048, step 32): 64 values" in result.out
    assert "(6 places)" in result.out
    assert "64 points: 0 cached, 64 to acquire" in result.out
    doc = json.loads(raff("plan", "timewalk_scan", "-c", main, "--json",
                          "--cache", tmp_path / "cache").out)
    assert doc["summary"]["total"] == 64
    assert [p["coordinates"]["Calib"] for p in doc["points"]] == list(range(0, 2048, 32))


def test_old_example_library_fails_with_one_line_per_problem(raff):
    main = shared("reference", "datenraffinerie-0.1.2", "examples", "main_config.yaml")
    result = raff("validate", "-c", main)
    assert_clean_error(result)
    errors = [l for l in result.out.splitlines() if ": " in l and "warning" not in l
              and "invalid:" not in l]
    assert len(errors) == 8, result.out
    assert any("'injection_scan' takes its calibration from 'pedestal_calibration'" in l for l in errors)
    assert any("'timewalk_scan' takes its calibration from 'pedestal_calibration'" in l for l in errors)
    assert any("workflow 'production_test' names unknown procedure 'timewalk_analysis'" in l
               for l in errors)
    assert any("procedure 'example_analysis': module 'example_analysis'" in l for l in errors)
    # keys the chips do not have (the chips would refuse them): errors, one line per scan key
    keys = [l for l in errors if "is in neither the power-on default nor the HGCROCv3 register map" in l]
    assert len(keys) == 4
    assert any("level1_key1.level2_key2.CalibDAC" in l for l in keys)
    assert any("roc_s0.ch.pedestal_vref (and 2 more places)" in l for l in keys)
    for line in errors:
        assert line.split(":")[1].isdigit(), line  # file:line: ...


def test_real_power_on_default_holds_every_parameter_of_the_table():
    import yaml

    from raffinerie.config.parameters import load_table
    from raffinerie.config.tree import normalize

    pod = shared("reference", "datenraffinerie-0.1.2", "tests", "configuration", "defaults",
                 "V3LDHexaboard-poweron-default.yaml")
    real = normalize(yaml.load(pod.read_text(), Loader=yaml.CSafeLoader))
    ours = load_table().power_on_default()

    def paths(tree, prefix=()):
        for k, v in tree.items():
            if isinstance(v, dict):
                yield from paths(v, prefix + (k,))
            else:
                yield prefix + (k,)

    assert set(paths(real)) == set(paths(ours))
    assert DR012.exists()
