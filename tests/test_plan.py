"""`raff plan`: what a build would do, and why; keys agree with the resolved configs."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import EXAMPLES, assert_clean_error

from raffinerie.config.expand import expand
from raffinerie.config.keys import point_key
from raffinerie.config.library import load_library
from raffinerie.config.network import emulator_identity
from raffinerie.config.resolve import ConfigFiles, base_config, resolve_point

SCAN = """\
- key: [[roc_s0, roc_s1, roc_s2], Top, 0, phase_strobe]
  values: [0, 4]
- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
  range: {start: 0, stop: %d, step: 100}
"""


def plan_json(raff, main, name="scan", *more):
    result = raff("plan", name, "-c", main, "--json", *more)
    assert result.code in (0, 2), result.err
    return json.loads(result.out)


def fake_cached(cache: Path, kind: str, keys: list[str]) -> None:
    """Entries as the store lays them out (a directory per key)."""
    for key in keys:
        folder = cache / kind / key[:2] / key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifest.json").write_text('{"files": {}}')


def test_example_workflow_plan_shows_the_tree_and_reasons(raff):
    result = raff("plan", "characterisation", "-c", EXAMPLES / "main_config.yaml",
                  "--cache", "/nonexistent/raff-cache")
    assert result.code == 0, result.err
    out = result.out
    assert "analysis timewalk" in out and "dataset timewalk_scan" in out
    assert "80 new points, 0 cached" in out
    assert "sets {roc_s0,roc_s1,roc_s2}.ReferenceVoltage.{0,1}.Calib (6 places)" in out
    assert "133 points: 0 cached, 132 to acquire, 1 waiting for a calibration" in out


def test_json_plan_has_summary_points_and_nodes(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    doc = plan_json(raff, main)
    assert doc["procedure"] == "scan"
    assert doc["summary"] == {"total": 6, "cached": 0, "to_acquire": 6, "waiting": 0,
                              "nodes_to_build": 2}
    assert [p["coordinates"] for p in doc["points"][:4]] == [
        {"phase_strobe": 0, "Calib": 0}, {"phase_strobe": 0, "Calib": 100},
        {"phase_strobe": 0, "Calib": 200}, {"phase_strobe": 4, "Calib": 0}]
    assert {p["status"] for p in doc["points"]} == {"new point"}
    assert len({p["key"] for p in doc["points"]}) == 6
    assert [n["id"] for n in doc["nodes"]] == ["points:scan", "dataset:scan"]


def test_plan_keys_are_the_keys_of_the_fully_resolved_configs(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300, extra="repeat: 2\n"))
    doc = plan_json(raff, main, "scan", "--cache", str(libdir.root / "c"))
    lib = load_library(main)
    proc = lib.procedures["scan"]
    base = base_config(proc, ConfigFiles())
    scan = expand(proc)
    expected = []
    for coordinate in scan.coordinates():
        config = resolve_point(base, scan.patch(coordinate))
        for r in range(2):
            expected.append(point_key(config["target"], config["daq"], emulator_identity(),
                                      "summary", r).hex())
    assert [p["key"] for p in doc["points"]] == expected


def test_check_exit_codes_and_cached_points(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    cache = libdir.root / ".raffinerie-cache"
    doc = plan_json(raff, main)
    assert raff("plan", "scan", "-c", main, "--check").code == 2
    fake_cached(cache, "measurements", [p["key"] for p in doc["points"][:4]])
    doc = plan_json(raff, main)
    assert doc["summary"]["cached"] == 4 and doc["summary"]["to_acquire"] == 2
    assert [p["status"] for p in doc["points"]][3:5] == ["cached", "new point"]
    fake_cached(cache, "measurements", [p["key"] for p in doc["points"]])
    doc = plan_json(raff, main)
    assert doc["nodes"][0]["status"] == "cached"
    assert doc["nodes"][1]["reason"] == "not built yet"
    fake_cached(cache, "datasets", [doc["nodes"][1]["key"]])
    result = raff("plan", "scan", "-c", main, "--check")
    assert result.code == 0, result.out
    assert "up to date" in result.out


def test_a_wider_range_acquires_only_the_new_points(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    cache = libdir.root / ".raffinerie-cache"
    fake_cached(cache, "measurements", [p["key"] for p in plan_json(raff, main)["points"]])
    main = libdir.main(libdir.daq(parameters=SCAN % 500))
    doc = plan_json(raff, main)
    assert doc["summary"] == {"total": 10, "cached": 6, "to_acquire": 4, "waiting": 0,
                              "nodes_to_build": 2}


def test_cache_location_from_option_and_environment(raff, libdir, tmp_path):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    keys = [p["key"] for p in plan_json(raff, main)["points"]]
    elsewhere = tmp_path / "elsewhere"
    fake_cached(elsewhere, "measurements", keys)
    assert plan_json(raff, main, "scan", "--cache", str(elsewhere))["summary"]["cached"] == 6
    result = raff("plan", "scan", "-c", main, "--json", env={"RAFF_CACHE": str(elsewhere)})
    assert json.loads(result.out)["summary"]["cached"] == 6


def test_points_waiting_for_a_calibration(raff, libdir):
    main = libdir.main(libdir.daq("trim_scan", parameters="- key: [roc_s0, ch, 0, trim_inv]\n"
                                                          "  values: [0, 8]\n")
                       + "- {name: trim, type: analysis, daq: trim_scan, module: builtin.pedestal_trim}\n"
                       + libdir.daq("trimmed", extra="calibration: trim\n"))
    result = raff("plan", "trimmed", "-c", main)
    assert result.code == 0, result.err
    assert "calibration trim not built yet" in result.out
    assert "2 new points" in result.out  # the trim scan itself
    doc = plan_json(raff, main, "trimmed")
    assert doc["summary"]["waiting"] == 1
    assert [n["status"] for n in doc["nodes"]][-1] == "waiting"
    assert doc["points"][-1] == {"procedure": "trimmed", "index": 0, "key": None,
                                 "coordinates": {}, "repeat": 0, "status": "waiting"}


def test_unknown_procedure_lists_the_known_ones(raff):
    result = raff("plan", "pedestl", "-c", EXAMPLES / "main_config.yaml")
    assert_clean_error(result, "unknown procedure 'pedestl'", "known: ", "pedestal_run",
                       "characterisation")


def test_plan_refuses_an_invalid_library(raff, libdir):
    main = libdir.main(libdir.daq(extra="calibration: nope\n"))
    assert_clean_error(raff("plan", "scan", "-c", main), "main.yaml:8", "'nope'")


def test_same_point_in_two_procedures_has_one_key(raff, libdir):
    one = "- key: [roc_s0, Top, 0, phase_strobe]\n  values: [1, 2, 3]\n"
    two = "- key: [roc_s0, Top, 0, phase_strobe]\n  values: [3, 4]\n"
    main = libdir.main(libdir.daq("a", parameters=one) + libdir.daq("b", parameters=two))
    a = plan_json(raff, main, "a")["points"]
    b = plan_json(raff, main, "b")["points"]
    assert a[2]["key"] == b[0]["key"]
    assert a[0]["key"] != b[1]["key"]


def test_network_file_changes_the_identity(raff, libdir):
    main = libdir.main(libdir.daq())
    net = libdir.write("net.yaml", "server: {hostname: localhost, port: 6000}\n"
                                   "target: {hostname: localhost, port: 5555}\nboard: LD-0042\n")
    emulated = plan_json(raff, main)
    real = plan_json(raff, main, "scan", "--network", str(net))
    assert real["identity"] == "LD-0042"
    assert real["points"][0]["key"] != emulated["points"][0]["key"]


def test_bad_network_file(raff, libdir):
    main = libdir.main(libdir.daq())
    net = libdir.write("net.yaml", "server: {hostname: localhost, port: 99999}\n"
                                   "target: {hostname: localhost, port: 5555}\n")
    assert_clean_error(raff("plan", "scan", "-c", main, "--network", net),
                       "net.yaml:1: server.port", "must be <= 65535")
    assert_clean_error(raff("plan", "scan", "-c", main, "--network", libdir.root / "none.yaml"),
                       "network file not found")


def test_plan_dot_is_graphviz_coloured_by_status(raff, libdir):
    import shutil
    import subprocess

    main = libdir.main(libdir.daq("trim_scan", parameters="- key: [roc_s0, ch, 0, trim_inv]\n  values: [0, 8]\n")
                       + libdir.daq("trimmed", extra="calibration: trim\n")
                       + "- {name: trim, type: analysis, daq: trim_scan, module: builtin.pedestal_trim}\n"
                       + "- {name: ped, type: analysis, daq: trimmed, module: builtin.pedestal}\n")
    cache = libdir.root / ".raffinerie-cache"
    keys = [p["key"] for p in plan_json(raff, main, "ped")["points"] if p["key"]]
    fake_cached(cache, "measurements", keys)
    r = raff("plan", "ped", "-c", main, "--dot")
    assert r.code == 0, r.err
    dot = r.out
    assert dot.startswith('digraph "ped" {') and dot.rstrip().endswith("}")
    assert '"points:trim_scan" [label="points trim_scan\\ncached: all 2 points cached' in dot
    assert 'fillcolor="#b8e0a8"' in dot and 'fillcolor="#f6c26b"' in dot and 'fillcolor="#d0d0d0"' in dot
    assert '"analysis:trim" -> "points:trimmed";' in dot and '"dataset:trimmed" -> "analysis:ped";' in dot
    if shutil.which("dot") is None:
        return  # the text is checked; rendering needs Graphviz (apt-get install graphviz)
    svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60)
    assert svg.returncode == 0, svg.stderr
    assert "<svg" in svg.stdout and "analysis trim" in svg.stdout and "#f6c26b" in svg.stdout


def test_cache_gc_names_and_removes_stale_output_folders(raff, libdir):
    main = libdir.main(libdir.daq() + "- {name: ped, type: analysis, daq: scan, module: builtin.pedestal}\n")
    out = libdir.root / "raff-out"
    (out / "ped").mkdir(parents=True)
    (out / "ped" / "summary.csv").write_text("a\n1\n")
    (out / "renamed_analysis").mkdir()
    (out / "renamed_analysis" / "summary.csv").write_text("a\n1\n")
    (out / "ped.html").write_text("<html></html>")  # files (reports) are not folders of analyses
    dry = raff("cache", "gc", "-c", main)
    assert dry.code == 0, dry.err
    assert f"would remove output folder {out / 'renamed_analysis'} (no procedure of the library writes it)" in dry.out
    assert "ped " not in dry.out.replace("renamed", "") and "1 output folder" in dry.out
    assert (out / "renamed_analysis").is_dir()
    done = raff("cache", "gc", "-c", main, "--yes")
    assert done.code == 0, done.err
    assert "removing output folder" in done.out
    assert not (out / "renamed_analysis").exists()
    assert (out / "ped" / "summary.csv").is_file() and (out / "ped.html").is_file()
    assert "output folder" not in raff("cache", "gc", "-c", main).out


def test_validate_takes_cache_like_the_other_commands_and_names_the_format(raff, libdir, tmp_path):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    r = raff("validate", "-c", main, "--cache", tmp_path / "cache")
    assert r.code == 0, r.err
    assert "valid (Datenraffinerie 0.1.2 format): 1 procedure, 0 workflows in 1 file; 0 errors, 0 warnings" in r.out
