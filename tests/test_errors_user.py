"""Errors that point where the problem is (issue 25, items 4-7), through the CLI as a user runs it."""

from __future__ import annotations

import shutil

import pytest
import yaml

from conftest import EXAMPLES, assert_clean_error


@pytest.fixture
def example(tmp_path):
    """A copy of the example library, to break."""
    shutil.copytree(EXAMPLES, tmp_path / "lib", ignore=shutil.ignore_patterns("raff-out", ".raffinerie-cache"))
    return tmp_path / "lib"


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def error_lines(result) -> list[str]:
    return [l for l in result.lines if "invalid (" not in l]


# -- 4. a YAML syntax error: the cause first, its consequences in one line ---------------------

def test_a_yaml_syntax_error_comes_first_and_its_consequences_are_one_line(raff, example):
    edit(example / "daq_procedures.yaml", "server_override: {NEvents: 500}", "server_override: {NEvents: 500")
    main = example / "main_config.yaml"
    result = raff("validate", "-c", main)
    assert_clean_error(result, "not checked")
    lines = error_lines(result)
    assert "daq_procedures.yaml:23: YAML syntax error at column" in lines[0], lines
    assert "(parsing a flow mapping begun at line 22, column 22)" in lines[0], lines  # the `{` left open
    assert len(lines) == 2, lines  # the cause, and one line for what it keeps from being checked
    assert "note: 9 procedures that read what daq_procedures.yaml defines are not checked" in lines[1]
    text = result.out + result.err
    assert "reads unknown daq procedure" not in text and "did you mean" not in text
    plan = raff("plan", "characterisation", "-c", main)
    assert_clean_error(plan, "YAML syntax error")
    assert "daq_procedures.yaml:23: YAML syntax error" in plan.lines[0], plan.lines


def test_beside_an_unreadable_file_a_name_it_does_not_define_is_still_an_error(raff, example):
    edit(example / "daq_procedures.yaml", "server_override: {NEvents: 500}", "server_override: {NEvents: 500")
    with open(example / "analysis_procedures.yaml", "a") as f:
        f.write("\n- {name: extra, type: analysis, daq: injection_scna, module: builtin.injection}\n")
    result = raff("validate", "-c", example / "main_config.yaml")
    assert_clean_error(result, "YAML syntax error", "reads unknown daq procedure 'injection_scna'")
    assert "YAML syntax error" in result.lines[0]


def test_did_you_mean_for_a_daq_procedure_names_a_daq_procedure(raff, libdir):
    # 'pedestal' is an analysis (the very one): it is no answer to a misspelt daq procedure
    main = libdir.main(libdir.daq("pedestal_run") + "- {name: pedestal, type: analysis, daq: pedestl,"
                       " module: builtin.pedestal}\n- {name: other, type: analysis, daq: pedestal_rnu,"
                       " module: builtin.pedestal}\n")
    result = raff("validate", "-c", main)
    assert_clean_error(result, "analysis 'pedestal' reads unknown daq procedure 'pedestl'",
                       "unknown daq procedure 'pedestal_rnu' (did you mean 'pedestal_run'?)")
    assert "did you mean 'pedestal'?" not in result.out


def test_an_entry_with_a_schema_error_is_not_also_an_unknown_reference(raff, libdir):
    main = libdir.main(libdir.daq("scan", extra="repeat: two\n")
                       + "- {name: ana, type: analysis, daq: scan, module: builtin.pedestal}\n")
    result = raff("validate", "-c", main)
    assert_clean_error(result, "procedure 'scan': repeat: expected an integer")
    assert "unknown daq procedure" not in result.out


# -- 5. a scan key the chips do not have ----------------------------------------------------

def test_a_misspelt_scan_key_is_an_error_naming_its_line_and_the_right_name(raff, example):
    edit(example / "daq_procedures.yaml", "Top, 0, phase_strobe]", "Top, 0, phase_strob]")
    main = example / "main_config.yaml"
    result = raff("validate", "-c", main)
    assert_clean_error(result, "daq_procedures.yaml:87: procedure 'timewalk_scan': parameters[0].key: "
                       "key path roc_s0.Top.0.phase_strob (and 2 more places) is in neither the power-on "
                       "default nor the HGCROCv3 register map: block Top has no parameter 'phase_strob' "
                       "(did you mean 'phase_strobe'?)")
    assert len(error_lines(result)) == 1, result.lines  # one line for the three chips
    for command in ("plan", "build"):  # refused before any backend is started
        refused = raff(command, "timewalk_scan", "-c", main, "--cache", example / "cache")
        assert_clean_error(refused, "daq_procedures.yaml:87", "did you mean 'phase_strobe'")
        assert "backend" not in refused.out + refused.err
    assert not (example / "cache" / "measurements").exists()


def test_a_misspelt_block_is_an_error_too(raff, libdir):
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, Tpo, 0, phase_strobe]\n  values: [1]\n"))
    assert_clean_error(raff("validate", "-c", main), "main.yaml:9", "no block 'Tpo' (did you mean 'Top'?)")


def test_a_misspelt_override_or_initial_config_key_is_an_error(raff, libdir):
    libdir.write("init.yaml", "roc_s1:\n  Top:\n    0:\n      phase_ckk: 1\n")
    main = libdir.main(libdir.daq().replace(
        "power_on_default: ./defaults/pod.yaml", "power_on_default: ./defaults/pod.yaml\n"
        "    initial_config: ./init.yaml\n    overrides: {roc_s0: {Top: {0: {phase_strob: 1}}}}"))
    assert_clean_error(raff("validate", "-c", main),
                       "main.yaml:7: procedure 'scan': target_settings.overrides.roc_s0.Top[0].phase_strob: "
                       "roc_s0.Top.0.phase_strob is in neither", "(did you mean 'phase_strobe'?)",
                       "init.yaml:4: roc_s1.Top[0].phase_ckk:", "(did you mean 'phase_ck'?)")


def test_a_refusal_of_the_backend_names_the_line_of_the_key(raff, libdir):
    # the power-on default has a register the chips lack: validate cannot know, the backend refuses
    pod = yaml.safe_load((libdir.root / "defaults" / "pod.yaml").read_text())
    pod["roc_s0"]["Top"][0]["phase_strob"] = 0
    (libdir.root / "defaults" / "pod.yaml").write_text(yaml.safe_dump(pod))
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, Top, 0, phase_strob]\n  values: [1]\n"))
    assert raff("validate", "-c", main).code == 0
    result = raff("build", "scan", "-c", main)
    assert_clean_error(result, "main.yaml:9: slow control at", "refused 'initialize'",
                       "roc_s0.Top.0.phase_strob: unknown parameter",
                       "procedure 'scan' writes roc_s0.Top.0.phase_strob here", code=3)


# -- 6. an analysis whose code is not there -------------------------------------------------

def test_an_unknown_builtin_fails_validate_with_its_line_and_the_builtins(raff, example):
    edit(example / "analysis_procedures.yaml", "module: builtin.injection", "module: builtin.gainfit")
    edit(example / "analysis_procedures.yaml", "module: builtin.timewalk", "module: builtin.timewlak")
    result = raff("validate", "-c", example / "main_config.yaml")
    assert_clean_error(result, "analysis_procedures.yaml:26: procedure 'injection': module: no built-in "
                       "analysis 'builtin.gainfit'; built-ins: builtin.injection, builtin.pedestal,",
                       "analysis_procedures.yaml:38: procedure 'timewalk': module: no built-in analysis "
                       "'builtin.timewlak'", "(did you mean 'builtin.timewalk'?)")


def test_an_analysis_without_module_fails_validate_naming_the_analyses_folder(raff, example):
    with open(example / "analysis_procedures.yaml", "a") as f:
        f.write("\n- name: gainfit\n  type: analysis\n  daq: injection_scan\n")
    main = example / "main_config.yaml"
    result = raff("validate", "-c", main)
    assert_clean_error(result, "analysis_procedures.yaml:62: procedure 'gainfit': module 'gainfit' not found "
                       "(no `module:`, so its name): there is no analyses/ folder beside the main "
                       "config to look for gainfit.py in", "built-ins: builtin.injection")
    # the places the README names: analyses/ beside MAIN, or -a PATH
    (example / "analyses").mkdir()
    assert_clean_error(raff("validate", "-c", main), "no gainfit.py in", "analyses")
    (example / "analyses" / "gainfit.py").write_text("class gainfit:\n    pass\n")
    assert raff("validate", "-c", main).code == 0
    shutil.move(example / "analyses", example / "elsewhere")
    assert raff("validate", "-c", main, "-a", example / "elsewhere").code == 0
    assert raff("plan", "gainfit", "-c", main, "-a", example / "elsewhere").code == 0


def test_show_does_not_need_the_analysis_code(raff, example):
    with open(example / "analysis_procedures.yaml", "a") as f:
        f.write("\n- name: gainfit\n  type: analysis\n  daq: injection_scan\n")
    result = raff("show", "pedestal_run", "-c", example / "main_config.yaml")
    assert "gainfit" not in result.out + result.err
    assert "the dataset of 'pedestal_run' is not built" in result.err  # past the library's checks


# -- 7. names, not list indices; nearest names ----------------------------------------------

@pytest.mark.parametrize("command", ["build", "plan"])
def test_an_unknown_procedure_gets_the_nearest_name(raff, command):
    result = raff(command, "timewalkk", "-c", EXAMPLES / "main_config.yaml")
    assert_clean_error(result, "unknown procedure 'timewalkk' (did you mean 'timewalk'?); known: ")


def test_a_missing_power_on_default_names_the_procedure_and_the_nearest_file(raff, example):
    edit(example / "daq_procedures.yaml", "V3LDHexaboard-poweron-default.yaml", "V3LDHexaboard-poweron-defaults.yaml")
    result = raff("validate", "-c", example / "main_config.yaml")
    assert_clean_error(result, "daq_procedures.yaml:8: procedure 'pedestal_run': target_settings.power_on_default: "
                       "power-on default not found: ", "V3LDHexaboard-poweron-defaults.yaml (did you mean "
                       "'V3LDHexaboard-poweron-default.yaml' or 'V3HDHexaboard-poweron-default.yaml'?)")
    assert "[0]." not in result.out


def test_json_keeps_the_document_path_and_names_the_owner(raff, libdir):
    import json

    main = libdir.main(libdir.daq(extra="calibration: nope\n"))
    (diag,) = json.loads(raff("validate", "-c", main, "--json").out)["diagnostics"]
    assert diag["where"] == "procedures[0].calibration" and diag["owner"] == "procedure 'scan'"
