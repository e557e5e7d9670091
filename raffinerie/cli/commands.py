"""The commands that need no backend: validate and plan."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from raffinerie.config.checks import validate
from raffinerie.config.library import Library, load_library
from raffinerie.config.network import identity, load_network
from raffinerie.config.resolve import ConfigFiles
from raffinerie.errors import ERROR, WARNING, ConfigErrors, RaffError
from raffinerie.graph.plan import make_plan
from raffinerie.store.layout import CacheIndex, cache_root


def main_path(args) -> Path:
    path = Path(args.config)
    if not path.is_file():
        hint = "" if args.config != "main_config.yaml" else " (name one with -c MAIN)"
        raise RaffError(f"main config not found{hint}", file=path)
    return path


def load_valid(args) -> tuple[Library, ConfigFiles]:
    """The library of `-c MAIN`, or ConfigErrors with every error in it."""
    lib = load_library(main_path(args))
    files = ConfigFiles()
    errors = [d for d in validate(lib, files=files, max_points=args.max_points) if d.severity == ERROR]
    if errors:
        raise ConfigErrors(errors)
    return lib, files


def validate_command(args) -> int:
    lib = load_library(main_path(args))
    diags = validate(lib, strict=args.strict, max_points=args.max_points)
    errors = sum(d.severity == ERROR for d in diags)
    warnings = sum(d.severity == WARNING for d in diags)
    if args.json:
        print(json.dumps({
            "valid": errors == 0, "errors": errors, "warnings": warnings,
            "files": [str(f) for f in lib.files],
            "procedures": {n: p.kind for n, p in sorted(lib.procedures.items())},
            "workflows": sorted(lib.workflows),
            "diagnostics": [d.as_dict() for d in diags]}, indent=2))
    else:
        for d in diags:
            print(d.format())
        verdict = "invalid" if errors else "valid"
        print(f"{lib.main}: {verdict}: {len(lib.procedures)} procedures, {len(lib.workflows)} "
              f"workflows in {len(lib.files)} files; {errors} errors, {warnings} warnings")
    return 1 if errors else 0


def plan_command(args) -> int:
    from raffinerie.cli.render import plan_json, render_plan

    lib, files = load_valid(args)
    network = load_network(Path(args.network)) if args.network else None
    from raffinerie.analysis.code import code_provider

    cache = CacheIndex(cache_root(lib.main, args.cache))
    plan = make_plan(lib, args.name, identity(network, args.seed), cache, files,
                     code_provider(lib.main, args.analysis_path))
    if args.json:
        json.dump(plan_json(plan), sys.stdout, indent=1)
        print()
    else:
        print(render_plan(plan, cache.root, list_points=args.points))
    return 2 if args.check and plan.todo else 0
