"""No-op builds answered from a stamp: every change to what a build reads is seen."""

from __future__ import annotations

import os
import time

from conftest import summary_files

SCAN = "- key: [roc_s0, ReferenceVoltage, 0, Calib]\n  values: [100, 200]\n"
FAST = "nothing it reads has changed"
ANALYSIS = "- {name: ped, type: analysis, daq: scan, module: builtin.pedestal}\n"


def _library(libdir):
    return libdir.main(libdir.daq(parameters=SCAN, server_override="{NEvents: 10}") + ANALYSIS)


def _settle(raff, main, *names):
    """Build, then build again (the stamp of an up-to-date build), past the racy window (100 ms)."""
    assert raff("build", *names, "-c", main).code == 0
    time.sleep(0.3)
    r = raff("build", *names, "-c", main)
    assert r.code == 0 and "up to date" in r.out, r.out + r.err


def test_a_second_no_op_build_is_answered_from_the_stamp(raff, libdir):
    main = _library(libdir)
    _settle(raff, main, "ped")
    r = raff("build", "ped", "-c", main)
    assert r.code == 0 and "ped is up to date" in r.out and FAST in r.out
    check = raff("plan", "ped", "-c", main, "--check")
    assert check.code == 0
    check = raff("plan", "ped", "-c", main, "--check")
    assert check.code == 0 and FAST in check.out
    # an output deleted from raff-out/ is put back: that build is not answered from the stamp
    summary = libdir.root / "raff-out" / "ped" / "summary.csv"
    summary.unlink()
    r = raff("build", "ped", "-c", main)
    assert r.code == 0 and FAST not in r.out and summary.is_file(), r.out


def test_every_kind_of_change_is_seen(raff, libdir):
    main = _library(libdir)
    _settle(raff, main, "ped")
    # a library edit, even one that changes no key, plans in full (then stamps again)
    main.write_text(main.read_text() + "\n# a comment\n")
    r = raff("build", "ped", "-c", main)
    assert r.code == 0 and "up to date" in r.out and FAST not in r.out
    time.sleep(0.3)
    assert FAST in raff("build", "ped", "-c", main).out
    # a power-on default changed on disk
    pod = libdir.root / "defaults" / "pod.yaml"
    os.utime(pod, ns=(time.time_ns(), time.time_ns()))
    r = raff("build", "ped", "-c", main)
    assert FAST not in r.out and "up to date" in r.out
    # a measurement quarantined: the next build acquires it again, never says "up to date"
    time.sleep(0.3)
    assert FAST in raff("build", "ped", "-c", main).out
    from conftest import damage_member

    damage_member(summary_files(libdir.root / ".raffinerie-cache")[0])
    assert raff("cache", "verify", "-c", main).code == 1
    r = raff("build", "ped", "-c", main)
    assert r.code == 0 and "1 point acquired" in r.out, r.out + r.err


def test_an_option_that_changes_the_work_always_plans(raff, libdir):
    main = _library(libdir)
    _settle(raff, main, "ped")
    r = raff("build", "ped", "-c", main, "--force")
    assert r.code == 0 and "1 analysis" in r.out, r.out + r.err
    r = raff("build", "ped", "-c", main, "--seed", "3")
    assert r.code == 0 and "2 points acquired" in r.out


USER = """\
import os
from helper import label


class mine:
    def __init__(self, parameters):
        pass

    def output(self):
        return {"summary": "summary.csv", "plots": []}

    def run(self, data, output_dir):
        data.groupby("chip").adc_mean.mean().rename(label()).to_csv(os.path.join(output_dir, "summary.csv"))
"""


def test_analysis_code_and_its_helpers_are_inputs(raff, libdir):
    libdir.write("analyses/mine.py", USER)
    libdir.write("analyses/helper.py", "def label():\n    return 'mean'\n")
    main = libdir.main(libdir.daq(parameters=SCAN, server_override="{NEvents: 10}")
                       + "- {name: mine, type: analysis, daq: scan}\n")
    _settle(raff, main, "mine")
    assert FAST in raff("build", "mine", "-c", main).out
    libdir.write("analyses/helper.py", "def label():\n    return 'average'\n")
    r = raff("build", "mine", "-c", main)
    assert r.code == 0 and "1 analysis" in r.out, r.out + r.err
