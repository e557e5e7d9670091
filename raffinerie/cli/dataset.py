"""`raff show NAME` and `raff export NAME -o FILE`: the built dataset of a daq procedure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raffinerie.cli.numbers import COUNT
from raffinerie.cli.options import add_config_and_backend
from raffinerie.errors import RaffError


@dataclass(frozen=True)
class BuiltDataset:
    """The dataset of a daq procedure in the cache: the store, and its key there."""

    store: object  # a raffinerie.store.store.Store (imported in the commands only)
    key: str
    points: object = None  # its raffinerie.graph.points.PointSet, when a plan found it


def _built_dataset(args) -> BuiltDataset:
    """The built dataset of procedure NAME, from a plan (one error line if it is not built)."""
    from raffinerie.cli.workspace import load_valid, one_identity, open_store
    from raffinerie.graph.nodes import CACHED
    from raffinerie.graph.plan import make_plan

    lib, files = load_valid(args)
    store = open_store(args, lib)
    proc = lib.procedures.get(args.name)
    if proc is None or proc.kind != "daq":
        known = ", ".join(sorted(n for n, p in lib.procedures.items() if p.kind == "daq"))
        raise RaffError(f"'{args.name}' is not a daq procedure of this library; daq procedures: {known}",
                        file=lib.main)
    plan = make_plan(lib, args.name, one_identity(args), store.index(), files)
    node = plan.nodes[f"dataset:{args.name}"]
    if node.status != CACHED:
        raise RaffError(f"the dataset of '{args.name}' is not built ({node.reason}); "
                        f"run `raff build {args.name}`", file=lib.main)
    return BuiltDataset(store, node.key, plan.points.get(args.name))


def show_command(args) -> int:
    from raffinerie.cli.uptodate import dataset_key
    from raffinerie.records import DatasetLayout
    from raffinerie.store.layout import cache_root
    from raffinerie.store.store import Store

    key = dataset_key(args, args.name)  # from the last up-to-date build or plan, if nothing changed
    built = (BuiltDataset(Store(cache_root(Path(args.config), args.cache)), key) if key is not None
             else _built_dataset(args))
    store, key = built.store, built.key
    with store.reading("datasets", key):  # a few points are read: any size shows at once
        data = store.open_dataset(key)
        lines = describe_dataset(data, args.name, args.rows, show_all=args.all, width=_width())
    head = f"dataset of {args.name}: {data.n_rows:,} rows x {len(data.columns)} columns"
    if data.layout is DatasetLayout.GRID:  # stored by rows, a dataset knows its rows, not its points
        head += f" from {_count(data.n_points, 'point')}"
    print("\n".join(_fold(head, _width()) + [f"cached at {store.dataset_folder(key)}"] + lines))
    return 0


def _width() -> int:
    import shutil

    return max(40, shutil.get_terminal_size((100, 24)).columns)


# What a user looks at first among the measured columns, in this order (the sample rows).
KEY_MEASURED = ("adc_mean", "adc_stdd", "tot_mean", "toa_mean", "tot_efficiency", "toa_efficiency",
                "adc", "toa", "tot", "adc_median", "tot_median", "toa_median")


def describe_dataset(data, name: str, rows: int, show_all: bool = False, width: int = 100) -> list[str]:
    """The lines of `raff show` after its first two: shape, scan axes, columns by kind, sample rows."""
    from raffinerie.hgcroc import EVENT_COLUMNS, SUMMARY_COLUMNS
    from raffinerie.records import DatasetLayout
    from raffinerie.store.dataset import SLOT_COLUMNS, UNKNOWN_SUFFIX

    grid = data.layout is DatasetLayout.GRID
    out = [_shape(data, grid)]
    board = data.constants.get("board")
    if board is not None:
        out.append(f"board: {board[0]}")
    out += _axes(data, width)
    if grid:
        out.append(_slots(data))
    present = set(data.columns)
    scan = ([c for c in ("point", "repeat", "event", *data.axes) if c in present]
            + [c for c in data.columns if c.endswith(UNKNOWN_SUFFIX)])
    labels = [c for c in SLOT_COLUMNS if c in present]
    measured = [c for c in data.columns if c in SUMMARY_COLUMNS + EVENT_COLUMNS
                and c not in scan + labels and c not in data.constants]
    constants = [c for c in data.columns if c in data.constants and c not in scan + ["board"]]
    rest = [c for c in data.columns if c not in set(measured + scan + constants + labels + ["board"])]
    if measured:  # `data_columns` may keep none
        out.append(f"measured ({len(measured)}, {_dims(data, measured)}):")
    for family in _families(measured):
        out += _wrap(family, width, INDENT)
    out += _wrap(scan + labels, width, f"scan and readout ({len(scan + labels)}): ")
    by_dims: dict[str, list[str]] = {}
    for column in rest:
        by_dims.setdefault(_dims(data, [column]), []).append(column)
    more = f"`raff show {name} --all` lists them"
    for dims, columns in by_dims.items():
        out += _collapsed(columns, width, f"configuration {dims} ({len(columns)}): ", more, show_all)
    if constants:
        head = f"constants ({len(constants)}, the same on every row): "
        shown = [f"{c}={data.constants[c][0]}" for c in constants] if show_all else constants
        out += _collapsed(shown, width, head, more + " with their values", show_all)
    title, table = _sample(data, grid, rows, scan + labels, measured, width)
    return [folded for line in out + title for folded in _fold(line, width)] + table


def _count(n: int, what: str) -> str:
    """`1 point`, `80 points`; the first word of `what` takes the plural."""
    word, _, rest = what.partition(" ")
    return f"{n:,} {word}{'s' * (n != 1)}" + (f" {rest}" if rest else "")


def _fold(line: str, width: int) -> list[str]:
    """A line of prose in lines of `width`, the rest indented (a path or name is never cut)."""
    import textwrap

    return textwrap.wrap(line, width=width, subsequent_indent=INDENT, break_long_words=False,
                         break_on_hyphens=False) or [line]


def _shape(data, grid: bool) -> str:
    shape, dims = data.scan_shape()
    if not grid:
        return f"shape: {data.n_rows:,} rows (stored by rows: events, or points whose readout differs)"
    arrays = " x ".join(f"{d} {n}" for d, n in zip(dims + ["slot"], list(shape) + [data.n_slots]))
    kind = "point" + (" (an explicit list)" if data.attributes.get("explicit") else "")
    return f"shape: {_count(data.n_points, kind)} x {data.n_slots} readout slots; as arrays {arrays}"


def _axes(data, width: int) -> list[str]:
    if not data.axes:
        return ["scan axes: none"]
    values = data.attributes.get("axis_values") or {}
    sizes = dict(zip(data.axes, data.attributes.get("axis_sizes") or []))
    out = ["scan axes:"]
    for axis in data.axes:
        head = f"  {axis} ({sizes[axis]}): " if axis in sizes else f"  {axis}: "
        out.append(head + _fit([str(v) for v in values[axis]], width - len(head))
                   if axis in values else head.rstrip(": ") + " (values not numeric)")
    return out


def _fit(items: list[str], room: int) -> str:
    """`a, b, c, …, z`: as many as fit in `room` characters, and always the last."""
    text = ", ".join(items)
    if len(text) <= room or len(items) < 3:
        return text
    shown = 1
    while len(", ".join(items[:shown + 1]) + ", …, " + items[-1]) <= room and shown + 1 < len(items) - 1:
        shown += 1
    return ", ".join(items[:shown]) + ", …, " + items[-1]


def _slots(data) -> str:
    import numpy as np

    from raffinerie.hgcroc import CHANNELTYPE_CALIB, CHANNELTYPE_CHANNEL, CHANNELTYPE_CM

    chips, kinds = data.slot_values("chip"), data.slot_values("channeltype")
    if chips is None or kinds is None:
        return f"readout slots: {data.n_slots}"
    names = {CHANNELTYPE_CHANNEL: "channels", CHANNELTYPE_CALIB: "calibration", CHANNELTYPE_CM: "common-mode"}
    values, counts = np.unique(kinds, return_counts=True)
    parts = ", ".join(f"{n} {names.get(int(v), f'channeltype {v}')}" for v, n in zip(values, counts))
    return f"readout slots ({data.n_slots}): {len(np.unique(chips))} chips; {parts}"


def _dims(data, columns: list[str]) -> str:
    dims = {tuple(data.dims[c]) for c in columns}
    return "per " + " x ".join(dims.pop()) if len(dims) == 1 and () not in dims else "stored per column"


def _families(columns: list[str]) -> list[list[str]]:
    """adc_*, tot_*, toa_* together (by the name before its first `_`); the single ones last."""
    groups: dict[str, list[str]] = {}
    for column in columns:
        groups.setdefault(column.split("_")[0], []).append(column)
    singles = [c for g in groups.values() if len(g) == 1 for c in g]
    return [g for g in groups.values() if len(g) > 1] + ([singles] if singles else [])


def _collapsed(items: list[str], width: int, head: str, more: str, show_all: bool) -> list[str]:
    """`items` wrapped after `head`: all of them with `show_all`, else two lines and how many more."""
    lines = _lines(items, width, head)
    if show_all or len(lines) <= 2:
        return _wrap(items, width, head)
    shown = lines[0] + lines[1]
    return _wrap(shown, width, head) + [f"{INDENT}… and {len(items) - len(shown)} more: {more}"]


def _lines(items: list[str], width: int, head: str) -> list[list[str]]:
    """`items`, comma-separated, greedily in lines of `width` (the first after `head`, the rest
    indented); a name longer than a line gets one of its own."""
    lines: list[list[str]] = [[]]
    used = len(head)
    for item in items:
        if lines[-1] and used + 2 + len(item) + 1 > width:
            lines.append([])
            used = len(INDENT)
        used += (2 if lines[-1] else 0) + len(item)
        lines[-1].append(item)
    return lines


INDENT = "    "


def _wrap(items: list[str], width: int, head: str) -> list[str]:
    if not items:
        return []
    lines = _lines(items, width, head)
    return [(head if i == 0 else INDENT) + ", ".join(line) + ("," if i < len(lines) - 1 else "")
            for i, line in enumerate(lines)]


def _sample(data, grid: bool, rows: int, index: list[str], measured: list[str],
            width: int) -> tuple[list[str], list[str]]:
    """Title and table: `rows` rows spread over the scan, read point by point, with the scan axes and the measured
    columns a user looks at first; in a grid, of one readout slot: the channel whose first key
    column varies most over those points (an injected one, in an injection scan)."""
    import numpy as np
    import pandas as pd

    if rows == 0 or data.n_points == 0:
        return [], []
    picks = [int(p) for p in np.unique(np.linspace(0, data.n_points - 1, min(rows, data.n_points)).round())]
    key = [c for c in KEY_MEASURED if c in measured] or measured
    first = [c for c in index if c not in ("half", "channeltype")
             and (c != "repeat" or int(data.attributes.get("repeat", 1)) > 1)]
    slots, title = None, f"sample rows ({len(picks)} of {data.n_rows:,} rows):"
    if grid:
        slot, why = _liveliest_slot(data, picks, key[0] if key else None)
        slots = [slot]
        labels = ", ".join(f"{c} {data.slot_values(c)[slot]}" for c in ("chip", "channel") if c in data.columns)
        title = f"sample rows ({labels}{why}; {len(picks)} of {_count(data.n_points, 'point')}):"
    frame = pd.concat([pd.DataFrame(data.to_columns(first + key, points=(p, p + 1), slots=slots))
                       for p in picks], ignore_index=True)
    shown = first
    for column in key:
        if max(map(len, _table(frame[shown + [column]]).splitlines())) > width:
            break
        shown = shown + [column]
    return [title], _table(frame[shown]).splitlines()


def _liveliest_slot(data, picks: list[int], probe: str | None) -> tuple[int, str]:
    """The regular channel whose `probe` spreads most over the points `picks` (read whole:
    a few points), and why it was chosen; the first regular channel if none varies."""
    import numpy as np

    kinds = data.slot_values("channeltype")
    regular = kinds == 0 if kinds is not None and (kinds == 0).any() else np.ones(data.n_slots, bool)
    if probe is None or len(picks) < 2:
        return int(np.flatnonzero(regular)[0]), ""
    values = np.stack([data.to_columns([probe], points=(p, p + 1))[probe] for p in picks]).astype(float)
    missing = np.isnan(values)
    spread = np.where(missing, -np.inf, values).max(axis=0) - np.where(missing, np.inf, values).min(axis=0)
    spread = np.where(regular & np.isfinite(spread), spread, -1.0)
    if spread.max() <= 0:
        return int(np.flatnonzero(regular)[0]), ""
    return int(spread.argmax()), f", whose {probe} varies most"


def _table(frame) -> str:
    return frame.to_string(index=False, float_format=lambda v: f"{v:.6g}")


def export_command(args) -> int:
    from raffinerie.store.export import FORMATS, export

    if args.format == "hgcdb":
        from raffinerie.cli.hgcdb import export_hgcdb

        return export_hgcdb(args, _built_dataset(args))
    out = Path(args.output)
    if out.suffix.lower() not in FORMATS:
        raise RaffError("export format must be .csv, .zarr or .root", file=out)
    built = _built_dataset(args)
    store = built.store
    if not out.parent.is_dir():
        raise RaffError(f"cannot write: the folder {out.parent} does not exist", file=out)
    if out.suffix.lower() == ".zarr" and out.exists():
        raise RaffError("already exists; remove it or choose another name", file=out)
    with store.reading("datasets", built.key):  # a chunk that fails its checksum: quarantined
        data = store.open_dataset(built.key)
        try:
            written = export(data, out)
        except OSError as exc:
            raise RaffError(f"cannot write: {exc.strerror or exc}", file=out) from None
    print(f"{out}: {written.rows:,} rows x {written.columns} {written.form}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("show", help="describe the dataset of a daq procedure",
                       description="Shape, scan axes, columns by kind, sample rows and cache location "
                                   "of a built dataset.")
    p.add_argument("name", metavar="NAME")
    add_config_and_backend(p)
    p.add_argument("-n", "--rows", type=COUNT, default=5, help="sample rows to show (5)")
    p.add_argument("--all", action="store_true", help="list the constants with their values")
    p.set_defaults(func=show_command)

    p = sub.add_parser("export", help="write the dataset of a daq procedure to .csv, .zarr or .root, "
                                      "or a pedestal run's construction-database upload",
                       description="Write the built dataset of daq procedure NAME to FILE.csv, FILE.zarr or "
                                   "FILE.root; with --format hgcdb, the pedestal-test upload of the board "
                                   "(XML for the HGCAL construction database's loader) into DIR.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-o", "--output", required=True, metavar="FILE|DIR",
                   help="FILE.csv, FILE.zarr or FILE.root; with --format hgcdb, a folder")
    p.add_argument("--format", choices=("file", "hgcdb"), default="file",
                   help="file: by FILE's suffix (default); hgcdb: the construction-database upload")
    add_config_and_backend(p)
    from raffinerie.cli.hgcdb import add_options

    add_options(p)
    p.set_defaults(func=export_command)
