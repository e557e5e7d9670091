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
    return BuiltDataset(store, node.key)


def show_command(args) -> int:
    import pandas as pd

    from raffinerie.cli.uptodate import dataset_key
    from raffinerie.store.layout import cache_root
    from raffinerie.store.store import Store

    key = dataset_key(args, args.name)  # from the last up-to-date build or plan, if nothing changed
    built = (BuiltDataset(Store(cache_root(Path(args.config), args.cache)), key) if key is not None
             else _built_dataset(args))
    store, key = built.store, built.key
    with store.reading("datasets", key):  # only its first rows are read: any size shows at once
        data = store.open_dataset(key)
        head = data.head(args.rows)
    print(f"dataset of {args.name}: {data.n_rows:,} rows x {len(data.columns)} columns "
          f"from {data.n_points:,} points")
    print(f"cached at {store.dataset_folder(key)}")
    sizes = data.attributes.get("axis_sizes") or []
    axes = ", ".join(f"{a} ({n})" for a, n in zip(data.axes, sizes)) if sizes else ", ".join(data.axes)
    print(f"scan axes: {axes or 'none'}")
    print("stored: " + "; ".join(f"{n} column{'s' * (n != 1)} per {dims}" if dims != "once" else
                                 f"{n} constant{'s' * (n != 1)} once" for dims, n in data.stored().items()))
    print("columns: " + ", ".join(data.columns))
    with pd.option_context("display.width", 160, "display.max_columns", 14):
        print(head.to_string(max_cols=14))
    return 0


def export_command(args) -> int:
    from raffinerie.store.dataset import FOLDER

    built = _built_dataset(args)
    store = built.store
    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".zarr", ".root"):
        raise RaffError("export format must be .csv, .zarr or .root", file=out)
    if not out.parent.is_dir():
        raise RaffError(f"cannot write: the folder {out.parent} does not exist", file=out)
    with store.reading("datasets", built.key):
        data = store.open_dataset(built.key)
        try:
            if suffix == ".zarr":
                if out.exists():
                    raise RaffError("already exists; remove it or choose another name", file=out)
                # as stored (xarray.open_zarr reads it), each file checked against the manifest as it is copied
                store.copy_checked("datasets", built.key, FOLDER, out)
            else:
                _export_rows(data, out, suffix)
        except OSError as exc:
            raise RaffError(f"cannot write: {exc.strerror or exc}", file=out) from None
    print(f"{out}: {data.n_rows} rows x {len(data.columns)} columns")
    return 0


def _export_rows(data, out: Path, suffix: str) -> None:
    """One block of points at a time, so a dataset of any size is exported in bounded memory.

    ROOT gets the numeric columns (the board, a string, is in the dataset's metadata)."""
    import pandas as pd

    step = max(1, (64 << 20) // (8 * max(data.n_slots, 1) * len(data.columns)))  # ~64 MB of rows
    ranges = [(start, min(start + step, data.n_points)) for start in range(0, max(data.n_points, 1), step)]
    numeric = [c for c in data.columns if c != "board"]
    if suffix == ".csv":
        for i, points in enumerate(ranges):
            pd.DataFrame(data.to_columns(points=points)).to_csv(out, index=False, header=i == 0,
                                                                mode="w" if i == 0 else "a")
        return
    import uproot

    with uproot.recreate(out) as f:
        for i, points in enumerate(ranges):
            columns = data.to_columns(numeric, points=points)
            if i == 0:
                f["dataset"] = columns
            else:
                f["dataset"].extend(columns)


def add_parsers(sub) -> None:
    p = sub.add_parser("show", help="describe the dataset of a daq procedure",
                       description="Shape, columns, first rows and cache location of a built dataset.")
    p.add_argument("name", metavar="NAME")
    add_config_and_backend(p)
    p.add_argument("-n", "--rows", type=COUNT, default=5, help="rows to show (5)")
    p.set_defaults(func=show_command)

    p = sub.add_parser("export", help="write the dataset of a daq procedure to .csv, .zarr or .root")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.csv, FILE.zarr or FILE.root")
    add_config_and_backend(p)
    p.set_defaults(func=export_command)
