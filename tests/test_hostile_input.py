"""Hostile or mistaken input: one line each, bounded time, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, assert_clean_error

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


def test_alias_bomb_is_refused_quickly(libdir, raff):
    libdir.write("bomb.yaml", BOMB)
    main = libdir.write("main.yaml", "libraries: [./bomb.yaml]\n")
    t0 = time.monotonic()
    r = raff("validate", "-c", main, timeout=30)
    assert time.monotonic() - t0 < 10
    assert_clean_error(r, "bomb.yaml", "expands to more than 10,000,000 values")


def test_deep_nesting_symlink_loops_and_special_files(libdir, raff, tmp_path):
    libdir.write("deep.yaml", "a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n")
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    os.mkfifo(tmp_path / "fifo.yaml")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    for name, needle in (("deep.yaml", "nested too deeply"), ("loop.yaml", "symbolic links"),
                         ("fifo.yaml", "not a regular file"), ("zero.yaml", "not a regular file")):
        main = libdir.write("main.yaml", f"libraries: [./{name}]\n")
        r = raff("validate", "-c", main, timeout=30)
        assert_clean_error(r, name, needle)


def test_duplicate_keys_name_both_places(libdir, raff):
    proc = libdir.daq("scan").replace("  daq_settings:\n", "  name: scan2\n  daq_settings:\n")
    main = libdir.main(proc)
    r = raff("validate", "-c", main)
    assert_clean_error(r, "main.yaml:", "key 'name' given twice (line 2", "YAML would keep the last one")
    libdir.write("defaults/daq.yaml", "server: {NEvents: 50, NEvents: 500}\nclient: {}\n")
    r = raff("validate", "-c", libdir.main(libdir.daq("scan")))
    assert_clean_error(r, "daq.yaml:1", "key 'NEvents' given twice")


@pytest.mark.parametrize("value", ["-5", "0", "abc", "1000000000000", "2.5"])
def test_absurd_event_counts_are_refused(libdir, raff, value):
    main = libdir.main(libdir.daq("scan", server_override=f"{{NEvents: {value}}}"))
    r = raff("validate", "-c", main)
    assert_clean_error(r, "server_override.NEvents", "is not a whole number from 1 to 10,000,000")


def test_absurd_chip_count_is_refused(libdir, raff):
    libdir.write("defaults/daq.yaml", "server: {NChips: 100, NEvents: 10}\nclient: {}\n")
    r = raff("validate", "-c", libdir.main(libdir.daq("scan")))
    assert_clean_error(r, "daq.yaml:1", "server.NChips", "not a whole number from 1 to 6")


@pytest.mark.parametrize("value,needle", [(".inf", "must be <= 3600"), (".nan", "nan is not a number"),
                                          ("0", "must be > 0"), ("'1e300'", "must be <= 3600")])
def test_absurd_network_timeouts_are_refused(libdir, raff, value, needle):
    main = libdir.main(libdir.daq("scan"))
    net = libdir.write("net.yaml", "server: {hostname: h, port: 6000}\ntarget: {hostname: h, port: 5555}\n"
                                   f"timeout: {value}\n")
    r = raff("plan", "scan", "-c", main, "--network", net)
    assert_clean_error(r, "net.yaml:3", needle)


def test_a_trillion_points_are_refused_early_with_the_count(libdir, raff):
    main = libdir.main(libdir.daq("scan", """\
        - key: [roc_s0, ReferenceVoltage, 0, Calib]
          range: {start: 0, stop: 4096}
        - key: [roc_s0, ch, 0, trim_inv]
          range: {start: 0, stop: 64}
        - key: [roc_s1, ch, 0, trim_inv]
          range: {start: 0, stop: 64}
        """))
    t0 = time.monotonic()
    r = raff("plan", "scan", "-c", main)
    assert time.monotonic() - t0 < 10
    assert_clean_error(r, "'scan' has 16,777,216 points", "limit of 10,000,000", "--max-points")
    r = raff("validate", "-c", main, "--max-points", "20000000")
    assert r.code == 0, r.out + r.err


def test_unknown_data_columns_are_named(libdir, raff, tmp_path):
    main = libdir.main(libdir.daq("scan", extra="data_columns: [chip, channel, adc_mean, adc_means]\n"))
    libdir.write("defaults/daq.yaml", "server: {NChips: 3, NEvents: 5, zmqPushPull_port: 8888}\nclient: {}\n")
    r = raff("build", "scan", "-c", main, "--cache", tmp_path / "cache", timeout=120)
    assert_clean_error(r, "main.yaml", "data_columns names 'adc_means'")


def test_broken_pipe_exits_quietly(libdir, tmp_path):
    main = libdir.main(libdir.daq("scan", """\
        - key: [roc_s0, ReferenceVoltage, 0, Calib]
          range: {start: 0, stop: 4000}
        """))
    cmd = (f"{sys.executable} -m raffinerie plan scan -c {main} --cache {tmp_path}/c --points | head -1; "
           "exit ${PIPESTATUS[0]}")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.count("\n") == 1


@pytest.mark.parametrize("name", ["../../x", "/abs/path", "a/b", ""])
def test_import_names_that_would_escape_are_refused(libdir, raff, tmp_path, name):
    main = libdir.main(libdir.daq("scan"))
    before = main.read_text()
    runs = tmp_path / "runs"
    runs.mkdir()
    r = raff("import", runs, "--name", name, "-c", main, "--cache", tmp_path / "cache")
    assert_clean_error(r, "a procedure name is letters")
    assert main.read_text() == before
    assert not (libdir.root / "imported").exists() and not (tmp_path / "x").exists()
