"""The command line: help, light imports on the fast paths, clean exits."""

from __future__ import annotations

import subprocess
import sys

from conftest import EXAMPLES

HEAVY = ("pandas", "zarr", "matplotlib", "zmq", "uproot", "numpy")


def imported_modules(*args: str) -> set[str]:
    code = ("import sys\nfrom raffinerie.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('MODULES', ' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("MODULES"))
    return {m.split(".")[0] for m in line.split()[1:]}


def test_help_lists_the_commands(raff):
    result = raff("--help")
    assert result.code == 0
    for command in ("validate", "plan"):
        assert command in result.out


def test_help_validate_and_plan_import_nothing_heavy():
    main = str(EXAMPLES / "main_config.yaml")
    for args in (["--help"], ["validate", "-c", main], ["plan", "characterisation", "-c", main]):
        heavy = imported_modules(*args) & set(HEAVY)
        assert not heavy, f"raff {' '.join(args)} imported {heavy}"


def test_python_dash_m_and_version(raff):
    result = raff("--version")
    assert result.code == 0 and result.out.startswith("raff ")


def test_unknown_command_is_a_usage_error(raff):
    result = raff("bild", "x")
    assert result.code == 2 and "invalid choice" in result.err
