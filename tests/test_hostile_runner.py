"""Hostile tests of running analyses and reporting them (issue 27).

Distilleries that misbehave (leave children behind, write the cache's own
file names, declare plots of one name in several folders, fill the disk),
a `raff build` killed with SIGKILL or sent SIGTERM twice, and a cache entry
whose `meta.json` names files outside the entry. Every test ends by checking
that no process carrying its marker survives.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from conftest import assert_clean_error

PNG = b"\x89PNG\r\n\x1a\n"  # the PNG signature: enough for a browser to try, and for the report


def library(libdir, output: str, run: str, head: str = ""):
    """A one-point scan (5 events) and the analysis `faulty` of it, written by the test."""
    libdir.write("analyses/faulty.py", textwrap.dedent(head) + textwrap.dedent(f"""\
        class faulty:
            def __init__(self, parameters):
                self.parameters = parameters

            def output(self):
                {output}

            def run(self, data, output_dir):
        """) + textwrap.indent(textwrap.dedent(run), " " * 8))
    libdir.write("defaults/daq.yaml", "server: {NChips: 3, NEvents: 5, zmqPushPull_port: 8888}\nclient: {}\n")
    return libdir.main(libdir.daq("scan") + "- {name: faulty, type: analysis, daq: scan}\n")


def env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("RAFF_CACHE", "RAFF_CONFIG")}


def with_marker(pids: list[int], marker: str) -> list[int]:
    return [pid for pid in pids if marker in _cmdline(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (a zombie is not: it has ended, only its parent has not reaped it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def children(pid: int) -> list[int]:
    out = []
    for other in all_pids():
        try:
            stat = Path(f"/proc/{other}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(other)
    return out


def survivors(marker: str, also: list[int] = (), seconds: float = 5.0) -> list[str]:
    """Command lines of processes carrying `marker` (or among `also`) still alive after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        left = [p for p in with_marker(all_pids(), marker) + list(also) if _alive(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    lines = [_cmdline(p) for p in left]
    for pid in left:  # do not leave them to the next test
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return lines


def wait_for(predicate, seconds: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def spawn_child(marker: str) -> str:
    """Distillery code that starts a long-lived child carrying `marker` and does not wait for it."""
    # its own output goes nowhere: a child holding raff's stdout would hang the test's pipe, not show
    return (f"import subprocess, sys\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1000)', {marker!r}],\n"
            f"                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n")


GOOD = 'return {"summary": "s.csv", "plots": [], "calibration": None}'
SUMMARY = "(output_dir / 's.csv').write_text('chip,flag\\n0,ok\\n')\n"


# -- item 18: no process outlives raff -------------------------------------------------------

def test_a_child_of_a_distillery_does_not_outlive_the_build(libdir, raff):
    marker = f"raff-hostile-{uuid.uuid4().hex}"
    main = library(libdir, GOOD, spawn_child(marker) + SUMMARY)
    r = raff("build", "faulty", "-c", main, timeout=120)
    assert r.code == 0, r.err
    assert not survivors(marker), "a distillery's child outlived `raff build`"


def test_kill_9_of_raff_build_ends_the_worker_its_children_and_the_resource_tracker(libdir):
    marker = f"raff-hostile-{uuid.uuid4().hex}"
    main = library(libdir, GOOD, spawn_child(marker) + "import time\nwhile True: time.sleep(0.05)\n")
    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "faulty", "-c", str(main)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: with_marker(all_pids(), marker), what="the distillery's child")
        helpers = children(proc.pid)  # the worker and multiprocessing's resource tracker
        assert helpers
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    left = survivors(marker, helpers, seconds=10)
    assert not left, f"outlived a killed `raff build`: {left}"


def _interrupt_twice(libdir, first: int, second: int, *extra: str) -> tuple[int, str, str]:
    marker = f"raff-hostile-{uuid.uuid4().hex}"
    main = library(libdir, GOOD, spawn_child(marker) +
                   "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                   "while True: time.sleep(0.05)\n")
    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "faulty", "-c", str(main), *extra],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        boards = max(1, extra.count("--seed"))
        wait_for(lambda: len(with_marker(all_pids(), marker)) >= boards, what="the distilleries' children")
        helpers = children(proc.pid)
        proc.send_signal(first)
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()  # the first one waits for the analysis
        proc.send_signal(second)
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # what raff started holds its output open, or raff hangs
        err = "`raff build` or what it started was still running 30 s after the second signal"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    return proc.returncode, err, survivors(marker, helpers)


@pytest.mark.parametrize("first, second, code", [(signal.SIGTERM, signal.SIGTERM, 143),
                                                 (signal.SIGINT, signal.SIGTERM, 143),
                                                 (signal.SIGTERM, signal.SIGINT, 130)])
def test_a_second_signal_exits_with_its_own_code(libdir, first, second, code):
    returncode, err, left = _interrupt_twice(libdir, first, second)
    assert returncode == code, err
    assert "Traceback" not in err, err
    assert not left, f"outlived `raff build`: {left}"


def test_a_second_sigterm_with_several_boards_exits_143_and_stops_every_analysis(libdir):
    returncode, err, left = _interrupt_twice(libdir, signal.SIGTERM, signal.SIGTERM, "--seed", "1", "--seed", "2")
    assert returncode == 143, err
    assert "Traceback" not in err, err
    assert not left, f"outlived `raff build`: {left}"


# -- item 10: plots of one name in several folders ---------------------------------------------

def test_plots_of_one_name_in_two_folders_are_both_kept(libdir, raff, tmp_path):
    output = 'return {"summary": "s.csv", "plots": ["chip0/gain.png", "chip1/gain.png"], "calibration": None}'
    run = (SUMMARY + "for chip in (0, 1):\n"
           "    (output_dir / f'chip{chip}').mkdir()\n"
           f"    (output_dir / f'chip{{chip}}' / 'gain.png').write_bytes({PNG!r} + f'chip {{chip}}'.encode())\n")
    main = library(libdir, output, run)
    r = raff("build", "faulty", "-c", main, timeout=120)
    assert r.code == 0, r.err
    out = libdir.root / "raff-out" / "faulty"
    assert (out / "chip0" / "gain.png").read_bytes() == PNG + b"chip 0"
    assert (out / "chip1" / "gain.png").read_bytes() == PNG + b"chip 1"
    r = raff("cache", "verify", "-c", main)
    assert r.code == 0 and "quarantine" not in (r.out + r.err).lower(), r.out + r.err
    r = raff("report", "faulty", "-c", main, "-o", tmp_path / "report")
    assert r.code == 0, r.err
    page = (tmp_path / "report" / "faulty.html").read_text()
    for chip in (0, 1):
        assert base64.b64encode(PNG + f"chip {chip}".encode()).decode() in page
        assert f"chip{chip}/gain.png" in page


# -- item 11: the cache's own file names -------------------------------------------------------

@pytest.mark.parametrize("name", ["manifest.json", "meta.json"])
def test_a_distillery_writing_a_reserved_name_is_refused(libdir, raff, name):
    main = library(libdir, GOOD, SUMMARY + f"(output_dir / {name!r}).write_text('{{}}')\n")
    r = raff("build", "faulty", "-c", main, timeout=120)
    assert_clean_error(r, "faulty", name, "reserves")
    assert not [l for l in r.err.splitlines() if l.startswith("raff: error")][1:]  # one error line
    cache = libdir.root / ".raffinerie-cache"
    assert not list((cache / "analyses").glob("*/*")), "an entry the cache cannot verify was committed"
    r = raff("cache", "verify", "-c", main)
    assert r.code == 0 and not list((cache / "quarantine").glob("*")), r.out + r.err


def test_a_declared_output_named_like_the_manifest_in_a_subfolder_is_refused(libdir, raff):
    output = 'return {"summary": "s.csv", "plots": ["sub/manifest.json"], "calibration": None}'
    run = SUMMARY + "(output_dir / 'sub').mkdir()\n(output_dir / 'sub' / 'manifest.json').write_text('{}')\n"
    r = raff("build", "faulty", "-c", library(libdir, output, run), timeout=120)
    assert_clean_error(r, "faulty", "sub/manifest.json", "reserves")


# -- item 3: paths read from a cache record -----------------------------------------------------

def _rewrite_manifest(entry: Path) -> None:
    """A manifest that matches the entry as it now is: what a hostile shared cache would serve."""
    files = {}
    for path in sorted(entry.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != "manifest.json":
            data = path.read_bytes()
            files[str(path.relative_to(entry))] = [len(data), hashlib.sha256(data).hexdigest()]
    (entry / "manifest.json").write_text(json.dumps({"files": files}))


def test_report_refuses_outputs_outside_their_entry(libdir, raff, tmp_path):
    output = 'return {"summary": "s.csv", "plots": ["p.png"], "calibration": None}'
    main = library(libdir, output, SUMMARY + f"(output_dir / 'p.png').write_bytes({PNG!r} + b'honest')\n")
    r = raff("build", "faulty", "-c", main, timeout=120)
    assert r.code == 0, r.err
    [entry] = (libdir.root / ".raffinerie-cache" / "analyses").glob("*/*")
    secret = f"TOP-SECRET-{uuid.uuid4().hex}".encode()
    (entry / ".." / ".." / "secret").write_bytes(secret)          # analyses/secret
    outside = tmp_path / "secret.png"
    outside.write_bytes(PNG + secret)
    (entry / "link.png").symlink_to(outside)                      # a link inside the entry
    os.unlink(entry / "s.csv")
    (entry / "s.csv").symlink_to(outside)                         # a declared name, now a link
    meta = json.loads((entry / "meta.json").read_text())
    meta["outputs"] = {"summary": "/etc/passwd", "calibration": None,
                       "plots": ["../../secret", str(outside), "link.png", "p.png", 7, "sub/../../../secret"]}
    (entry / "meta.json").write_text(json.dumps(meta))
    _rewrite_manifest(entry)
    os.symlink(outside, entry / "notes.txt")

    r = raff("report", "faulty", "-c", main, "-o", tmp_path / "report")
    assert r.code == 0, r.err
    page = (tmp_path / "report" / "faulty.html").read_bytes()
    assert secret not in page
    for form in (secret, PNG + secret):
        assert base64.b64encode(form) not in page
    passwd = Path("/etc/passwd").read_bytes().splitlines()[0]
    assert passwd not in page and b"root:x:0" not in page
    assert base64.b64encode(PNG + b"honest") in page  # the honest plot is still there
    warnings = [l for l in r.err.splitlines() if "warning" in l]
    assert any(entry.name in l and "/etc/passwd" in l for l in warnings), r.err
    assert any(entry.name in l and "../../secret" in l for l in warnings), r.err
    assert any("link.png" in l for l in warnings), r.err
    assert "Traceback" not in r.err


def test_report_reads_only_regular_files_inside_the_entry(tmp_path):
    from raffinerie.cli.report import EntryFiles

    entry = tmp_path / "analyses" / "ab" / ("ab" + "0" * 62)
    (entry / "sub").mkdir(parents=True)
    (entry / "ok.png").write_bytes(PNG)
    (entry / "sub" / "ok.png").write_bytes(PNG)
    os.mkfifo(entry / "fifo.png")                     # would hang a reader
    (entry / "dev.png").symlink_to("/dev/zero")       # would never end
    (entry / "inner.png").symlink_to(entry / "ok.png")
    (tmp_path / "out").mkdir()
    (entry / "via").symlink_to(tmp_path / "out")      # a folder link out of the entry
    (tmp_path / "out" / "x.png").write_bytes(b"secret")
    heard: list[str] = []
    files = EntryFiles(heard.append)
    assert files.file(entry, "ok.png", "f") == entry / "ok.png"
    assert files.file(entry, "sub/ok.png", "f") == entry / "sub" / "ok.png"
    refused = ["fifo.png", "dev.png", "inner.png", "via/x.png", "sub", "/etc/passwd", "../../x", "sub/../../x",
               "", None, 3, ["ok.png"], "a\0b", "missing.png"]
    for name in refused:
        assert files.file(entry, name, "f") is None, name
    assert len(heard) == len(refused) and all(entry.name in line for line in heard), heard
    assert files.file(entry, "notes.txt") is None and len(heard) == len(refused)  # optional, absent: quiet


# -- item 17: a full disk -----------------------------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "256k"):
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def test_a_full_output_folder_is_one_line_and_leaves_no_temporary(libdir, raff, tmp_path):
    output = 'return {"summary": "s.csv", "plots": ["big.png"], "calibration": None}'
    run = SUMMARY + f"(output_dir / 'big.png').write_bytes({PNG!r} + __import__('os').urandom(1 << 20))\n"
    main = library(libdir, output, run)
    with small_tmpfs(tmp_path / "full") as full:
        for attempt in range(2):
            r = raff("build", "faulty", "-c", main, "-o", full, timeout=120)
            assert_clean_error(r, str(full / "faulty"), "no space left on device")
            assert len([l for l in r.err.splitlines() if l.startswith("raff: error")]) == 1, r.err
            assert len(r.err.strip().splitlines()[-1]) < 400, r.err
            assert not [p.name for p in full.iterdir()], "a temporary folder was left on the full disk"
        r = raff("report", "faulty", "-c", main, "-o", full, timeout=120)
        assert_clean_error(r, str(full / "faulty.html"), "no space left on device")
        assert not [p.name for p in full.iterdir()], "a temporary report was left on the full disk"
