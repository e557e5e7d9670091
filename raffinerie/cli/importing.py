"""`raff import FOLDER --name NAME`: existing hexactrl runs (.raw or .root + .yaml) into the cache."""

from __future__ import annotations

import sys
from pathlib import Path

from raffinerie.cli.options import add_config


def import_command(args) -> int:
    from raffinerie.builder.importer import Assumption, import_runs
    from raffinerie.builder.progress import Progress
    from raffinerie.cli.workspace import main_path
    from raffinerie.store.layout import cache_root

    main = main_path(args)
    root = cache_root(main, args.cache)
    assumptions = [Assumption.parse(text) for text in args.assume or []]
    report = import_runs(Path(args.folder), args.name, main, root, args.board, Progress(quiet=args.quiet),
                         assumptions, args.runs)
    for line in report.skipped:
        print(f"warning: {line}", file=sys.stderr)
    for axis, runs in report.missing.items():
        print(f"warning: {len(runs)} runs lack {axis} in their yaml ({_runs(runs)}): imported with {axis} "
              f"unknown (NaN in the analyses), not the power-on default; if you know it, import again "
              f"with --assume {axis}=VALUE --runs ...", file=sys.stderr)
    for axis, (value, runs) in report.assumed.items():
        print(f"{axis} = {value} assumed for {len(runs)} runs whose yaml lacks it ({_runs(runs)}); "
              f"recorded in {report.library.name}")
    for c in report.corrupt:
        print(f"{c.run}: {c.halves} corrupt halves left out ({'; '.join(c.lines)})")
    if report.corrupt:
        halves = sum(c.halves for c in report.corrupt)
        print(f"corrupt halves: {halves} in {len(report.corrupt)} of {report.runs} runs (bad header or CRC; "
              "left out of the statistics)")
    axes = ", ".join(report.axes) or "none"
    print(f"{args.name}: {report.imported} runs imported, {report.already} already in the cache, "
          f"{len(report.skipped)} skipped; axes: {axes}")
    print(f"procedure written to {report.library} and included in {main}")
    return 0


def _runs(names: list[str]) -> str:
    """A short list of run names: test_run_1 .. test_run_16 when they are many."""
    return ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]} .. {names[-1]}"


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="bring existing hexactrl runs (.raw or .root + .yaml) into the cache",
                       description="Import pairs X.raw + X.yaml (or, where no raw file is left, the runsummary "
                                   "X.root + X.yaml) from FOLDER as measurements keyed by "
                                   "their configurations, and record a procedure NAME (axes inferred from "
                                   "what differs between the runs) in a library the main config includes.")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--name", required=True, help="name of the procedure to create")
    p.add_argument("--board", help="identity of the board the runs were taken on (part of the keys)")
    p.add_argument("--assume", action="append", metavar="AXIS=VALUE",
                   help="the value of scan axis AXIS for runs whose yaml lacks it (repeatable); without "
                        "it such runs are imported with that value unknown (NaN), never the default")
    p.add_argument("--runs", metavar="SPEC",
                   help="the runs --assume applies to: numbers, ranges or names (1-16,20); "
                        "default: every run lacking the key")
    p.add_argument("--cache", metavar="DIR", help="cache directory")
    p.add_argument("--quiet", action="store_true")
    add_config(p)
    p.set_defaults(func=import_command)
