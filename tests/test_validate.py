"""`raff validate`: every problem a user can write, one clear line each."""

from __future__ import annotations

import json

import pytest

from conftest import EXAMPLES, assert_clean_error

CALIB = """\
- key: [[roc_s0, roc_s1, roc_s2], ReferenceVoltage, [0, 1], Calib]
  range: {start: 0, stop: 2048, step: 32}
"""


def validate(raff, main, *more):
    return raff("validate", "-c", main, *more)


def test_the_example_library_is_valid(raff):
    result = validate(raff, EXAMPLES / "main_config.yaml", "--strict")
    assert result.code == 0, result.out + result.err
    assert "valid" in result.out and "0 errors, 0 warnings" in result.out


def test_a_valid_scan(raff, libdir):
    main = libdir.main(libdir.daq(parameters=CALIB))
    assert validate(raff, main).code == 0


def test_yaml_syntax_error_names_file_line_column(raff, libdir):
    main = libdir.write("main.yaml", "procedures:\n  - name: [unclosed\n    type: daq\n")
    result = validate(raff, main)
    assert_clean_error(result, "main.yaml:", "YAML syntax error at column")


def test_empty_file(raff, libdir):
    main = libdir.write("main.yaml", "")
    assert_clean_error(validate(raff, main), "main.yaml:1", "file is empty")


def test_top_level_list_where_a_mapping_belongs(raff, libdir):
    main = libdir.write("main.yaml", "- a\n- b\n")
    assert_clean_error(validate(raff, main), "main.yaml:1", "expected a mapping, got a list")


def test_missing_required_field(raff, libdir):
    main = libdir.main("- name: scan\n  type: daq\n  daq_settings: {default: ./defaults/daq.yaml}\n")
    assert_clean_error(validate(raff, main), "main.yaml:2: procedure 'scan': "
                       "missing required field 'target_settings'")


def test_unknown_field_suggests_the_right_one(raff, libdir):
    main = libdir.main(libdir.daq(extra="paramters: []\n"))
    assert_clean_error(validate(raff, main), "unknown field 'paramters' (did you mean 'parameters'?)",
                       "procedure 'scan': paramters")


def test_value_of_the_wrong_type(raff, libdir):
    main = libdir.main(libdir.daq(extra="repeat: two\n"))
    assert_clean_error(validate(raff, main), "procedure 'scan': repeat",
                       "expected an integer, got the string 'two'")


def test_unknown_procedure_type(raff, libdir):
    main = libdir.main("- name: x\n  type: dqa\n")
    assert_clean_error(validate(raff, main), "procedure 'x': type", "must be one of daq, analysis")


def test_empty_key_list(raff, libdir):
    main = libdir.main(libdir.daq(parameters="- key: []\n  values: [1]\n"))
    assert_clean_error(validate(raff, main), "procedure 'scan': parameters[0].key", "is an empty list")


def test_range_with_step_zero(raff, libdir):
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, Top, 0, phase_strobe]\n"
                                             "  range: {start: 0, stop: 4, step: 0}\n"))
    assert_clean_error(validate(raff, main), "parameters[0].range.step", "range step is 0")


def test_range_with_stop_below_start(raff, libdir):
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, Top, 0, phase_strobe]\n"
                                             "  range: {start: 8, stop: 2}\n"))
    assert_clean_error(validate(raff, main), "parameters[0].range",
                       "range is empty: stop 2 is not above start 8")


def test_range_and_values_together(raff, libdir):
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, Top, 0, phase_strobe]\n"
                                             "  range: {stop: 2}\n  values: [1]\n"))
    assert_clean_error(validate(raff, main), "gives both range and values")


def test_parameter_without_values(raff, libdir):
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, Top, 0, phase_strobe]\n"))
    assert_clean_error(validate(raff, main), "needs range or values")


def test_value_that_does_not_fit_its_register(raff, libdir):
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, ReferenceVoltage, 0, Calib]\n"
                                             "  values: [100, 5000]\n"))
    assert_clean_error(validate(raff, main), "parameters[0].values[1]",
                       "Calib = 5000 does not fit its 12-bit register (0..4095)")


def test_range_that_leaves_its_register(raff, libdir):
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, Top, 0, phase_strobe]\n"
                                             "  range: {stop: 17}\n"))
    assert_clean_error(validate(raff, main), "phase_strobe = 16 does not fit its 4-bit register")


def test_register_value_of_the_wrong_type(raff, libdir):
    main = libdir.main(libdir.daq(parameters="- key: [roc_s0, ReferenceVoltage, 0, Calib]\n"
                                             "  values: [abc]\n"))
    assert_clean_error(validate(raff, main), "Calib takes an integer, got str 'abc'")


def test_initial_config_values_are_checked_where_they_are_written(raff, libdir):
    libdir.write("init.yaml", "roc_s1:\n  GlobalAnalog:\n    1:\n      Cf: 99\n")
    main = libdir.main(libdir.daq(extra="").replace(
        "power_on_default: ./defaults/pod.yaml",
        "power_on_default: ./defaults/pod.yaml\n    initial_config: ./init.yaml"))
    assert_clean_error(validate(raff, main), "init.yaml:4: roc_s1.GlobalAnalog[1].Cf",
                       "Cf = 99 does not fit its 4-bit register")


def test_key_path_of_the_register_map_not_in_the_pod_is_a_warning_and_strict_makes_it_an_error(raff, libdir):
    # chips 3 and 4 are an HD board's: registers the chips have, that this (LD) power-on default lacks
    main = libdir.main(libdir.daq(parameters="- key: [[roc_s3, roc_s4], ReferenceVoltage, 0, Calib]\n"
                                             "  values: [1]\n"))
    result = validate(raff, main)
    assert result.code == 0
    assert "warning: key path roc_s3.ReferenceVoltage.0.Calib is not in the power-on default" in result.out
    assert "roc_s4.ReferenceVoltage.0.Calib" in result.out
    assert_clean_error(validate(raff, main, "--strict"), "roc_s3")


def test_missing_power_on_default_file(raff, libdir):
    main = libdir.main(libdir.daq().replace("./defaults/pod.yaml", "./defaults/nope.yaml"))
    assert_clean_error(validate(raff, main), "main.yaml:5: procedure 'scan': target_settings.power_on_default",
                       "power-on default not found", "nope.yaml")


def test_missing_library_file(raff, libdir):
    main = libdir.write("main.yaml", "libraries: [./missing.yaml]\n")
    assert_clean_error(validate(raff, main), "main.yaml:1: libraries[0]", "library file not found",
                       "missing.yaml")


def test_library_that_includes_itself(raff, libdir):
    libdir.write("a.yaml", "libraries: [./b.yaml]\n")
    libdir.write("b.yaml", "libraries: [./a.yaml]\n")
    main = libdir.write("main.yaml", "libraries: [./a.yaml]\n")
    assert_clean_error(validate(raff, main), "b.yaml:1: libraries[0]",
                       "library includes itself (a.yaml -> b.yaml -> a.yaml)")


def test_duplicate_names(raff, libdir):
    libdir.write("lib.yaml", libdir.daq("scan"))
    main = libdir.write("main.yaml", "libraries: [./lib.yaml]\nprocedures:\n"
                        + "\n".join("  " + l for l in libdir.daq("scan").splitlines()) + "\n")
    assert_clean_error(validate(raff, main), "'scan' is defined twice (first at")


def test_analysis_of_an_unknown_daq_procedure(raff, libdir):
    main = libdir.main(libdir.daq("scan") + "- {name: ana, type: analysis, daq: scna}\n")
    assert_clean_error(validate(raff, main), "procedure 'ana': daq",
                       "analysis 'ana' reads unknown daq procedure 'scna' (did you mean 'scan'?)")


def test_analysis_whose_daq_is_an_analysis(raff, libdir):
    main = libdir.main(libdir.daq("scan") + "- {name: a1, type: analysis, daq: scan}\n"
                       "- {name: a2, type: analysis, daq: a1}\n")
    assert_clean_error(validate(raff, main), "'a1' is an analysis, not a daq procedure")


def test_calibration_that_is_not_an_analysis(raff, libdir):
    main = libdir.main(libdir.daq("scan") + libdir.daq("other", extra="calibration: scan\n"))
    assert_clean_error(validate(raff, main), "calibration 'scan' is a daq procedure, not an analysis")


def test_unknown_calibration(raff, libdir):
    main = libdir.main(libdir.daq("scan", extra="calibration: trims\n"))
    assert_clean_error(validate(raff, main), "takes its calibration from 'trims', which is not a procedure")


def test_workflow_naming_an_unknown_procedure(raff, libdir):
    main = libdir.main(libdir.daq("scan"), extra="workflows:\n  - {name: all, procedures: [scan, nope]}\n")
    assert_clean_error(validate(raff, main), "workflow 'all': procedures[1]",
                       "workflow 'all' names unknown procedure 'nope'")


def test_dependency_cycle(raff, libdir):
    main = libdir.main(libdir.daq("scan", extra="calibration: trim\n")
                       + "- {name: trim, type: analysis, daq: scan}\n")
    assert_clean_error(validate(raff, main), "dependency cycle: scan -> trim -> scan")


def test_all_problems_are_reported_at_once(raff, libdir):
    main = libdir.main(libdir.daq("scan", extra="calibration: nope\nrepeat: 0\n")
                       + "- {name: ana, type: analysis, daq: missing}\n")
    result = validate(raff, main)
    assert_clean_error(result, "repeat", "missing")
    assert len([l for l in result.lines if ": " in l and "valid" not in l]) >= 2


def test_missing_main_config(raff, tmp_path):
    assert_clean_error(raff("validate", cwd=tmp_path), "main_config.yaml", "main config not found")


def test_json_output_for_ci(raff, libdir):
    main = libdir.main(libdir.daq(extra="calibration: nope\n"))
    result = validate(raff, main, "--json")
    assert result.code == 1
    doc = json.loads(result.out)
    assert doc["valid"] is False and doc["errors"] == 1
    (diag,) = doc["diagnostics"]
    assert diag["file"].endswith("main.yaml") and diag["line"] == 8
    assert diag["where"] == "procedures[0].calibration"


@pytest.mark.parametrize("name", ["main.schema.json", "daq-procedure.schema.json",
                                  "analysis-procedure.schema.json", "network.schema.json",
                                  "library.schema.json", "procedure.schema.json"])
def test_published_schemas_are_valid_draft_2020_12(name):
    from jsonschema import Draft202012Validator

    from raffinerie.config.schema import schema_files

    schema = schema_files()[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith(name) and schema.get("description")
