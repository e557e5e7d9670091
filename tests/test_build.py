"""`raff build` end to end, as a user runs it, on the embedded emulator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES, assert_clean_error, damage_member, measurement_attributes, summary_files

SCAN = """\
- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
  range: {start: 0, stop: %d, step: 100}
"""


def journal(cache: Path) -> list[dict]:
    path = cache / "journal.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def acquired_keys(cache: Path) -> list[str]:
    return [e["key"] for e in journal(cache) if e["event"] == "acquired"]


def plan(raff, main, name, *more):
    result = raff("plan", name, "-c", main, "--json", *more)
    assert result.code in (0, 2), result.err
    return json.loads(result.out)


def test_example_scan_builds_and_a_rebuild_does_nothing(raff, tmp_path):
    cache = tmp_path / "cache"
    main = EXAMPLES / "main_config.yaml"
    first = raff("build", "timewalk_scan", "-c", main, "--cache", cache)
    assert first.code == 0, first.err
    assert "timewalk_scan: 80 points acquired, 1 dataset" in first.out
    assert len(acquired_keys(cache)) == 80
    second = raff("build", "timewalk_scan", "-c", main, "--cache", cache)
    assert second.code == 0 and "timewalk_scan is up to date" in second.out
    assert len(acquired_keys(cache)) == 80
    assert raff("plan", "timewalk_scan", "-c", main, "--cache", cache, "--check").code == 0
    shown = raff("show", "timewalk_scan", "-c", main, "--cache", cache)
    assert shown.code == 0, shown.err
    assert "18,720 rows" in shown.out and "phase_strobe" in shown.out


def test_plan_says_what_build_does_and_new_range_acquires_only_new_points(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    cache = libdir.root / ".raffinerie-cache"
    before = plan(raff, main, "scan")
    result = raff("build", "scan", "-c", main)
    assert result.code == 0, result.err
    assert sorted(acquired_keys(cache)) == sorted(p["key"] for p in before["points"])
    main = libdir.main(libdir.daq(parameters=SCAN % 500))
    wider = plan(raff, main, "scan")
    assert wider["summary"]["to_acquire"] == 2
    assert raff("build", "scan", "-c", main).code == 0
    keys = acquired_keys(cache)
    assert len(keys) == 5 and len(set(keys)) == 5


def test_a_second_procedure_reuses_shared_points(raff, libdir):
    one = "- key: [roc_s0, Top, 0, phase_strobe]\n  values: [1, 2, 3]\n"
    two = "- key: [roc_s0, Top, 0, phase_strobe]\n  values: [3, 4]\n"
    main = libdir.main(libdir.daq("a", parameters=one) + libdir.daq("b", parameters=two))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "a", "-c", main).code == 0
    result = raff("build", "b", "-c", main)
    assert result.code == 0 and "1 point acquired" in result.out
    assert len(acquired_keys(cache)) == 4


def test_profile_prints_throughput_and_the_cpu_of_raff_and_the_emulator(raff, libdir):
    import re

    main = libdir.main(libdir.daq(parameters=SCAN % 500))
    result = raff("build", "scan", "-c", main, "--profile")
    assert result.code == 0, result.err
    assert re.search(r"acquisition: 5 points in [\d.]+ s \([\d.]+ points/s\)", result.out), result.out
    cpu = re.search(r"CPU per point: raff ([\d.]+) ms, embedded emulator ([\d.]+) ms .*; "
                    r"(\d+) cores?, so at most (\d+) points/s", result.out)
    assert cpu, result.out
    raff_ms, emulator_ms, cores, bound = map(float, cpu.groups())
    assert raff_ms > 0 and emulator_ms > 0  # both really measured (the emulator from /proc)
    assert abs(bound - cores * 1e3 / (raff_ms + emulator_ms)) <= 0.05 * bound + 1  # from the rounded figures


def test_dataset_columns_repeats_and_data_columns(raff, libdir, tmp_path):
    import pandas as pd

    main = libdir.main(libdir.daq(parameters=SCAN % 200, extra="repeat: 2\n")
                       + libdir.daq("slim", parameters=SCAN % 200,
                                    extra="data_columns: [chip, channel, channeltype, adc_mean, Calib]\n"))
    assert raff("build", "scan", "-c", main).code == 0
    out = tmp_path / "scan.csv"
    assert raff("export", "scan", "-c", main, "-o", out).code == 0
    frame = pd.read_csv(out)
    assert len(frame) == 2 * 2 * 234
    assert set(frame["repeat"]) == {0, 1} and sorted(set(frame["Calib"])) == [0, 100]
    assert {"trim_inv", "Inv_vref", "phase_strobe", "HighRange", "NEvents", "point"} <= set(frame.columns)
    calib_rows = frame[(frame.channeltype == 0)]
    assert (calib_rows.groupby("point")["Calib"].nunique() == 1).all()
    assert raff("build", "slim", "-c", main).code == 0
    slim = tmp_path / "slim.csv"
    assert raff("export", "slim", "-c", main, "-o", slim).code == 0
    assert list(pd.read_csv(slim).columns) == ["chip", "channel", "channeltype", "adc_mean", "Calib"]


def test_exports_are_readable_by_zarr_and_uproot(raff, libdir, tmp_path):
    import uproot
    import zarr

    main = libdir.main(libdir.daq(parameters=SCAN % 200))
    assert raff("build", "scan", "-c", main).code == 0
    assert raff("export", "scan", "-c", main, "-o", tmp_path / "d.zarr").code == 0
    group = zarr.open_group(tmp_path / "d.zarr", mode="r")
    assert group["adc_mean"].shape == (2, 234)  # the scan's axis x readout slots, as to_xarray() has it
    assert group["adc_mean"].metadata.dimension_names == ("Calib", "slot")
    assert raff("export", "scan", "-c", main, "-o", tmp_path / "d.root").code == 0
    with uproot.open(tmp_path / "d.root") as f:
        assert f["dataset"].num_entries == 468
        assert np.allclose(f["dataset"]["adc_mean"].array(library="np"), group["adc_mean"][:].ravel())
    assert_clean_error(raff("export", "scan", "-c", main, "-o", tmp_path / "d.xlsx"), "must be .csv")


def test_show_before_build_explains(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 200))
    assert_clean_error(raff("show", "scan", "-c", main), "not built", "raff build scan")


def _slow_library(libdir, points: int = 40) -> Path:
    daq = libdir.daq("slow", parameters=SCAN % (100 * points), server_override="{NEvents: 600}")
    return libdir.main(daq)


def _start_build(main: Path, *more) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "slow", "-c", str(main), *more],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cache: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(acquired_keys(cache)) < n:
        assert time.monotonic() < deadline, "build made no progress"
        time.sleep(0.05)


def test_sigkill_loses_at_most_the_point_in_flight(raff, libdir):
    main = _slow_library(libdir)
    cache = libdir.root / ".raffinerie-cache"
    proc = _start_build(main)
    _wait_for(cache, 5)
    proc.kill()
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    kept = len(acquired_keys(cache))
    assert 5 <= kept < 40
    result = raff("build", "slow", "-c", main)
    assert result.code == 0, result.err
    keys = acquired_keys(cache)
    # none acquired twice; a kill between a point's rename into the cache and its journal line
    # loses that line (never the point, which the rebuild finds cached)
    assert len(set(keys)) == len(keys) and len(keys) >= 39
    planned = plan(raff, main, "slow")["points"]
    assert len(planned) == 40 and all(p["status"] == "cached" for p in planned), planned
    verify = raff("cache", "verify", "-c", main)
    assert verify.code == 0 and "0 damaged" in verify.out
    assert raff("plan", "slow", "-c", main, "--check").code == 0


def test_ctrl_c_stops_after_the_point_in_flight(raff, libdir):
    main = _slow_library(libdir)
    cache = libdir.root / ".raffinerie-cache"
    proc = _start_build(main)
    _wait_for(cache, 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "kept" in err and "Traceback" not in err
    kept = len(acquired_keys(cache))
    doc = plan(raff, main, "slow")
    assert doc["summary"]["cached"] == kept and doc["summary"]["to_acquire"] == 40 - kept
    assert raff("build", "slow", "-c", main).code == 0
    assert len(set(acquired_keys(cache))) == 40 == len(acquired_keys(cache))


def test_two_concurrent_builds_never_acquire_a_point_twice(raff, libdir):
    overlap = SCAN % 3000
    other = """\
- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
  range: {start: 1000, stop: 4000, step: 100}
"""
    main = libdir.main(libdir.daq("first", parameters=overlap) + libdir.daq("second", parameters=other))
    cache = libdir.root / ".raffinerie-cache"
    procs = [subprocess.Popen([sys.executable, "-m", "raffinerie", "build", name, "-c", str(main)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("first", "second")]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    keys = acquired_keys(cache)
    assert len(keys) == len(set(keys)) == 40  # 30 + 30 with 20 shared
    assert raff("cache", "verify", "-c", main).code == 0
    for name in ("first", "second"):
        assert raff("plan", name, "-c", main, "--check").code == 0


@pytest.fixture
def faulty_emulator(tmp_path):
    """A `raff emulator` with fault switches, and a network file for it."""
    started = []

    def start(*faults: str) -> Path:
        proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "emulator", "--server-port", "0",
                                 "--target-port", "0", "--data-port", "0", "--client-port", "0",
                                 "--generation", "2021", "--announce", *faults],
                                stdout=subprocess.PIPE, text=True)
        started.append(proc)
        ports = json.loads(proc.stdout.readline())
        net = tmp_path / f"net{len(started)}.yaml"
        net.write_text(f"server: {{hostname: 127.0.0.1, port: {ports['server']}}}\n"
                       f"target: {{hostname: 127.0.0.1, port: {ports['target']}}}\n"
                       f"data: {{hostname: 127.0.0.1, port: {ports['data']}}}\n"
                       "board: test-board\ntimeout: 1.5\n")
        return net

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()


def test_dropped_stream_stops_the_build_and_keeps_what_was_committed(raff, libdir, faulty_emulator):
    main = libdir.main(libdir.daq(parameters=SCAN % 500))
    good = faulty_emulator()
    assert raff("build", "scan", "-c", main, "--network", good).code == 0
    cache = libdir.root / ".raffinerie-cache"
    main = libdir.main(libdir.daq(parameters=SCAN % 800))
    bad = faulty_emulator("--drop-after", "20")
    result = raff("build", "scan", "-c", main, "--network", bad)
    assert_clean_error(result, "data stream from 127.0.0.1:", "stopped after", code=3)
    assert len(acquired_keys(cache)) == 5
    assert plan(raff, main, "scan", "--network", str(bad))["summary"]["cached"] == 5


def test_backend_that_stops_answering_is_a_clear_error(raff, libdir, faulty_emulator):
    main = libdir.main(libdir.daq(parameters=SCAN % 500))
    net = faulty_emulator("--silent-after", "4")
    result = raff("build", "scan", "-c", main, "--network", net)
    assert_clean_error(result, "did not answer", "within 1.5 s", code=3)


def test_backend_refusing_a_value_names_it(raff, libdir, faulty_emulator):
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, Top, 0, phase_strobe]\n  values: [1]\n"))
    net = faulty_emulator("--error-on", "initialize")
    assert_clean_error(raff("build", "scan", "-c", main, "--network", net),
                       "refused 'initialize'", code=3)


def test_corrupt_halves_are_recorded_not_fatal(raff, libdir, faulty_emulator):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    net = faulty_emulator("--bitslip", "0.02")
    r = raff("build", "scan", "-c", main, "--network", net, "--max-corrupt", "10")
    assert r.code == 0, r.err
    assert r.err.count("corrupt halves in") >= 3 and "corrupt halves left out)" in r.out
    cache = libdir.root / ".raffinerie-cache"
    metas = measurement_attributes(cache)
    assert len(metas) == 3 and all(m["corrupt_halves"] > 0 for m in metas)
    assert all(m["identity"] == "test-board" for m in metas)


@pytest.mark.parametrize("bitslip", ["1.0", "0.3"])
def test_a_garbled_backend_stops_the_build(raff, libdir, faulty_emulator, bitslip):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    net = faulty_emulator("--bitslip", bitslip)
    r = raff("build", "scan", "-c", main, "--network", net)
    assert_clean_error(r, "scan point 0 (Calib 0)", "% corrupt halves (limit 5.0%, --max-corrupt)",
                       "not committed", code=3)
    assert not list((libdir.root / ".raffinerie-cache" / "measurements").glob("*/*"))


def test_verify_quarantines_damage_and_the_next_build_reacquires(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    damage_member(summary_files(cache)[0], offset=10)
    result = raff("cache", "verify", "-c", main)
    assert result.code == 1 and "damaged: content changed: measurement.zarr.zip" in result.out
    assert plan(raff, main, "scan")["summary"]["to_acquire"] == 1
    assert raff("build", "scan", "-c", main).code == 0
    assert raff("cache", "verify", "-c", main).code == 0
    assert list((cache / "quarantine" / "measurements").iterdir())


def test_cache_ls_and_gc(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    main = libdir.main(libdir.daq(parameters=SCAN % 200))
    assert raff("build", "scan", "-c", main).code == 0
    listing = raff("cache", "ls", "-c", main)
    assert listing.code == 0 and "measurements" in listing.out and "3 entries" in listing.out
    dry = raff("cache", "gc", "-c", main)
    assert dry.code == 0 and "would remove dataset" in dry.out and "measurements are kept" in dry.out
    assert len(list((cache / "datasets").glob("*/*"))) == 2
    assert raff("cache", "gc", "-c", main, "--yes").code == 0
    assert len(list((cache / "datasets").glob("*/*"))) == 1
    assert len(list((cache / "measurements").glob("*/*"))) == 3
    assert raff("cache", "gc", "-c", main, "--yes", "--include-measurements").code == 0
    assert len(list((cache / "measurements").glob("*/*"))) == 2
    assert raff("plan", "scan", "-c", main, "--check").code == 0


def test_events_mode_keeps_the_event_table(raff, libdir, tmp_path):
    import pandas as pd

    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, Top, 0, phase_strobe]\n  values: [1, 2]\n",
                                  extra="mode: events\n"))
    assert raff("build", "scan", "-c", main).code == 0
    out = tmp_path / "events.csv"
    assert raff("export", "scan", "-c", main, "-o", out).code == 0
    data = pd.read_csv(out)
    assert len(data) == 2 * 100 * 234  # points x events x channels
    assert {"event", "adc", "toa", "tot", "corruption", "phase_strobe", "trim_inv"} <= set(data.columns)
    assert sorted(data.groupby("point").phase_strobe.first()) == [1, 2]


def test_unusable_cache_path_is_one_clear_error(raff, libdir):
    main = libdir.main(libdir.daq())
    blocker = libdir.root / "not-a-folder"
    blocker.write_text("x")
    result = raff("build", "scan", "-c", main, "--cache", blocker / "cache")
    assert_clean_error(result, "not-a-folder")


def test_unresolvable_backend_host_is_one_clear_error(raff, libdir):
    main = libdir.main(libdir.daq())
    net = libdir.write("net.yaml", "server: {hostname: 'no host!', port: 6000}\n"
                                   "target: {hostname: 'no host!', port: 5555}\ntimeout: 0.5\n")
    result = raff("build", "scan", "-c", main, "--network", net)
    assert "Traceback" not in result.err and result.code == 3, result.err
