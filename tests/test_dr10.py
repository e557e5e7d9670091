"""The Datenraffinerie 1.0 format: raff reads it as it is, and `raff migrate` writes its 0.1.2 twin.

The 1.0 library below uses every feature of the format (system_settings with
default/init lists and override, keys rooted at target and at daq, values as
{start, stop, step} and as lists, mode: full, repeat, a jinja2 template
parameter with its default, module_name, provides_calibration, a calibration,
workflows with tasks). Its hand-written 0.1.2 twin must plan to the same
points: the same keys, in the same order.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES, assert_clean_error

POD = yaml.safe_load((EXAMPLES / "defaults" / "V3LDHexaboard-poweron-default.yaml").read_text())

DAQ_SERVER = {"active_menu": "randomL1A", "NChips": 3, "zmqPushPull_port": 8888,
              "menus": {"randomL1A": {"NEvents": 500, "log2_rand_bx_period": 4, "bx_min": 45},
                        "calibAndL1A": {"NEvents": 1000, "calibType": "CALPULINT", "bxCalib": 10}}}
DAQ_CLIENT = {"hw_type": "LD", "serverIP": "localhost", "data_push_port": 8888}

V10_MAIN = """\
libraries:
  - ./dr10_procedures.yaml
workflows:
  - name: everything
    tasks: [ped, injection]
"""

V10_PROCEDURES = """\
- name: injection
  type: daq
  mode: full
  repeat: 2
  system_settings:
    default:
      - ./defaults/target-default.yaml
      - ./defaults/daq-default.yaml
    init:
      - ./init/init-a.yaml
      - ./init/init-b.yaml
    override:
      target:
        roc_s0:
          Top: {0: {phase_strobe: 2}}
      daq:
        menus:
          randomL1A: {NEvents: 300}
  parameters:
    - key: [target, [roc_s0, roc_s1], ReferenceVoltage, [0, 1], Calib]
      values: {start: 0, stop: 200, step: 100}
    - key: [daq, menus, randomL1A, bx_min]
      values: [40, 50]

- name: highrange
  type: daq
  system_settings:
    default: [./defaults/daq-default.yaml, ./defaults/target-default.yaml]
    init: ./init/init-a.yaml
  parameters:
    - template: |-
        target:
          roc_s0:
            ch:
              {{ value }}:
                HighRange: 1
      default: |-
        target:
          roc_s0:
            ch:
              {{ value }}:
                HighRange: 0
      values: {stop: 72, step: 36}
    - key: [target, roc_s0, ReferenceVoltage, 0, Calib]
      values: [50, 100]

- name: trimmed
  type: daq
  calibration: trim
  system_settings:
    default: [./defaults/target-default.yaml, ./defaults/daq-default.yaml]

- name: trim
  type: analysis
  daq: injection
  module_name: builtin.pedestal_trim
  provides_calibration: true
  parameters: {max_trim: 40}

- name: ped
  type: analysis
  daq: trimmed
  module_name: builtin.pedestal
  compatible_modes: summary
"""

INIT_A = {"target": {"roc_s0": {"ReferenceVoltage": {0: {"Calib": 8}}}, "roc_s1": {"Top": {0: {"phase_strobe": 5}}}},
          "client": {"hw_type": "LDv3"}}
INIT_B = {"target": {"roc_s0": {"ReferenceVoltage": {0: {"Calib": 16}, 1: {"Calib": 16}}}}}

TWIN_MAIN = """\
libraries: [./procedures.yaml]
workflows:
  - name: everything
    procedures: [ped, injection]
"""

TWIN_PROCEDURES = """\
- name: injection
  type: daq
  mode: events
  repeat: 2
  target_settings:
    power_on_default: ./pod.yaml
    initial_config: ./init.yaml
    overrides: {roc_s0: {Top: {0: {phase_strobe: 2}}}}
  daq_settings:
    default: ./daq.yaml
    server_override: {NEvents: 300}
    client_override: {hw_type: LDv3}
  parameters:
    - key: [[roc_s0, roc_s1], ReferenceVoltage, [0, 1], Calib]
      range: {start: 0, stop: 200, step: 100}
    - key: [daq, server, menus, randomL1A, bx_min]
      values: [40, 50]

- name: highrange
  type: daq
  target_settings:
    power_on_default: ./pod.yaml
    overrides:
      roc_s0:
        ReferenceVoltage: {0: {Calib: 8}}
        ch: {0: {HighRange: 0}, 36: {HighRange: 0}}
      roc_s1: {Top: {0: {phase_strobe: 5}}}
  daq_settings:
    default: ./daq.yaml
    client_override: {hw_type: LDv3}
  parameters:
    - keys: [[roc_s0, ch, 0, HighRange]]
      values: [1, 0]
    - keys: [[roc_s0, ch, 36, HighRange]]
      values: [0, 1]
    - key: [roc_s0, ReferenceVoltage, 0, Calib]
      values: [50, 100]
  points: [[1, 0, 50], [1, 0, 100], [0, 1, 50], [0, 1, 100]]

- name: trimmed
  type: daq
  calibration: trim
  target_settings:
    power_on_default: ./pod.yaml
  daq_settings:
    default: ./daq.yaml

- {name: trim, type: analysis, daq: injection, module: builtin.pedestal_trim, parameters: {max_trim: 40}}
- {name: ped, type: analysis, daq: trimmed, module: builtin.pedestal}
"""


def _write(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def libraries(tmp_path):
    v10 = tmp_path / "v10"
    _write(v10 / "defaults" / "target-default.yaml", {"target": POD})
    _write(v10 / "defaults" / "daq-default.yaml", {"daq": DAQ_SERVER, "client": DAQ_CLIENT})
    _write(v10 / "init" / "init-a.yaml", INIT_A)
    _write(v10 / "init" / "init-b.yaml", INIT_B)
    _write(v10 / "dr10_procedures.yaml", V10_PROCEDURES)
    main10 = _write(v10 / "main_config.yaml", V10_MAIN)
    twin = tmp_path / "twin"
    _write(twin / "pod.yaml", POD)
    _write(twin / "daq.yaml", {"server": DAQ_SERVER, "client": DAQ_CLIENT})
    _write(twin / "init.yaml", {"roc_s0": {"ReferenceVoltage": {0: {"Calib": 16}, 1: {"Calib": 16}}},
                                "roc_s1": {"Top": {0: {"phase_strobe": 5}}}})
    _write(twin / "procedures.yaml", TWIN_PROCEDURES)
    main012 = _write(twin / "main_config.yaml", TWIN_MAIN)
    return main10, main012


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _keys(raff, main: Path, name: str, cache: Path) -> list:
    r = raff("plan", name, "-c", main, "--json", "--cache", cache)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    return [(p["procedure"], p["key"], p["repeat"], p["status"]) for p in doc["points"]], doc


def test_a_10_library_is_read_as_it_is_with_the_keys_of_its_hand_written_twin(raff, libraries, tmp_path):
    main10, main012 = libraries
    before = _snapshot(main10.parent)
    r = raff("validate", "-c", main10)
    assert r.code == 0 and "valid (Datenraffinerie 1.0 format): 5 procedures, 1 workflow" in r.out, r.out + r.err
    doc = json.loads(raff("validate", "-c", main10, "--json").out)
    assert doc["format"] == "Datenraffinerie 1.0" and doc["errors"] == 0
    for name in ("injection", "highrange", "everything"):
        mine, _ = _keys(raff, main10, name, tmp_path / "c1")
        twin, _ = _keys(raff, main012, name, tmp_path / "c2")
        assert mine == twin, name
    assert len(_keys(raff, main10, "injection", tmp_path / "c1")[0]) == 2 * 2 * 2  # Calib x bx_min x repeat
    assert _snapshot(main10.parent) == before  # nothing is written beside it


def test_a_10_library_builds_on_the_embedded_emulator_as_it_is(raff, libraries):
    """Its daq procedures acquired and their datasets built from the 1.0 file: defaults and init
    lists with override, daq keys, {start, stop, step}, repeat, mode full (events), a template
    with its default; then nothing is left to do, and `raff show` reads the dataset. (Its
    calibration chain is shown equal to the twin's by the keys above: the fixture's analyses
    are there for the format, not for physics.)"""
    main10, _ = libraries
    r = raff("build", "injection", "highrange", "-c", main10, timeout=300)
    assert r.code == 0, r.err
    assert "12 points acquired, 2 datasets" in r.out + r.err, r.out + r.err
    again = raff("plan", "injection", "highrange", "-c", main10)
    assert again.code == 0 and again.out.splitlines()[-1].startswith("12 points: 12 cached, 0 to acquire"), \
        again.out
    shown = raff("show", "highrange", "-c", main10)
    assert shown.code == 0 and "HighRange" in shown.out, shown.out + shown.err


def test_a_10_main_config_with_procedures_of_its_own_and_a_library(raff, libraries, tmp_path):
    """A template procedure in the 1.0 main config itself, beside the library it includes (read
    in between): each keeps its own points and says its problems at its own parameters."""
    main10, _ = libraries
    text = (main10.parent / "dr10_procedures.yaml").read_text()
    highrange = text[text.index("- name: highrange"):text.index("- name: trimmed")]
    own = highrange.replace("name: highrange", "name: highrange_here").replace("values: [50, 100]",
                                                                             "values: [50, 100, 5000]")
    main10.write_text(main10.read_text() + "procedures:\n" + textwrap.indent(own, "  "))
    assert_clean_error(raff("validate", "-c", main10), "main_config.yaml:", "procedure 'highrange_here': "
                       "parameters[1].values[2]: Calib = 5000 does not fit its 12-bit register")
    main10.write_text(main10.read_text().replace("[50, 100, 5000]", "[50, 100, 150]"))
    here, _ = _keys(raff, main10, "highrange_here", tmp_path / "c")
    there, _ = _keys(raff, main10, "highrange", tmp_path / "c")
    assert len(here) == 2 * 3 and len(there) == 2 * 2
    assert {k for _, k, _, _ in there} < {k for _, k, _, _ in here}  # the same points, and Calib 150


def test_a_10_procedure_that_cannot_be_read_stops_only_what_needs_it(raff, libraries):
    main10, _ = libraries
    procedures = main10.parent / "dr10_procedures.yaml"
    text = procedures.read_text()
    assert "      - ./init/init-b.yaml\n" in text
    procedures.write_text(text.replace("      - ./init/init-b.yaml\n", "      - ./init/init-c.yaml\n"))
    r = raff("validate", "-c", main10)
    assert_clean_error(r, "dr10_procedures.yaml:", "procedure 'injection'", "init-c.yaml")
    assert_clean_error(raff("plan", "injection", "-c", main10), "init-c.yaml")
    other = raff("plan", "highrange", "-c", main10)
    assert other.code == 0, other.err
    assert "1 other procedure has errors (injection); raff validate lists them" in other.err


def test_migrated_10_library_plans_to_the_points_of_its_hand_written_twin(raff, libraries, tmp_path):
    main10, main012 = libraries
    before = _snapshot(main10.parent)
    out = tmp_path / "migrated"
    r = raff("migrate", main10, "-o", out)
    assert r.code == 0, r.err
    assert "5 procedures and 1 workflow" in r.out and "1 procedure with template parameters" in r.out
    assert "explicit points" not in r.out
    assert _snapshot(main10.parent) == before  # the original is never touched
    migrated = out / "main_config.yaml"
    check = raff("validate", "-c", migrated)
    assert check.code == 0, check.out
    assert "valid (Datenraffinerie 0.1.2 format)" in check.out
    procs = {p["name"]: p for p in yaml.safe_load((out / "procedures.yaml").read_text())}
    assert procs["injection"]["mode"] == "events" and procs["trim"]["module"] == "builtin.pedestal_trim"
    assert "provides_calibration" not in procs["trim"]
    # a template stays a template (0.1.2 extension), written as the 1.0 library wrote it
    assert "points" not in procs["highrange"]
    assert procs["highrange"]["parameters"][0] == {"template": yaml.safe_load(V10_PROCEDURES)[1]["parameters"][0][
        "template"], "range": {"start": 0, "stop": 72, "step": 36}}
    assert "  - template: |-\n" in (out / "procedures.yaml").read_text()   # a block, as people write it
    for name in ("injection", "highrange"):
        mine, doc = _keys(raff, migrated, name, tmp_path / "c1")
        twin, _ = _keys(raff, main012, name, tmp_path / "c2")
        assert mine == twin, name
        assert len({k for _, k, _, _ in mine}) == len(mine)
    assert len(_keys(raff, migrated, "injection", tmp_path / "c1")[0]) == 2 * 2 * 2  # Calib x bx_min x repeat
    assert [p["coordinates"]["Calib"] for p in _keys(raff, migrated, "highrange", tmp_path / "c1")[1]["points"]] \
        == [50, 100, 50, 100]
    wf, _ = _keys(raff, migrated, "everything", tmp_path / "c1")
    wf_twin, _ = _keys(raff, main012, "everything", tmp_path / "c2")
    assert wf == wf_twin and {s for *_, s in wf} == {"new point", "waiting"}


def test_migrate_refuses_a_used_folder_and_a_012_library(raff, libraries, tmp_path):
    main10, main012 = libraries
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    assert_clean_error(raff("migrate", main10, "-o", used), "not empty")
    assert_clean_error(raff("migrate", main012, "-o", tmp_path / "new"), "not a Datenraffinerie 1.0 library")


REPO = Path("/work/.mirror/Phylex+Datenraffinerie/repo")


def test_the_real_10_library_is_read_as_it_is_and_migrated(raff, tmp_path):
    if not REPO.is_dir():
        pytest.skip("the Phylex/Datenraffinerie repository is not fetched")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "tests/configuration"],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.skip("cannot read the Datenraffinerie repository")
    subprocess.run(["tar", "x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    main = tmp_path / "tests" / "configuration" / "main_test_config.yaml"
    # read as it is: its one real mistake (phase_strobe scanned up to 16 in a 4-bit register),
    # said at the parameter it wrote; who asks for another procedure gets it, with one warning line
    r = raff("validate", "-c", main)
    assert_clean_error(r, "test_procedures.yaml:212: procedure 'full_toa_scan': parameters[2].values[8]: "
                       "phase_strobe = 16 does not fit its 4-bit register (0..15)",
                       "invalid (Datenraffinerie 1.0 format)")
    assert len(r.lines) == 2
    direct = {}
    for name, points in (("test_1", 5), ("test_2", 6), ("template_test", 35), ("multidim_scan_test", 6)):
        planned = raff("plan", name, "-c", main, "--json")
        assert planned.code == 0, planned.err
        direct[name] = [p["key"] for p in json.loads(planned.out)["points"]]
        assert len(set(direct[name])) == points, name
        assert planned.err.splitlines() == ["warning: 1 other procedure has errors (full_toa_scan); "
                                            "raff validate lists them"]
    assert_clean_error(raff("plan", "full_toa_scan", "-c", main), "phase_strobe = 16 does not fit")
    out = tmp_path / "migrated"
    assert raff("migrate", main, "-o", out).code == 0
    check = raff("validate", "-c", out / "main_config.yaml")
    # what remains is a real mistake of that library: phase_strobe scanned up to 16 in a 4-bit register
    assert [line for line in check.lines if ": " in line and "invalid" not in line] == [
        line for line in check.lines if "phase_strobe = 16 does not fit its 4-bit register" in line]
    # templates written as templates: the migrated library is about the size of the original
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    original = sum(p.stat().st_size for p in main.parent.rglob("*") if p.is_file())
    assert 0 < size < 1.5 * original, (size, original)
    procs = {p["name"]: p for p in yaml.safe_load((out / "procedures.yaml").read_text())}
    for name in ("template_test", "full_toa_scan"):
        assert "points" not in procs[name] and any("template" in p for p in procs[name]["parameters"]), name
    # who asks for test_1 gets test_1 (issue 23); full_toa_scan's own plan names its mistake
    migrated = out / "main_config.yaml"
    planned = raff("plan", "test_1", "-c", migrated)
    assert planned.code == 0 and "5 points: 0 cached, 5 to acquire" in planned.out, planned.err
    assert planned.err.splitlines() == ["warning: 1 other procedure has errors (full_toa_scan); "
                                        "raff validate lists them"]
    assert_clean_error(raff("plan", "full_toa_scan", "-c", migrated), "phase_strobe = 16 does not fit")
    for name, keys in direct.items():  # read directly or migrated: the same points
        assert [p["key"] for p in json.loads(raff("plan", name, "-c", migrated, "--json").out)["points"]] == keys


@pytest.mark.parametrize("case", ["data_columns", "analysis_parameters", "date", "mixed_keys"])
def test_a_10_entry_of_the_wrong_shape_is_one_error_of_its_own(raff, libraries, case):
    """Values the converter cannot take as they are reach the schema and the checks, which say
    what is wrong at the entry; never a traceback, and the other procedures still plan."""
    main10, _ = libraries
    procedures = main10.parent / "dr10_procedures.yaml"
    text = procedures.read_text()
    edits = {  # (what is there, what it becomes, what the error says)
        "data_columns": ("  repeat: 2\n", "  repeat: 2\n  data_columns: 5\n",
                         "procedure 'injection': data_columns: expected a list, got int 5"),
        "analysis_parameters": ("parameters: {max_trim: 40}", "parameters: [1, 2]",
                                "procedure 'trim': parameters: expected a mapping or nothing, got a list"),
        "date": ("                HighRange: 1\n", "                HighRange: [2020-01-01]\n",
                 "procedure 'highrange': parameters[0]"),
        "mixed_keys": ("                HighRange: 1\n", "                HighRange: [{1: a, b: 2}]\n",
                       "procedure 'highrange': parameters[0]"),
    }
    before, after, said = edits[case]
    assert before in text
    procedures.write_text(text.replace(before, after, 1))
    assert_clean_error(raff("validate", "-c", main10), said)
    other = "highrange" if case in ("data_columns", "analysis_parameters") else "injection"
    assert raff("plan", other, "-c", main10).code == 0


def test_a_10_template_of_daq_settings_is_migrated_as_explicit_points_with_the_same_keys(raff, libraries, tmp_path):
    """1.0 roots a daq server's settings at `daq:`, raffinerie at `daq: server:`: such a template
    cannot be written as it is, so its points are written out; read directly or migrated, the
    same keys."""
    main10, _ = libraries
    procedures = main10.parent / "dr10_procedures.yaml"
    procedures.write_text(procedures.read_text() + textwrap.dedent("""\
        - name: events
          type: daq
          system_settings:
            default: [./defaults/target-default.yaml, ./defaults/daq-default.yaml]
          parameters:
            - template: |-
                daq:
                  menus:
                    randomL1A:
                      NEvents: {{ value * 100 }}
              values: [1, 2, 3]
        """))
    direct, _ = _keys(raff, main10, "events", tmp_path / "c1")
    out = tmp_path / "migrated"
    r = raff("migrate", main10, "-o", out)
    assert r.code == 0 and "1 procedure with templates written as explicit points" in r.out, r.out + r.err
    procs = {p["name"]: p for p in yaml.safe_load((out / "procedures.yaml").read_text())}
    assert procs["events"]["points"] == [[100], [200], [300]] and "points" not in procs["highrange"]
    migrated, _ = _keys(raff, out / "main_config.yaml", "events", tmp_path / "c2")
    assert [k for _, k, *_ in migrated] == [k for _, k, *_ in direct] and len({k for _, k, *_ in direct}) == 3
