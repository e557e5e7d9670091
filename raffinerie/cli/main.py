"""`raff`: the command line. Thin: parse, call the layers below, print.

Every error a user can cause ends here as one line on stderr and a non-zero
exit code; tracebacks are for bugs only. Heavy packages (pandas, zarr,
matplotlib, zmq) are imported only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys

from raffinerie import __version__
from raffinerie.cli.numbers import SEED, whole
from raffinerie.errors import ConfigErrors, RaffError

DEFAULT_MAIN = "main_config.yaml"


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="MAIN",
                   default=os.environ.get("RAFF_CONFIG", DEFAULT_MAIN),
                   help=f"main configuration file (default: $RAFF_CONFIG or ./{DEFAULT_MAIN})")
    p.add_argument("--max-points", type=whole(1), metavar="N",  # a string default is parsed by the type
                   default=os.environ.get("RAFF_MAX_POINTS", "10000000"),
                   help="refuse procedures with more points than N (default: $RAFF_MAX_POINTS or "
                        "10,000,000)")


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", metavar="DIR",
                   help="cache directory (default: $RAFF_CACHE or .raffinerie-cache/ beside MAIN)")
    p.add_argument("--network", metavar="FILE", action="append",
                   help="network file naming a board's hosts (default: the embedded emulator); "
                        "repeat it to build on several boards at once")
    p.add_argument("--seed", type=SEED, action="append", metavar="S",
                   help="seed of the embedded emulator's board (default 0), part of every key; "
                        "repeat it for several emulated boards")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raff",
        description="raffinerie: incremental acquisition and analysis of HGCROCv3 data. "
                    "Describe scans and analyses in YAML; `raff build NAME` does only the work "
                    "whose inputs changed, `raff plan NAME` says what that would be, and why.")
    parser.add_argument("--version", action="version", version=f"raff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("validate", help="check a configuration library (schemas, references, values)",
                       description="Check the main config and every library, target and daq file it "
                                   "names. Reports every problem as file:line: place: message. "
                                   "Exit 0 when valid (warnings allowed), 1 otherwise.")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON (for CI)")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--cache", metavar="DIR",
                   help="cache directory, as for the other commands (validate does not need it; "
                        "it is accepted so that one set of options serves every command)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("plan", help="say what `raff build NAME...` would do, and why",
                       description="Dry run: the dependency tree of NAME, each node with its status "
                                   "and reason, the scan axes and how many points are cached or to "
                                   "acquire. Several NAMEs are planned together, as `raff build` builds "
                                   "them: one plan of their union, a node or point they share once "
                                   "(--json prints one document with `procedures`, --dot one graph with "
                                   "the NAMEs outlined, --check looks at all of them). Exit 0; with "
                                   "--check, exit 2 when anything would be built.")
    p.add_argument("names", metavar="NAME", nargs="+", help="procedure or workflow (one or more)")
    _add_config(p)
    _add_backend(p)
    p.add_argument("--json", action="store_true", help="print the whole plan as JSON")
    p.add_argument("--check", action="store_true",
                   help="exit 2 when anything would be built, 0 when all is up to date")
    p.add_argument("--points", action="store_true", help="list every point with its coordinates")
    p.add_argument("--dot", action="store_true",
                   help="print the dependency graph in Graphviz DOT, nodes coloured by status "
                        "(`raff plan NAME --dot | dot -Tsvg > plan.svg`)")
    from raffinerie.cli.build import add_remote

    add_remote(p)
    p.add_argument("-a", "--analysis-path", metavar="PATH",
                   help="a package directory or .py file with user analyses (default: analyses/ beside MAIN)")
    p.add_argument("--force", action="store_true",
                   help="plan `raff build --force`: cached datasets and analyses are built again")
    p.add_argument("--force-acquire", action="store_true",
                   help="plan `raff build --force-acquire`: every point is acquired again, as a new take")
    p.set_defaults(func=_plan)

    p = sub.add_parser("raw", help="decode hexactrl runs (.raw with its .yaml, or .root)",
                       description="Decode a hexactrl run and print or write its tables as CSV.")
    raw_sub = p.add_subparsers(dest="raw_command", metavar="TABLE")
    raw_sub.required = True
    for name, text in (("summary", "per-channel statistics (one row per chip, half, channel)"),
                       ("events", "the event table (one row per event, chip, half, channel)")):
        q = raw_sub.add_parser(name, help=text, description=f"{text}. Corrupt halves (bad header "
                               "or CRC) are reported on stderr and left out of the statistics.")
        q.add_argument("file", metavar="FILE", help="a .raw file (with its .yaml beside it) or a .root file")
        q.add_argument("--config", metavar="RUN.yaml",
                       help="run configuration that gives each chip's mode (default: FILE.yaml)")
        q.add_argument("--mode", choices=("characterisation", "normal"),
                       help="channel-word layout for every chip, instead of a run configuration")
        q.add_argument("-o", "--output", metavar="OUT.csv", help="write CSV here (default: stdout)")
        q.set_defaults(func=_raw)

    p = sub.add_parser("report", help="write a self-contained HTML report of a procedure or workflow",
                       description="One HTML page per procedure or workflow, with everything inlined "
                                   "(no network access): every analysis with its plots and sortable summary "
                                   "table, flagged channels highlighted, each dataset's shape and axes, and "
                                   "the provenance of each node (key, reason and time of its last build, "
                                   "board, raffinerie version, code digests, calibration chain).")
    p.add_argument("name", metavar="NAME", help="procedure or workflow")
    _add_config(p)
    _add_backend(p)
    p.add_argument("-o", "--output", metavar="DIR",
                   help="folder for NAME.html (default: raff-out/ beside MAIN)")
    p.add_argument("-a", "--analysis-path", metavar="PATH", help="user analyses (as for build)")
    p.set_defaults(func=_report)

    p = sub.add_parser("migrate", help="write a Datenraffinerie 1.0 library in this (0.1.2) format",
                       description="Read a Datenraffinerie 1.0 main configuration and write the equivalent "
                                   "library in the Datenraffinerie 0.1.2 format that raffinerie documents, "
                                   "with its main file at DIR/main_config.yaml. The original files are never "
                                   "changed. (raff reads 1.0 libraries directly too; this is for keeping "
                                   "one format.)")
    p.add_argument("main", metavar="MAIN", help="the 1.0 main configuration")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="folder to write (must not exist)")
    p.set_defaults(func=_migrate)

    from raffinerie.cli import build, emulate

    build.add_parsers(sub, _add_config, _add_backend)
    emulate.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigErrors as exc:
        for diag in exc.diagnostics:
            print(diag.format(), file=sys.stderr)
        return exc.exit_code
    except RaffError as exc:
        print(f"raff: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("raff: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `raff plan X --points | head`: the reader has gone; so do we, quietly
        _silence_stdout()
        return 0
    except OSError as exc:  # a path that cannot be written or read: disk full, permissions, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"raff: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def _validate(args) -> int:
    from raffinerie.cli.commands import validate_command

    return validate_command(args)


def _plan(args) -> int:
    from raffinerie.cli.commands import plan_command

    return plan_command(args)


def _report(args) -> int:
    from raffinerie.cli.report import report_command

    return report_command(args)


def _migrate(args) -> int:
    from raffinerie.config.dr10 import migrate_command

    return migrate_command(args)


def _raw(args) -> int:
    from raffinerie.cli.raw import raw_command

    return raw_command(args)
