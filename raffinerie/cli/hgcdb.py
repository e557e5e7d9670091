"""`raff export NAME --format hgcdb -o DIR`: a pedestal run's construction-database upload.

The numbers are the dataset's: per channel its adc_mean and adc_stdd (the
mean over the run's points when it was repeated) and 1/sqrt(events). The
flags are the QC verdict's (`raffinerie.qc`, README "QC verdicts"), judged
by the rule of the part's type: a hexaboard serial (320X...) the bare
hexaboard's, a module serial (320M...) the module's. Who, where and which
parts come from the network file's `database:` section or from the options,
never from guesses: a missing one is an error that names it.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from raffinerie.errors import RaffError

SETTINGS = {  # option -> (`database:` key, what it is)
    "part": ("part", "the board's serial number"),
    "kind_of_part": ("kind_of_part", "the board's kind of part"),
    "location": ("location", "the location (institution abbreviation)"),
    "shipping_code": ("shipping_code", "the location's 4-digit shipping code"),
    "user": ("user", "the uploading user"),
}
COLUMNS = ["point", "chip", "channeltype", "channel", "adc_mean", "adc_stdd", "n_events"]


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("construction database (--format hgcdb); each overrides `database:` of the "
                             "network file")
    g.add_argument("--part", metavar="SERIAL", help="the board's serial number (320X... or 320M...)")
    g.add_argument("--kind-of-part", metavar="KIND",
                   help="the board's kind of part, as the database names it")
    g.add_argument("--roc-serial", action="append", metavar="ROC=SERIAL",
                   help="serial number of a ROC, e.g. roc_s0=SERIAL (repeat it for each)")
    g.add_argument("--location", metavar="ABBR", help="LOCATION of the upload, e.g. CMU")
    g.add_argument("--shipping-code", metavar="NNNN", help="the location's 4-digit shipping code")
    g.add_argument("--user", metavar="NAME", help="INITIATED_BY_USER (the lxplus user name)")
    g.add_argument("--temperature", type=float, metavar="C", help="temperature during the run (deg C)")
    g.add_argument("--humidity", type=float, metavar="PERCENT", help="relative humidity during the run (%%)")
    g.add_argument("--comment", help="COMMENT_DESCRIPTION of each data set")
    g.add_argument("--bias-voltage", type=float, metavar="V", help="a module's sensor bias")
    g.add_argument("--leakage-current", type=float, metavar="A", help="a module's total bias current")
    g.add_argument("--limit", action="append", metavar="NAME=V", help="a QC limit (as for `raff qc`)")


def export_hgcdb(args, built) -> int:
    from raffinerie import hgcdb

    network = _network(args)
    upload = _upload(args, network)
    conditions = _conditions(args, upload)
    run = _run(args, built, upload, network)
    out = Path(args.output)
    if not out.parent.is_dir():
        raise RaffError(f"cannot write: the folder {out.parent} does not exist", file=out)
    out.mkdir(exist_ok=True)
    docs = hgcdb.documents(run, upload, conditions)
    try:
        written = hgcdb.write(out, upload, run, docs)
    except OSError as exc:
        raise RaffError(f"cannot write: {exc.strerror or exc}", file=out) from None
    flagged = {f: sum(f in x for x in run.channels.flags) for f in "DN0"}
    print(f"{upload.part.serial}: {len(run.configs)} ROCs, {len(run.channels.chip)} channels "
          f"({flagged['D']} dead, {flagged['N']} noisy, {flagged['0']} zero mean), run "
          f"{hgcdb.run_number(upload, run.begin)}")
    for path in written:
        print(f"  {path}")
    return 0


def _network(args):
    from raffinerie.config.network import boards

    found = boards(args.network, args.seed)
    if len(found) > 1:
        raise RaffError("`raff export --format hgcdb` writes the upload of one board; name one --network")
    return found[0].network


def _upload(args, network):
    from raffinerie import hgcdb

    section = dict((network.database if network else None) or {})
    where = f"`database:` of {network.file}" if network else "the options"

    def setting(option: str) -> str:
        key, what = SETTINGS[option]
        value = getattr(args, option)
        value = section.get(key) if value is None else value
        if value is None or str(value).strip() == "":
            raise RaffError(f"the upload needs {what}: give --{option.replace('_', '-')}"
                            + (f" or set `database: {key}:` in {network.file}" if network else
                               " (or `database: {key}:` in a network file)".format(key=key)))
        return str(value)

    part = hgcdb.Part.parse(setting("part"), where)
    code = setting("shipping_code")
    if not hgcdb.SHIPPING_CODE.fullmatch(code):
        raise RaffError(f"{where}: shipping code {code!r} is not 4 digits (the location's code in the "
                        "database loader's resource.yaml, e.g. 1301 for CMU)")
    return hgcdb.Upload(part, setting("kind_of_part"), _rocs(args, section), setting("location"), code,
                        setting("user"), args.comment, section.get("hexaboard"),
                        section.get("hexaboard_kind"))


def _rocs(args, section: dict) -> dict[int, str]:
    from raffinerie.hgcroc import chip_index

    named = dict(section.get("rocs") or {})
    for text in args.roc_serial or []:
        roc, _, serial = text.partition("=")
        if chip_index(roc) is None or not serial.strip():
            raise RaffError(f"--roc-serial {text}: give ROC=SERIAL, e.g. roc_s0=SERIAL")
        named[roc] = serial.strip()
    return {chip_index(roc): serial for roc, serial in named.items()}


def _conditions(args, upload):
    from raffinerie import hgcdb

    for option, low, high in (("temperature", -60.0, 100.0), ("humidity", 0.0, 100.0)):
        value = getattr(args, option)
        if value is None:
            raise RaffError(f"the upload needs the {option} during the run (--{option}): the database "
                            "loader takes no pedestal test without temperature and humidity")
        if not (math.isfinite(value) and low <= value <= high):
            raise RaffError(f"--{option} {value:g} is not in [{low:g}, {high:g}]")
    bias = (args.bias_voltage, args.leakage_current)
    if (bias[0] is None) != (bias[1] is None):
        raise RaffError("give --bias-voltage and --leakage-current together")
    if bias[0] is not None and upload.part.type is not hgcdb.PartType.MODULE:
        raise RaffError(f"{upload.part.serial} is a hexaboard: it has no sensor bias to upload")
    return hgcdb.Conditions(args.temperature, args.humidity, *bias)


def _run(args, built, upload, network):
    """The hgcdb.Run of the dataset: its channels, flags, times and configurations."""
    from raffinerie import hgcdb

    points = built.points
    axes = [a.name for a in points.scan.axes] if points is not None else []
    if axes:
        raise RaffError(f"'{args.name}' scans {', '.join(axes)}: a pedestal-test upload is one run of one "
                        "configuration; export a pedestal run")
    store = built.store
    with store.reading("datasets", built.key):
        data = store.open_dataset(built.key)
        missing = [c for c in COLUMNS if c not in data.columns]
        if missing:
            raise RaffError(f"the dataset of '{args.name}' has no {', '.join(missing)} column: "
                            "a pedestal-test upload needs the per-channel summary (mode: summary)")
        table = data.to_pandas(COLUMNS)
        record = store.meta("datasets", built.key)
    starts, ends = _times(store, record)
    channels = _channels(args, table, upload, network)
    target = (points.base or {}).get("target", {}) if points is not None else {}
    from raffinerie.hgcroc import chip_index

    configs = {chip_index(k): v for k, v in target.items() if chip_index(k) is not None}
    configs = {c: configs.get(c, {}) for c in sorted(set(channels.chip))}
    return hgcdb.Run(min(starts), max(ends), channels, configs)


def _times(store, record: dict):
    starts, ends = [], []
    for key in record.get("point_keys", []):
        meta = store.meta("measurements", key)
        starts.append(float(meta["start"]))
        ends.append(float(meta["end"]))
    if not starts:
        raise RaffError("the dataset has no measurements to upload")
    return starts, ends


def _channels(args, table, upload, network):
    """Per channel: the mean over points of adc_mean and adc_stdd, the events, the QC flags."""
    import numpy as np

    from raffinerie import geometry as geometries
    from raffinerie import hgcdb, qc
    from raffinerie.cli.qc import _limits

    per = table.groupby(["chip", "channeltype", "channel"], as_index=False, sort=True).agg(
        mean=("adc_mean", "mean"), stdev=("adc_stdd", "mean"), events=("n_events", "sum"))
    chips = int(per.chip.max()) + 1
    named = network.geometry if network else None
    geometry = geometries.load(named) if named else geometries.for_chips(chips)
    if geometry.name[:2] != upload.part.density:
        raise RaffError(f"{upload.part.serial} is an {upload.part.density} board, the run's geometry "
                        f"{geometry.name} ({chips} chips)")
    kind = "hexaboard" if upload.part.type is hgcdb.PartType.HEXABOARD else "module"
    limits = _limits(argparse.Namespace(kind=kind, limit=args.limit))
    columns = {"chip": per.chip.to_numpy(), "channeltype": per.channeltype.to_numpy(),
               "channel": per.channel.to_numpy(), "adc_mean": per["mean"].to_numpy(),
               "adc_stdd": per.stdev.to_numpy()}
    verdict = qc.judge(columns, geometry, limits)
    row = geometry.index_of(per.chip, per.channeltype, per.channel)
    bits = np.where(row >= 0, verdict.flags[np.maximum(row, 0)], 0)
    events = per.events.to_numpy(dtype=float)
    return hgcdb.Channels(
        chip=per.chip.astype(int).tolist(), channeltype=per.channeltype.astype(int).tolist(),
        channel=per.channel.astype(int).tolist(), mean=per["mean"].astype(float).tolist(),
        stdev=per.stdev.astype(float).tolist(),
        flags=[hgcdb.flags(m == 0, bool(b & qc.CellFlag.DEAD), bool(b & qc.CellFlag.NOISY))
               for m, b in zip(per["mean"], bits)],
        frac_unc=(1 / np.sqrt(np.where(events > 0, events, np.nan))).tolist())
