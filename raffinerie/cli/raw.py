"""`raff raw summary|events FILE`: decode hexactrl runs (.raw or .root)."""

from __future__ import annotations

import sys
from pathlib import Path

from raffinerie.errors import RaffError


def write_table(table: dict, output: str | None) -> None:
    """A table of numpy columns as CSV, to a file or to stdout."""
    import pandas as pd

    frame = pd.DataFrame(table)
    if output:
        try:
            frame.to_csv(output, index=False)
        except OSError as exc:
            raise RaffError(f"cannot write output: {exc.strerror}", file=output) from None
    else:
        frame.to_csv(sys.stdout, index=False)


def _load(args, kind: str) -> dict:
    path = Path(args.file)
    if path.suffix == ".root":
        from raffinerie.daq import rootio

        return rootio.read_root_summary(path) if kind == "summary" else rootio.read_root_events(path)
    from raffinerie.daq.runs import open_raw

    run = open_raw(path, Path(args.config) if args.config else None, args.mode)
    for line in run.corruption_report():
        print(f"{path}: warning: {line}", file=sys.stderr)
    return run.summary() if kind == "summary" else run.events()


def raw_command(args) -> int:
    write_table(_load(args, args.raw_command), args.output)
    return 0


TABLES = (("summary", "per-channel statistics (one row per chip, half, channel)"),
          ("events", "the event table (one row per event, chip, half, channel)"))


def add_parser(sub) -> None:
    p = sub.add_parser("raw", help="decode hexactrl runs (.raw with its .yaml, or .root)",
                       description="Decode a hexactrl run and print or write its tables as CSV.")
    raw_sub = p.add_subparsers(dest="raw_command", metavar="TABLE")
    raw_sub.required = True
    for name, text in TABLES:
        q = raw_sub.add_parser(name, help=text, description=f"{text}. Corrupt halves (bad header "
                               "or CRC) are reported on stderr and left out of the statistics.")
        q.add_argument("file", metavar="FILE", help="a .raw file (with its .yaml beside it) or a .root file")
        q.add_argument("--config", metavar="RUN.yaml",
                       help="run configuration that gives each chip's mode (default: FILE.yaml)")
        q.add_argument("--mode", choices=("characterisation", "normal"),
                       help="channel-word layout for every chip, instead of a run configuration")
        q.add_argument("-o", "--output", metavar="OUT.csv", help="write CSV here (default: stdout)")
        q.set_defaults(func=raw_command)
