"""Hostile configuration (issue 27): crafted libraries, scans and names; a backend that dies.

Each test is an attack or a fault from outside, seen where a user would see
it: one line naming the place, a non-zero exit, bounded time, nothing of the
refused content carried out.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES, ROOT, assert_clean_error, emulator_pids

from raffinerie.config.yamlio import load_yaml
from raffinerie.emulator.process import EmulatorProcess
from raffinerie.errors import RaffError

# -- item 4: templates of Datenraffinerie 1.0 libraries ----------------------------------------

V10_TARGET = "target:\n  roc_s0:\n    ch:\n      0: {HighRange: 0}\n      1: {HighRange: 0}\n"
V10_DAQ = "daq:\n  NChips: 3\n  NEvents: 10\n  zmqPushPull_port: 8888\nclient: {hw_type: LD}\n"


def v10_library(root: Path, template_text: str, values: str = "[0, 1]") -> Path:
    """A Datenraffinerie 1.0 library whose one procedure has the template `template_text`."""
    (root / "target.yaml").write_text(V10_TARGET)
    (root / "daq.yaml").write_text(V10_DAQ)
    entry = {"name": "crafted", "type": "daq",
             "system_settings": {"default": ["./target.yaml", "./daq.yaml"]},
             "parameters": [{"template": template_text, "values": yaml.safe_load(values)}]}
    (root / "procs.yaml").write_text(yaml.safe_dump([entry], sort_keys=False))
    main = root / "main.yaml"
    main.write_text("libraries: [./procs.yaml]\n")
    return main


def test_a_template_cannot_run_shell_commands(raff, tmp_path):
    marker = tmp_path / "PWNED"
    payloads = [
        f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
        f"{{{{ joiner.__init__.__globals__.os.popen('touch {marker}').read() }}}}",
        f"{{{{ ''.__class__.__mro__[1].__subclasses__() }}}}",
        f"{{{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
    ]
    for i, payload in enumerate(payloads):
        folder = tmp_path / f"lib{i}"
        folder.mkdir()
        main = v10_library(folder, payload)
        r = raff("migrate", main, "-o", tmp_path / f"out{i}", timeout=60)
        assert_clean_error(r, "procs.yaml", "procedure 'crafted'", "template of parameter 0", "unsafe")
        assert len(r.lines) == 1, r.err
        assert not marker.exists(), f"payload {i} ran a shell command"


@pytest.mark.parametrize("text,needle", [
    ("{% for i in range(10**10) %}x{% endfor %}", "more than 100,000 items"),
    ("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "more than 100,000 items"),
    ("{{ 'x' * 10**10 }}", "more than 4,194,304"),
    ("{{ 7 ** (10**8) }}", "more than 4096 bits"),
    ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     "more than 1024 MiB"),
    ("{% for i in range(100000) %}{{ 'y' * 100 }}{% endfor %}", "longer than 4,194,304 characters"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recurses too deeply"),
    ("{{ lipsum(10**9) }}", "'lipsum' is undefined"),
    ("{{ valeu }}", "'valeu' is undefined"),
    ("{{ value }}", "is not a mapping of settings: '0'"),
])
def test_a_template_that_would_hang_or_explode_is_one_error(raff, tmp_path, text, needle):
    main = v10_library(tmp_path, text)
    t0 = time.monotonic()
    r = raff("migrate", main, "-o", tmp_path / "out", timeout=60)
    assert time.monotonic() - t0 < 15
    assert_clean_error(r, "procs.yaml", "procedure 'crafted'", needle)
    assert len(r.lines) == 1, r.err


def test_a_busy_template_is_stopped_at_the_time_limit(monkeypatch):
    from raffinerie.config import template
    from raffinerie.config.template import Renderer, TemplateProblem

    monkeypatch.setattr(template, "RENDER_SECONDS", 1.0)
    busy = "{% for c in 'x' * 100000 %}{% for d in 'x' * 100000 %}{% endfor %}{% endfor %}"
    with Renderer() as renderer:
        assert renderer.render("a: {{ value }}", 3) == "a: 3"
        child = renderer.proc
        t0 = time.monotonic()
        with pytest.raises(TemplateProblem, match="more than 1 s"):
            renderer.render(busy, 0)
        assert time.monotonic() - t0 < 3
        assert child.poll() is not None, "the busy child is killed"
        assert renderer.render("b: {{ value }}", 4) == "b: 4"  # a new child for the next one


def _renderers_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == pid and any(part.endswith(b"config/template.py") for part in cmd):
            out.append(int(entry.name))
    return out


def test_the_renderer_dies_with_a_killed_migrate(tmp_path):
    busy = "{% for c in 'x' * 100000 %}{% for d in 'x' * 100000 %}{% endfor %}{% endfor %}"
    main = v10_library(tmp_path, busy)
    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "migrate", str(main), "-o",
                             str(tmp_path / "out")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        children = []
        while not children and time.monotonic() < deadline:
            children = _renderers_of(proc.pid)
            time.sleep(0.05)
        assert children, "migrate renders in a child process"
        time.sleep(0.5)  # busy rendering now
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 3
        while Path(f"/proc/{children[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = Path(f"/proc/{children[0]}").exists()
        if alive:
            os.kill(children[0], signal.SIGKILL)
        assert not alive, "the renderer outlived raff"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_too_many_template_values_are_refused_before_rendering(raff, tmp_path):
    main = v10_library(tmp_path, "{}", values="{stop: 1000000000000}")
    r = raff("migrate", main, "-o", tmp_path / "out", timeout=30)
    assert_clean_error(r, "procs.yaml", "procedure 'crafted'", "1,000,000,000,000 values", "at most 100,000")


def test_a_sane_template_still_migrates(raff, tmp_path):
    text = "target:\n  roc_s0:\n    ch:\n      {{ value }}:\n        HighRange: {{ [1, 2][0] }}\n"
    main = v10_library(tmp_path, text)
    r = raff("migrate", main, "-o", tmp_path / "out", timeout=60)
    assert r.code == 0, r.err
    procs = yaml.safe_load((tmp_path / "out" / "procedures.yaml").read_text())
    assert procs[0]["parameters"][0]["template"] == text.rstrip("\n") or \
        procs[0]["parameters"][0]["template"] == text
    # rendered again, in the sandbox, when the migrated library is planned
    planned = raff("plan", "crafted", "-c", tmp_path / "out" / "main_config.yaml", "--points",
                   "--cache", tmp_path / "c")
    assert planned.code == 0 and "2 points: 0 cached, 2 to acquire" in planned.out, planned.out + planned.err


# -- item 8: every check of a setting, wherever the setting comes from --------------------------

@pytest.mark.parametrize("value", ["abc", "0", "2.5", "true", "1000000000000"])
def test_a_scanned_event_count_passes_the_event_count_check(libdir, raff, tmp_path, value):
    main = libdir.main(libdir.daq("scan", f"""\
        - key: [daq, server, NEvents]
          values: [100, {value}]
        """))
    r = raff("validate", "-c", main)
    assert_clean_error(r, "main.yaml:10", "parameters[0].values[1]", "NEvents: ",
                       "is not a whole number from 1 to 10,000,000")
    r = raff("plan", "scan", "-c", main, "--cache", tmp_path / "cache")
    assert_clean_error(r, "parameters[0].values[1]", "NEvents")


def test_scanned_run_settings_of_menus_ranges_and_the_active_menu(libdir, raff):
    libdir.write("defaults/daq.yaml", (EXAMPLES / "defaults" / "daq-system-config-menus.yaml").read_text())
    daq = yaml.safe_load((EXAMPLES / "defaults" / "daq-system-config-menus.yaml").read_text())
    active = daq["server"]["active_menu"]
    other = next(m for m in daq["server"]["menus"] if m != active)
    cases = [
        (f"- key: [daq, server, menus, {active}, NEvents]\n  values: [0]\n", "values[0]", "NEvents: 0"),
        (f"- key: [daq, server, menus, {other}, NEvents]\n  values: [-1]\n", "values[0]", "NEvents: -1"),
        ("- key: [daq, server, NEvents]\n  range: {start: 0, stop: 10}\n", "range", "NEvents: 0"),
        ("- key: [daq, server, NChips]\n  values: [3, 7]\n", "values[1]", "NChips: 7"),
        ("- key: [daq, server, active_menu]\n  values: [nosuchmenu]\n", "values[0]",
         "active_menu: 'nosuchmenu' is not one of the menus"),
        (f"- key: [daq, server, menus, {active}]\n  values: [{{NEvents: abc}}]\n", "values[0]",
         "NEvents: 'abc'"),
    ]
    for scan, where, needle in cases:
        r = raff("validate", "-c", libdir.main(libdir.daq("scan", scan)))
        assert_clean_error(r, f"parameters[0].{where}", needle)


def test_scanned_register_blocks_pass_the_register_check(libdir, raff):
    main = libdir.main(libdir.daq("scan", """\
        - key: [roc_s0, ch, 0]
          values: [{trim_inv: 3}, {trim_inv: 999}]
        """))
    r = raff("validate", "-c", main)
    assert_clean_error(r, "parameters[0].values[1]", "trim_inv = 999 does not fit its 6-bit register")


CALIBRATOR = '''\
import os


class cal:
    def __init__(self, parameters):
        pass

    def output(self):
        return {"summary": "summary.csv", "plots": [], "calibration": "calibration.yaml"}

    def run(self, data, output_dir):
        data.head(1).to_csv(os.path.join(output_dir, "summary.csv"), index=False)
        with open(os.path.join(output_dir, "calibration.yaml"), "w") as f:
            f.write("roc_s0: {ch: {0: {trim_inv: 999}}}\\n")
'''


def test_a_calibration_that_does_not_fit_is_never_sent(libdir, raff, tmp_path):
    libdir.write("defaults/daq.yaml", "server: {NChips: 3, NEvents: 10, zmqPushPull_port: 8888}\nclient: {}\n")
    libdir.write("analyses/cal.py", CALIBRATOR)
    calibrated = libdir.daq("calibrated").replace("  type: daq\n", "  type: daq\n  calibration: cal\n")
    main = libdir.main(libdir.daq("base") + "- {name: cal, type: analysis, daq: base}\n" + calibrated)
    cache = tmp_path / "cache"
    r = raff("build", "calibrated", "-c", main, "--cache", cache, timeout=120)
    assert_clean_error(r, "main.yaml:", "calibration 'cal' that 'calibrated' takes sets roc_s0.ch.0.trim_inv",
                       "does not fit its 6-bit register")
    journal = (cache / "journal.jsonl").read_text()
    assert '"procedure": "calibrated"' not in journal  # no point of it was acquired


def test_the_session_refuses_what_validation_would_have(tmp_path):
    """The last line: the fully resolved config of a point is checked before any of it is sent."""
    from raffinerie.config.daqconfig import Generation
    from raffinerie.daq.session import DaqSession

    target = load_yaml(EXAMPLES / "defaults" / "V3LDHexaboard-poweron-default.yaml")
    target = {k: v for k, v in target.items() if k not in ("hostname", "port")}
    daq = {"server": {"NChips": 3, "NEvents": 10, "zmqPushPull_port": 8888}, "client": {}}
    with EmulatorProcess(seed=3, generation=Generation.Y2021) as emu:
        net = dataclasses.replace(emu.network, timeout=5.0)
        with DaqSession(net, net.data, net.protocols(daq)) as session:
            assert session.acquire(target, daq).raw
            for bad in (0, "abc", 2.5):
                t0 = time.monotonic()
                with pytest.raises(RaffError, match=f"NEvents: {bad!r} is not a whole number.*nothing was sent"):
                    session.acquire(target, {**daq, "server": {**daq["server"], "NEvents": bad}})
                assert time.monotonic() - t0 < 1
            wrong = yaml.safe_load(yaml.safe_dump(target))
            wrong["roc_s1"]["ch"][5]["trim_inv"] = 64
            with pytest.raises(RaffError, match="roc_s1.ch.5.trim_inv: trim_inv = 64 does not fit.*nothing was sent"):
                session.acquire(wrong, daq)
            assert session.acquire(target, daq).raw  # still in step with the board


# -- item 16: NUL in a path ----------------------------------------------------------------

NUL_PATHS = {  # where a crafted main config puts a NUL, written as each YAML escape that gives one
    "power_on_default": ("power_on_default: ./defaults/pod.yaml", 'power_on_default: "./defaults/pod\\0.yaml"'),
    "initial_config": ("power_on_default:", 'initial_config: "./init\\x00.yaml"\n    power_on_default:'),
    "default": ("default: ./defaults/daq.yaml", 'default: "./defaults/daq\\U00000000.yaml"'),
}
NUL_EXTRA = {"libraries": 'libraries: ["./lib\\u0000.yaml"]\n', "remote": 'remote: "/tmp/shared\\0cache"\n'}


@pytest.mark.parametrize("field", [*NUL_PATHS, *NUL_EXTRA])
def test_a_nul_byte_in_a_path_is_one_line(libdir, raff, tmp_path, field):
    proc = libdir.daq("scan")
    if field in NUL_PATHS:
        old, new = NUL_PATHS[field]
        assert old in proc
        proc = proc.replace(old, new, 1)
    main = libdir.main(proc, NUL_EXTRA.get(field, ""))
    for command in (["validate"], ["plan", "scan", "--cache", str(tmp_path / "cache")]):
        r = raff(*command, "-c", main)
        assert_clean_error(r, "main.yaml:", "a string holds a NUL character")
        assert len([line for line in r.lines if "NUL" in line]) == 1, r.err


def test_a_nul_byte_in_a_network_file_or_a_daq_file(libdir, raff):
    main = libdir.main(libdir.daq("scan"))
    net = libdir.write("net.yaml", 'server: {hostname: h, port: 6000}\ntarget: {hostname: h, port: 5555}\n'
                                   'readout: daq-client\nclient: {hostname: h, port: 6001}\n'
                                   'client_output: "/tmp/out\\0put"\n')
    r = raff("plan", "scan", "-c", main, "--network", net)
    assert_clean_error(r, "net.yaml:5", "client_output", "NUL character")
    libdir.write("defaults/daq.yaml", 'server: {NChips: 3, NEvents: 10, "out\\0": 1}\nclient: {}\n')
    r = raff("validate", "-c", main)
    assert_clean_error(r, "daq.yaml:1", "NUL character")


def test_a_path_with_nul_from_elsewhere_is_not_found():
    with pytest.raises(RaffError, match="not found .its path holds a NUL character"):
        load_yaml(Path("/tmp/a\0b.yaml"), "library file")


# -- item 19: the embedded emulator dies ------------------------------------------------------

def _children(pid: int, deadline: float) -> list[int]:
    while time.monotonic() < deadline:
        found = emulator_pids(pid)
        if found:
            return found
        time.sleep(0.05)
    return []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV], ids=lambda s: s.name)
def test_a_dead_emulator_is_named_at_once(libdir, tmp_path, sig):
    main = libdir.main(libdir.daq("scan", """\
        - key: [roc_s0, ReferenceVoltage, 0, Calib]
          range: {start: 0, stop: 4000}
        """))
    proc = subprocess.Popen([sys.executable, "-m", "raffinerie", "build", "scan", "-c", str(main),
                             "--cache", str(tmp_path / "cache")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        children = _children(proc.pid, time.monotonic() + 30)
        assert len(children) == 1, "the build starts one embedded emulator"
        journal = tmp_path / "cache" / "journal.jsonl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and '"acquired"' not in (journal.read_text() if journal.exists() else ""):
            time.sleep(0.05)  # killed while points are being acquired
        t0 = time.monotonic()
        os.kill(children[0], sig)
        out, err = proc.communicate(timeout=15)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    death = {signal.SIGKILL: "killed by SIGKILL", signal.SIGSEGV: "killed by SIGSEGV",
             signal.SIGTERM: "exited with status 0, as it does on SIGTERM"}[sig]
    assert proc.returncode == 3, err
    assert f"raff: error: embedded emulator (pid {children[0]}) died: {death}" in err, err
    assert "another puller" not in err and "Traceback" not in err and "did not answer" not in err
    assert took < 3, f"noticed after {took:.1f} s"


# -- item 23: names that file names are made of --------------------------------------------

def test_a_name_too_long_for_a_file_name_is_refused(libdir, raff, tmp_path):
    long = "a" * 300
    main = libdir.main(libdir.daq(long))
    r = raff("validate", "-c", main)
    assert_clean_error(r, "main.yaml:2", "procedures[0].name", "is 300 characters long; at most 200")
    r = raff("build", long, "-c", main, "--cache", tmp_path / "cache")
    assert_clean_error(r, "is 300 characters long")
    assert not (tmp_path / "cache" / "measurements").exists()
    flow = libdir.main(libdir.daq("scan"), f"workflows:\n  - {{name: {'w' * 201}, procedures: [scan]}}\n")
    assert_clean_error(raff("validate", "-c", flow), "workflows[0].name", "is 201 characters long")
    assert raff("validate", "-c", libdir.main(libdir.daq("s" * 200))).code == 0


@pytest.mark.parametrize("name", ['"scan\\n"', '"sc/an"', '".scan"', '"scan\\0"', '"sc an"', "'..'"])
def test_names_unsafe_in_a_file_name_are_refused(libdir, raff, name):
    r = raff("validate", "-c", libdir.main(libdir.daq(name)))
    assert_clean_error(r, "main.yaml:2", "procedures[0].name")


def test_every_name_of_the_examples_and_tests_is_still_valid(raff):
    r = raff("validate", "-c", EXAMPLES / "main_config.yaml")
    assert r.code == 0, r.out + r.err
