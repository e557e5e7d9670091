"""Errors scoped to what is asked (issue 23, item 2).

`raff validate` reports every problem of the library; `plan` and `build` of
NAME fail only on the problems of what NAME needs (itself, the procedures it
reads, their calibrations); the others are one warning line. The real
Datenraffinerie 1.0 library has such a bug (`full_toa_scan` asks for
phase_strobe 16), which used to stop every procedure.
"""

from __future__ import annotations

from conftest import assert_clean_error

from raffinerie.config.library import load_library

SCAN = "- key: [roc_s0, Top, 0, phase_strobe]\n  values: [{values}]\n"
ANALYSES = """\
- {name: ped, type: analysis, daq: full_toa_scan, module: builtin.pedestal}
- {name: trim, type: analysis, daq: scan, module: builtin.pedestal_trim}
- {name: bad2, type: daq, repeat: two, target_settings: {power_on_default: ./defaults/pod.yaml},
   daq_settings: {default: ./defaults/daq.yaml}}
"""
FLOWS = "workflows:\n  - {name: all, procedures: [trimmed, ped]}\n  - {name: good, procedures: [trimmed]}\n"
PHASE_16 = "procedure 'full_toa_scan': parameters[0].values[1]: phase_strobe = 16 does not fit its 4-bit register"
WARNING = "warning: 2 other procedures have errors (bad2, full_toa_scan); raff validate lists them"


def library(libdir):
    procedures = (libdir.daq("scan", SCAN.format(values="1, 2"))
                  + libdir.daq("full_toa_scan", SCAN.format(values="15, 16"))
                  + libdir.daq("trimmed", SCAN.format(values="3"), extra="calibration: trim\n")
                  + ANALYSES)
    return libdir.main(procedures, FLOWS)


def test_needs_follows_workflows_analyses_and_calibrations(libdir):
    lib = load_library(library(libdir))
    assert lib.needs(["good"]) == {"good", "trimmed", "trim", "scan"}
    assert lib.needs(["ped"]) == {"ped", "full_toa_scan"}
    assert lib.needs(["nowhere"]) == {"nowhere"}


def test_validate_lists_every_error(raff, libdir):
    result = raff("validate", "-c", library(libdir))
    assert_clean_error(result, PHASE_16, "procedure 'bad2': repeat: expected an integer")
    assert "2 errors" in result.out


def test_plan_of_a_sound_procedure_warns_of_the_others_in_one_line(raff, libdir):
    main = library(libdir)
    for name in ("scan", "good"):
        result = raff("plan", name, "-c", main)
        assert result.code == 0, result.err
        assert result.err.splitlines() == [WARNING]
        assert "phase_strobe = 16" not in result.out + result.err
    assert "new points" in raff("plan", "trimmed", "-c", main).out  # through its calibration's analysis


def test_what_needs_the_broken_procedure_fails_on_its_error_only(raff, libdir):
    main = library(libdir)
    for name in ("full_toa_scan", "ped", "all"):
        result = raff("plan", name, "-c", main)
        assert_clean_error(result, PHASE_16)
        assert "bad2" not in result.err and "warning" not in result.err


def test_build_of_a_sound_procedure_acquires_it(raff, libdir):
    result = raff("build", "scan", "-c", library(libdir), "--quiet")
    assert result.code == 0, result.err
    assert WARNING in result.err.splitlines()
    assert "2 points acquired" in result.out


def test_a_library_file_that_does_not_load_stops_everything(raff, libdir):
    # what it defines cannot be known, so it may be what NAME needs
    libdir.write("more.yaml", "- name: broken\n  type: [daq\n")
    main = libdir.main(libdir.daq("scan", SCAN.format(values="1")), "libraries: [more.yaml]\n")
    assert_clean_error(raff("plan", "scan", "-c", main), "more.yaml:3", "YAML syntax error")


def test_a_procedure_with_a_schema_error_stops_its_own_plan(raff, libdir):
    # an entry that did not load is still known by its name: its plan names its problem
    result = raff("plan", "bad2", "-c", library(libdir))
    assert_clean_error(result, "procedure 'bad2': repeat: expected an integer, got the string 'two'")
    assert "phase_strobe" not in result.err
