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
