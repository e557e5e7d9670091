"""Nothing lost, nothing silently wrong: damaged entries, stray processes, racing commands."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_clean_error, damage_member, emulator_pids, summary_files

SCAN = "- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]\n  range: {start: 0, stop: %d, step: 100}\n"


def journal(cache: Path) -> list[dict]:
    path = cache / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def acquired(cache: Path) -> list[str]:
    return [e["key"] for e in journal(cache) if e["event"] == "acquired"]


def plan_json(raff, main, *more) -> dict:
    r = raff("plan", "scan", "-c", main, "--json", *more)
    assert r.code in (0, 2), r.err
    return json.loads(r.out)


def start_build(main: Path, *more: str, rate: float | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RAFF_CACHE", "RAFF_CONFIG")}
    if rate:  # runs last as long as on hardware: NEvents / rate
        env["RAFF_EMULATOR_TRIGGER_RATE"] = str(rate)
    return subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "scan", "-c", str(main), *more],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cache: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(acquired(cache)) < n:
        assert time.monotonic() < deadline, "build made no progress"
        time.sleep(0.02)


def slow(libdir, points: int = 30) -> Path:
    return libdir.main(libdir.daq(parameters=SCAN % (100 * points), server_override="{NEvents: 600}"))


def test_a_damaged_measurement_is_never_used(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    before = plan_json(raff, main)["nodes"][1]["key"]
    damage_member(summary_files(cache)[0])
    for entry in (cache / "datasets").glob("*/*"):
        import shutil
        shutil.rmtree(entry)
    r = raff("build", "scan", "-c", main)
    assert r.code == 0, r.err
    assert "damaged cache entry (unreadable: Bad CRC-32 for file 'summary/c/0/0')" in r.err and "acquires it again" in r.err
    assert "1 point acquired" in r.out
    assert len(list((cache / "quarantine" / "measurements").iterdir())) == 1
    assert plan_json(raff, main)["nodes"][1]["key"] != before  # the new content, a new dataset
    assert raff("cache", "verify", "-c", main).code == 0


def test_verify_then_build_rebuilds_the_dataset(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    damage_member(summary_files(cache)[1], offset=-1)
    assert raff("cache", "verify", "-c", main).code == 1
    assert raff("plan", "scan", "-c", main, "--check").code == 2  # not "up to date"
    r = raff("build", "scan", "-c", main)
    assert r.code == 0 and "1 point acquired, 1 dataset" in r.out, r.out + r.err
    assert raff("plan", "scan", "-c", main, "--check").code == 0


@pytest.mark.parametrize("damage", ["truncate-json", "flip-table"])
def test_unreadable_dataset_is_quarantined_in_one_line(raff, libdir, damage):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    folder = next((cache / "datasets").glob("*/*"))
    if damage == "truncate-json":
        path = folder / "data.zarr" / "zarr.json"
        path.write_text(path.read_text()[:40])
    else:
        path = next(p for p in (folder / "data.zarr" / "adc_mean").rglob("*") if p.is_file() and p.name != "zarr.json")
        path.write_bytes(bytes(b ^ 0x5A for b in path.read_bytes()))
    r = raff("show", "scan", "-c", main)
    assert_clean_error(r, str(folder), "damaged cache entry", "moved to quarantine/")
    assert len(r.lines) == 1
    assert not folder.exists()
    r = raff("build", "scan", "-c", main)
    assert r.code == 0 and "0 points acquired, 1 dataset" in r.out, r.out + r.err
    assert raff("show", "scan", "-c", main).code == 0


def test_locks_and_unfinished_entries_are_cleaned(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 300))
    cache = libdir.root / ".raffinerie-cache"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stray = cache / "tmp" / f"datasets-0123456789abcdef-{dead.pid}-deadbeef"
    stray.mkdir(parents=True)
    (stray / "half-written").write_text("x")
    alive = cache / "tmp" / f"datasets-0123456789abcdef-{os.getpid()}-cafecafe"
    alive.mkdir()
    assert raff("build", "scan", "-c", main).code == 0
    assert not stray.exists() and alive.exists()  # a live writer's work is left alone
    assert sorted(p.name for p in (cache / "locks").iterdir()) == ["cache.lock"]


def test_a_truncated_journal_is_repaired(raff, libdir):
    main = libdir.main(libdir.daq(parameters=SCAN % 200))
    cache = libdir.root / ".raffinerie-cache"
    assert raff("build", "scan", "-c", main).code == 0
    path = cache / "journal.jsonl"
    kept = path.read_bytes()[:-25]  # a crash mid-line (the last line: an acquired point or a built node)
    path.write_bytes(kept)
    whole = [json.loads(line) for line in kept.split(b"\n")[:-1]]  # the lines the crash did not cut
    main = libdir.main(libdir.daq(parameters=SCAN % 400))
    assert raff("build", "scan", "-c", main).code == 0
    lines = path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # every line parses
    acquired = sum(e["event"] == "acquired" for e in whole) + 2  # and the 2 new points
    assert len([e for e in map(json.loads, lines) if e["event"] == "acquired"]) == acquired


def test_sigterm_finishes_the_point_in_flight_and_exits_143(libdir):
    main = slow(libdir)
    cache = libdir.root / ".raffinerie-cache"
    proc = start_build(main)
    wait_for(cache, 2)
    children = emulator_pids(proc.pid)
    assert children, "the embedded emulator runs as a child"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted" in err
    assert not wait_gone(children, 0.5)


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """The processes of `pids` still alive after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def test_the_emulator_dies_with_a_killed_build(libdir):
    main = slow(libdir)
    cache = libdir.root / ".raffinerie-cache"
    proc = start_build(main)
    wait_for(cache, 2)
    children = emulator_pids(proc.pid)
    assert children
    proc.kill()
    proc.communicate(timeout=30)
    assert not wait_gone(children, 5), "emulator outlived raff"


def test_random_kills_lose_nothing_and_acquire_nothing_twice(raff, libdir):
    """Pipelined builds killed at random moments (SIGKILL, SIGINT, SIGTERM), then one to finish."""
    main = slow(libdir, points=24)
    cache = libdir.root / ".raffinerie-cache"
    rng = random.Random(7)
    for trial in range(4):
        proc = start_build(main, rate=3000)  # 0.2 s per point
        time.sleep(rng.uniform(0.8, 2.0))
        proc.send_signal(rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM]))
        proc.communicate(timeout=60)
    present = len(acquired(cache))
    assert present == len(set(acquired(cache)))
    r = raff("build", "scan", "-c", main)
    assert r.code == 0, r.err
    assert present < 24 and f"{24 - present} point{'s' * (24 - present != 1)} acquired" in r.out  # exactly the missing ones
    keys = acquired(cache)
    assert len(keys) == len(set(keys)) == 24
    assert raff("cache", "verify", "-c", main).code == 0
    assert raff("plan", "scan", "-c", main, "--check").code == 0


def test_gc_waits_for_a_running_build(raff, libdir, tmp_path):
    main = slow(libdir)
    cache = libdir.root / ".raffinerie-cache"
    other = tmp_path / "other"
    other.mkdir()
    (other / "main.yaml").write_text("procedures: []\n")
    proc = start_build(main)
    wait_for(cache, 2)
    gc = raff("cache", "gc", "-c", other / "main.yaml", "--cache", cache, "--yes", "--include-measurements",
              timeout=120)
    assert gc.code == 0 and "waiting for the builds" in gc.err
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    keys = acquired(cache)
    assert len(keys) == len(set(keys)) == 30  # acquired once each, even though gc ran


def test_disk_full_names_the_file_and_keeps_the_cache_sound(libdir, raff, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(small)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        main = libdir.main(libdir.daq(parameters=SCAN % 900))
        r = raff("build", "scan", "-c", main, "--cache", small / "c")
        assert_clean_error(r, str(small / "c"), "cannot write: No space left on device")
        assert not list((small / "c" / "tmp").iterdir())  # no half entry left behind
        verify = raff("cache", "verify", "-c", main, "--cache", small / "c")
        assert verify.code == 0, verify.out
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_a_silent_emulator_start_times_out(monkeypatch):
    """An emulator that never announces its ports ends in one error within the start-up limit."""
    from raffinerie.emulator import process as module
    from raffinerie.errors import RaffError

    monkeypatch.setattr(module, "STARTUP_TIMEOUT", 1.0)
    emu = module.EmulatorProcess()
    monkeypatch.setattr(emu, "command", lambda: [sys.executable, "-c", "import time; time.sleep(60)"])
    t0 = time.monotonic()
    with pytest.raises(RaffError, match="did not start: no answer within 1 s"):
        emu.start()
    assert time.monotonic() - t0 < 5 and emu.proc is None


def test_messages_name_the_place(libdir, raff, tmp_path):
    main = libdir.main(libdir.daq(parameters=SCAN % 200))
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "locks").write_text("not a folder")
    assert_clean_error(raff("build", "scan", "-c", main, "--cache", cache), str(cache / "locks"),
                       "is a file, not the cache's locks folder")
    (cache / "locks").unlink()
    assert raff("build", "scan", "-c", main, "--cache", cache).code == 0
    assert_clean_error(raff("export", "scan", "-c", main, "--cache", cache, "-o", tmp_path / "no" / "x.csv"),
                       "the folder", "does not exist")
    for stray in ("measurements/ab/" + "g" * 64, "measurements/zz", "datasets/q"):
        (cache / stray).mkdir(parents=True)
    verify = raff("cache", "verify", "-c", main, "--cache", cache)
    assert verify.code == 0 and "0 damaged" in verify.out, verify.out
    (tmp_path / "bad.root").write_bytes(b"root" * 10)
    r = raff("raw", "summary", tmp_path / "bad.root")
    assert_clean_error(r, "bad.root", "not a readable ROOT file")
    assert len(r.lines) == 1


def test_junk_from_a_backend_is_a_backend_error():
    from raffinerie.builder.acquire import _decode
    from raffinerie.daq.session import BackendError

    with pytest.raises(BackendError, match="scan point 3: the backend sent data that do not decode") as err:
        _decode(b"\x00junk" * 30, "scan point 3", {}, 3)
    assert err.value.exit_code == 3
