"""The commands that need no backend: validate and plan."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from raffinerie.config.checks import validate
from raffinerie.config.library import Library, load_library
from raffinerie.config.network import boards
from raffinerie.config.resolve import ConfigFiles
from raffinerie.errors import ERROR, WARNING, ConfigErrors, RaffError
from raffinerie.graph.plan import force, make_plan
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
            "valid": errors == 0, "errors": errors, "warnings": warnings, "format": lib.format,
            "files": [str(f) for f in lib.files],
            "procedures": {n: p.kind for n, p in sorted(lib.procedures.items())},
            "workflows": sorted(lib.workflows),
            "diagnostics": [d.as_dict() for d in diags]}, indent=2))
    else:
        for d in diags:
            print(d.format())
        verdict = "invalid" if errors else "valid"
        from raffinerie.cli.render import count

        print(f"{lib.main}: {verdict} ({lib.format} format): {count(len(lib.procedures), 'procedure')}, "
              f"{count(len(lib.workflows), 'workflow')} in {count(len(lib.files), 'file')}; "
              f"{count(errors, 'error')}, {count(warnings, 'warning')}")
    return 1 if errors else 0


def one_board(args):
    """The board of a command that works on one: (network or None, seed)."""
    found = boards(getattr(args, "network", None), getattr(args, "seed", None))
    if len(found) > 1:
        raise RaffError(f"`raff {args.command}` works on one board; name one --network (or --seed)")
    return found[0].network, found[0].seed


def _in_remote(args, lib, plans) -> list[dict | None]:
    """Per plan, the points to acquire that the shared cache (--remote, `remote:`) holds."""
    url = getattr(args, "remote", None) or lib.remote
    if not url or not any(p.todo for p in plans):
        return [None] * len(plans)
    from raffinerie.builder.remotefill import in_remote
    from raffinerie.store.remote import RemoteCache

    with RemoteCache(url) as remote:
        return [in_remote(plan, remote) for plan in plans]


def plan_command(args) -> int:
    from raffinerie.cli.render import plan_json, render_plan
    from raffinerie.cli.uptodate import is_fresh, remember

    quick = args.check and not (args.json or args.points or getattr(args, "dot", False))
    if quick and is_fresh(args, "plan", list(dict.fromkeys(args.names))):
        label = ", ".join(dict.fromkeys(args.names))
        print(f"{label}: up to date (nothing it reads has changed since it was last planned)")
        return 0
    lib, files = load_valid(args)
    found = boards(args.network, args.seed)
    from raffinerie.analysis.code import code_provider

    cache = CacheIndex(cache_root(lib.main, args.cache))
    code = code_provider(lib.main, args.analysis_path)
    names = list(dict.fromkeys(args.names))
    plans = [make_plan(lib, names, board.identity, cache, files, code, retake=args.force_acquire)
             for board in found]
    if args.force:
        for plan in plans:
            force(plan, [n.id for n in plan.nodes.values() if n.kind in ("dataset", "analysis")])
    remote = _in_remote(args, lib, plans)
    if getattr(args, "dot", False):
        from raffinerie.cli.render import plan_dot

        for plan in plans:
            sys.stdout.write(plan_dot(plan))
    elif args.json:
        docs = [plan_json(p) for p in plans]
        for doc, found in zip(docs, remote):
            if found is not None:
                doc["in_remote_cache"] = found  # {procedure: points to acquire the remote holds}
        doc = docs[0] if len(plans) == 1 else {"boards": docs}
        json.dump(doc, sys.stdout, indent=1)
        print()
    else:
        texts = [render_plan(plan, cache.root, list_points=args.points) for plan in plans]
        for i, found in enumerate(remote):
            for name, n in (found or {}).items():
                texts[i] += (f"\n{name}: {n} of its {plans[i].points[name].to_acquire} points to acquire are "
                             f"in remote cache {args.remote or lib.remote}; `raff build` pulls them")
        print("\n\n".join(texts))
    if len(plans) == 1:
        remember(args, "plan", names, plans[0])
    return 2 if args.check and any(plan.todo for plan in plans) else 0
