"""`raff validate` and `raff migrate`: the configuration library itself, no cache or backend."""

from __future__ import annotations

import json

from raffinerie.cli.options import add_analysis_path, add_config


def validate_command(args) -> int:
    from raffinerie.cli.render import count
    from raffinerie.cli.workspace import main_path
    from raffinerie.config.checks import validate
    from raffinerie.config.library import load_library
    from raffinerie.errors import ERROR, WARNING

    from raffinerie.analysis.code import module_check

    lib = load_library(main_path(args))
    diags = validate(lib, strict=args.strict, max_points=args.max_points,
                     module=module_check(lib.main, args.analysis_path))
    errors = sum(d.severity == ERROR for d in diags)
    warnings = sum(d.severity == WARNING for d in diags)
    if args.json:
        print(json.dumps({
            "valid": errors == 0, "errors": errors, "warnings": warnings, "format": lib.format,
            "files": [str(f) for f in lib.files],
            "procedures": {n: p.kind for n, p in sorted(lib.procedures.items())},
            "workflows": sorted(lib.workflows),
            "diagnostics": [d.as_dict() for d in diags]}, indent=2))
    else:
        for d in diags:
            print(d.format())
        verdict = "invalid" if errors else "valid"
        print(f"{lib.main}: {verdict} ({lib.format} format): {count(len(lib.procedures), 'procedure')}, "
              f"{count(len(lib.workflows), 'workflow')} in {count(len(lib.files), 'file')}; "
              f"{count(errors, 'error')}, {count(warnings, 'warning')}")
    return 1 if errors else 0


def migrate_command(args) -> int:
    from raffinerie.config.dr10 import migrate_command as migrate

    return migrate(args)


def add_validate_parser(sub) -> None:
    p = sub.add_parser("validate", help="check a configuration library (schemas, references, values)",
                       description="Check the main config and every library, target and daq file it "
                                   "names. Reports every problem as file:line: place: message. "
                                   "Exit 0 when valid (warnings allowed), 1 otherwise.")
    add_config(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON (for CI)")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    add_analysis_path(p, "where user analyses are (as for build; default: $RAFF_ANALYSIS_PATH or "
                         "analyses/ beside MAIN)")
    p.add_argument("--cache", metavar="DIR",
                   help="cache directory, as for the other commands (validate does not need it; "
                        "it is accepted so that one set of options serves every command)")
    p.set_defaults(func=validate_command)


def add_migrate_parser(sub) -> None:
    p = sub.add_parser("migrate", help="write a Datenraffinerie 1.0 library in this (0.1.2) format",
                       description="Read a Datenraffinerie 1.0 main configuration and write the equivalent "
                                   "library in the Datenraffinerie 0.1.2 format that raffinerie documents, "
                                   "with its main file at DIR/main_config.yaml. The original files are never "
                                   "changed. (raff reads 1.0 libraries directly too; this is for keeping "
                                   "one format.)")
    p.add_argument("main", metavar="MAIN", help="the 1.0 main configuration")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="folder to write (must not exist)")
    p.set_defaults(func=migrate_command)
