"""`raff plan NAME...`: what `raff build NAME...` would do, and why. Needs no backend."""

from __future__ import annotations

import json
import sys

from raffinerie.cli.options import add_analysis_path, add_config_and_backend, add_remote


def _in_remote(args, lib, plans) -> list[dict | None]:
    """Per plan, the points to acquire that the shared cache (--remote, `remote:`) holds."""
    url = getattr(args, "remote", None) or lib.remote
    if not url or not any(p.todo for p in plans):
        return [None] * len(plans)
    from raffinerie.builder.remotefill import in_remote
    from raffinerie.store.remote import RemoteCache

    with RemoteCache(url) as remote:
        return [in_remote(plan, remote) for plan in plans]


def _make_plans(args, lib, files, names: list[str]):
    """One plan of NAMEs per board, forced as `raff build --force` would be."""
    from raffinerie.analysis.code import code_provider
    from raffinerie.config.network import boards
    from raffinerie.graph.plan import force, make_plan
    from raffinerie.store.layout import CacheIndex, cache_root

    cache = CacheIndex(cache_root(lib.main, args.cache))
    code = code_provider(lib.main, args.analysis_path)
    plans = [make_plan(lib, names, board.identity, cache, files, code, retake=args.force_acquire)
             for board in boards(args.network, args.seed)]
    if args.force:
        for plan in plans:
            force(plan, [n.id for n in plan.nodes.values() if n.kind in ("dataset", "analysis")])
    return cache, plans


def plan_command(args) -> int:
    from raffinerie.cli.uptodate import is_fresh, remember
    from raffinerie.cli.workspace import load_valid

    names = list(dict.fromkeys(args.names))
    quick = args.check and not (args.json or args.points or args.dot)
    if quick and is_fresh(args, "plan", names):
        print(f"{', '.join(names)}: up to date (nothing it reads has changed since it was last planned)")
        return 0
    lib, files = load_valid(args)
    cache, plans = _make_plans(args, lib, files, names)
    remote = _in_remote(args, lib, plans)
    if args.dot:
        from raffinerie.cli.render import plan_dot

        for plan in plans:
            sys.stdout.write(plan_dot(plan))
    elif args.json:
        _print_json(plans, remote)
    else:
        _print_text(args, lib, cache, plans, remote)
    if len(plans) == 1:
        remember(args, "plan", names, plans[0])
    return 2 if args.check and any(plan.todo for plan in plans) else 0


def _print_json(plans, remote: list[dict | None]) -> None:
    from raffinerie.cli.render import plan_json

    docs = [plan_json(p) for p in plans]
    for doc, found in zip(docs, remote):
        if found is not None:
            doc["in_remote_cache"] = found  # {procedure: points to acquire the remote holds}
    json.dump(docs[0] if len(plans) == 1 else {"boards": docs}, sys.stdout, indent=1)
    print()


def _print_text(args, lib, cache, plans, remote: list[dict | None]) -> None:
    from raffinerie.cli.render import count, render_plan

    texts = [render_plan(plan, cache.root, list_points=args.points) for plan in plans]
    for i, found in enumerate(remote):
        for name, n in (found or {}).items():
            todo = plans[i].points[name].to_acquire
            texts[i] += (f"\n{name}: {n} of its {count(todo, 'point')} to acquire {'is' if n == 1 else 'are'} "
                         f"in remote cache {args.remote or lib.remote}; `raff build` pulls "
                         f"{'it' if n == 1 else 'them'}")
    print("\n\n".join(texts))


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="say what `raff build NAME...` would do, and why",
                       description="Dry run: the dependency tree of NAME, each node with its status "
                                   "and reason, the scan axes and how many points are cached or to "
                                   "acquire. Several NAMEs are planned together, as `raff build` builds "
                                   "them: one plan of their union, a node or point they share once "
                                   "(--json prints one document with `procedures`, --dot one graph with "
                                   "the NAMEs outlined, --check looks at all of them). Exit 0; with "
                                   "--check, exit 2 when anything would be built.")
    p.add_argument("names", metavar="NAME", nargs="+", help="procedure or workflow (one or more)")
    add_config_and_backend(p)
    p.add_argument("--json", action="store_true", help="print the whole plan as JSON")
    p.add_argument("--check", action="store_true",
                   help="exit 2 when anything would be built, 0 when all is up to date")
    p.add_argument("--points", action="store_true", help="list every point with its coordinates")
    p.add_argument("--dot", action="store_true",
                   help="print the dependency graph in Graphviz DOT, nodes coloured by status "
                        "(`raff plan NAME --dot | dot -Tsvg > plan.svg`)")
    add_remote(p)
    add_analysis_path(p, "a package directory or .py file with user analyses (default: analyses/ beside MAIN)")
    p.add_argument("--force", action="store_true",
                   help="plan `raff build --force`: cached datasets and analyses are built again")
    p.add_argument("--force-acquire", action="store_true",
                   help="plan `raff build --force-acquire`: every point is acquired again, as a new take")
    p.set_defaults(func=plan_command)
