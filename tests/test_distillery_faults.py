"""Distilleries that misbehave end in one line naming the analysis; Ctrl-C always stops the build."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import assert_clean_error

GOOD_OUTPUT = 'return {"summary": "s.csv", "plots": [], "calibration": None}'
CASES = {
    "list_output": ("return ['s.csv']", "pass", "output() returned a list"),
    "string_output": ("return 's.csv'", "pass", "output() returned a str"),
    "sys_exit": (GOOD_OUTPUT, "import sys; sys.exit(0)", "called sys.exit(0) in run()"),
    "os_exit": (GOOD_OUTPUT, "import os; os._exit(3)", "the worker process ended abruptly"),
}


def library(libdir, output: str, run: str):
    libdir.write("analyses/faulty.py", textwrap.dedent(f"""\
        class faulty:
            def __init__(self, parameters):
                self.parameters = parameters

            def output(self):
                {output}

            def run(self, data, output_dir):
                {run}
        """))
    libdir.write("defaults/daq.yaml", "server: {NChips: 3, NEvents: 5, zmqPushPull_port: 8888}\nclient: {}\n")
    return libdir.main(libdir.daq("scan") + "- {name: faulty, type: analysis, daq: scan}\n")


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_misbehaving_distillery_is_one_line(libdir, raff, case, workers):
    output, run, needle = CASES[case]
    main = library(libdir, output, run)
    r = raff("build", "faulty", "-c", main, "-w", workers, timeout=120)
    assert_clean_error(r, "faulty", needle)
    assert not [l for l in r.err.splitlines() if l.startswith("raff: error")][1:]  # one error line


def test_two_ctrl_c_stop_an_analysis_that_ignores_them(libdir):
    main = library(libdir, GOOD_OUTPUT, "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "[time.sleep(0.05) for _ in iter(int, 1)]  # forever")
    env = {k: v for k, v in os.environ.items() if k not in ("RAFF_CACHE", "RAFF_CONFIG")}
    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "faulty", "-c", str(main), "-w", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    out_dir = libdir.root / ".raffinerie-cache" / "tmp"
    while time.monotonic() < deadline and not any(out_dir.glob("analysis-faulty-*")):
        time.sleep(0.1)
    time.sleep(1.0)  # the worker is in its endless loop
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()  # the first Ctrl-C waits for the analysis in flight
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 5
    while [p for p in workers if os.path.exists(f"/proc/{p}")] and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [open(f"/proc/{p}/cmdline").read().replace("\0", " ") for p in workers if os.path.exists(f"/proc/{p}")]
    assert not left, f"outlived raff: {left}"


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out
