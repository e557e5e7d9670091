"""`raff`: the command line. Thin: parse, call the layers below, print.

Each command group is a module of this package with its parser beside its
command; this module assembles them and turns errors into exit codes.

Every error a user can cause ends here as one line on stderr and a non-zero
exit code; tracebacks are for bugs only. Heavy packages (pandas, zarr,
matplotlib, zmq) are imported only inside the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys

from raffinerie import __version__
from raffinerie.cli import build, cache, dataset, emulate, importing, library, plan, qc, raw, report
from raffinerie.errors import ConfigErrors, RaffError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raff",
        description="raffinerie: incremental acquisition and analysis of HGCROCv3 data. "
                    "Describe scans and analyses in YAML; `raff build NAME` does only the work "
                    "whose inputs changed, `raff plan NAME` says what that would be, and why.")
    parser.add_argument("--version", action="version", version=f"raff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (library.add_validate_parser, plan.add_parser, raw.add_parser, qc.add_parser, report.add_parser,
                library.add_migrate_parser, importing.add_parser, build.add_parser, dataset.add_parsers,
                cache.add_parser, emulate.add_parser):  # in the order `raff --help` lists them
        add(sub)
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
