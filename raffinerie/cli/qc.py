"""`raff qc FILE.root|RUN.raw`: the QC verdict and hexmaps of a pedestal run taken without raffinerie."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import fields, replace
from pathlib import Path

from raffinerie.errors import RaffError

FAILED = 3       # the exit code of a board that fails: scripts and CI can tell it from an error
HEXMAPS = (("adc_mean", "pedestal: adc_mean"), ("adc_stdd", "noise: adc_stdd"))


def _table(path: Path, args):
    """(per-channel table, chips, {chip: corrupt fraction or None}, injected (chip, channel)) of FILE."""
    if path.suffix == ".root":
        from raffinerie.daq import rootio

        table = rootio.read_root_summary(path)
        missing = [c for c in ("chip", "channel", "channeltype", "adc_mean", "adc_stdd") if c not in table]
        if missing:
            raise RaffError(f"the runsummary/summary tree has no {', '.join(missing)} branch", file=path)
        chips = int(table["chip"].max()) + 1 if len(table["chip"]) else 0
        return table, chips, {c: None for c in range(chips)}, []   # a ROOT summary keeps neither
    if path.suffix != ".raw":
        raise RaffError("not a run file: give a hexactrl .root summary or a .raw file", file=path)
    from raffinerie.daq.runs import injecting_channels, open_raw

    run = open_raw(path, Path(args.config) if args.config else None, args.mode)
    injected = injecting_channels(run.target, run.n_chips) if run.target else []
    return run.summary(), run.n_chips, run.corrupt_fractions(), injected


def _geometry(args, chips: int, path: Path):
    from raffinerie import geometry

    g = geometry.load(args.geometry) if args.geometry else geometry.for_chips(chips)
    if chips > g.n_chips:
        raise RaffError(f"the run has {chips} chips, the {g.name} geometry {g.n_chips}; give --geometry",
                        file=path)
    return g


def _rows(geometry, channels: list[tuple[int, int]]):
    """A boolean per geometry row: the normal channels (chip, channel) listed."""
    import numpy as np

    chip, channel = np.array(channels, dtype=np.int64).reshape(-1, 2).T
    return geometry.rows(chip, np.zeros_like(chip), channel)


def _limits(args):
    from raffinerie.qc import BoardKind, QcLimits

    limits = QcLimits(kind=BoardKind(args.kind))
    known = {f.name for f in fields(QcLimits)} - {"kind"}
    for text in args.limit or []:
        name, _, value = text.partition("=")
        if name not in known:
            raise RaffError(f"--limit {text}: no limit {name!r}; the limits are {', '.join(sorted(known))}")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise RaffError(f"--limit {text}: {value!r} is not a number of 0 or more")
        limits = replace(limits, **{name: number})
    return limits


def qc_command(args) -> int:
    """Each FILE judged in turn; one that cannot be read is said and skipped. Exit code: 1 if a
    file could not be judged, else 3 if a board fails, else 0."""
    limits = _limits(args)
    paths = [Path(f) for f in args.files]
    labels = _labels(paths)
    if args.output:
        _output_folder(Path(args.output))
    docs, codes = [], []
    for path, label in zip(paths, labels):
        try:
            doc, lines = _one(path, label, limits, args)
        except RaffError as exc:
            print(f"raff: error: {exc}", file=sys.stderr)
            codes.append(1)
            continue
        codes.append(0 if doc["verdict"] == "pass" else FAILED)
        docs.append(doc)
        if not args.json:
            print("\n".join(lines + ([""] if len(paths) > 1 else [])))
    if args.json and docs:
        print(json.dumps(docs[0] if len(paths) == 1 else docs, indent=2))
    return 1 if 1 in codes else max(codes, default=0)


def _one(path: Path, label: str, limits, args) -> tuple[dict, list[str]]:
    from raffinerie import qc

    table, chips, corrupt, injected = _table(path, args)
    geometry = _geometry(args, chips, path)
    verdict = qc.judge(table, geometry, limits, corrupt, injected=_rows(geometry, injected))
    written = _hexmaps(Path(args.output), path, label, table, geometry, verdict) if args.output else []
    doc = verdict.document() | {"file": str(path), "hexmaps": [str(p) for p in written]}
    return doc, summary_lines(path, verdict) + [f"hexmap: {p}" for p in written]


def _labels(paths: list[Path]) -> list[str]:
    """The name of each file's hexmaps: its stem, or folder_stem where stems repeat (hexactrl names
    every pedestal summary pedestal_run0.root, each in its run's folder)."""
    stems = [p.stem for p in paths]
    named = [f"{p.resolve().parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
    # still the same (a/run1/x.root and b/run1/x.root, x.root and x.raw): numbered, never overwritten
    return [f"{n}_{i + 1}" if named.count(n) > 1 else n for i, n in enumerate(named)]


def _output_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RaffError(f"cannot make the output folder: {exc.strerror}", file=out) from None


def _hexmaps(out: Path, file: Path, name: str, table, geometry, verdict) -> list[Path]:
    from raffinerie.analysis.builtin.common import save
    from raffinerie.analysis.hexmap import hexmap

    paths = []
    for column, label in HEXMAPS:
        path = out / f"{name}_{column}_hexmap.png"
        title = f"{file.name}: {label} ({geometry.name}, {verdict.limits.kind.value})"
        save(lambda: hexmap(table, geometry, quantity=column, unit="ADC", title=title, flags=verdict.flags),
             str(path))
        paths.append(path)
    return paths


def summary_lines(file, verdict) -> list[str]:
    """What a tester reads: the verdict and its reasons, then each list of pads."""
    doc = verdict.document()
    median = doc["median_noise"]
    judged = "median noise " + (f"{median:.2f} ADC" if median is not None else "unknown")
    lines = [f"{file}: {doc['geometry']}, {doc['kind']}; {judged}",
             f"verdict: {doc['verdict'].upper()}, readout grade {doc['grade']} "
             f"({100 * doc['bad_fraction']:.1f} % of cells bad)"]
    lines += [f"  fails: {reason}" for reason in doc["reasons"]]
    for key, name in (("dead_pads", "dead pads"), ("noisy_pads", "noisy pads"),
                      ("untunable_pads", "untunable pads"),
                      ("no_noise_pads", "undecided pads, no noise in the file"),
                      ("injected_pads", "undecided pads, charge injected (not a pedestal)"),
                      ("no_data_pads", "pads without data")):
        if doc[key] or key in ("dead_pads", "noisy_pads"):
            lines.append(f"  {name}: {', '.join(map(str, doc[key])) or 'none'}")
    known = {c: v for c, v in doc["corrupt_fraction"].items() if v is not None}
    lines.append("  corrupt halves: " + (", ".join(f"{c} {100 * v:.2f} %" for c, v in known.items()) if known
                                         else "not known (a ROOT summary does not count them)"))
    return lines


def add_parser(sub) -> None:
    p = sub.add_parser("qc", help="QC verdict and hexmaps of a hexactrl pedestal run (.root or .raw)",
                       description="Judge a pedestal run taken with hexactrl: dead and noisy cells (as pad "
                                   "numbers), corrupt halves, the readout grade and a pass/fail verdict, "
                                   "with hexmaps. Several FILEs are judged in turn (--json: a list). "
                                   f"Exit code 0: every board passes, {FAILED}: a board fails, 1: a file "
                                   "could not be judged.")
    p.add_argument("files", metavar="FILE", nargs="+",
                   help="hexactrl runsummary .root files, or .raw files with their .yaml")
    p.add_argument("--geometry", metavar="G", help="board geometry: LD-full or HD-full "
                   "(default: from the number of chips in FILE, 3: LD-full, 6: HD-full)")
    p.add_argument("--kind", choices=("module", "hexaboard"), default="module",
                   help="module (a sensor attached: noisy above the median + 2 ADC) or bare hexaboard "
                        "(noisy above 2 ADC); default module")
    p.add_argument("--limit", action="append", metavar="NAME=VALUE",
                   help="change a limit (repeatable): noisy_above_median, noisy_above, grade_a_below, "
                        "grade_b_below, max_corrupt_fraction")
    p.add_argument("-o", "--output", metavar="DIR", help="write the hexmaps (PNG) into DIR")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--config", metavar="RUN.yaml",
                   help="a .raw file's run configuration (default: FILE.yaml)")
    p.add_argument("--mode", choices=("characterisation", "normal"),
                   help="a .raw file's channel-word layout, instead of a run configuration")
    p.set_defaults(func=qc_command)
