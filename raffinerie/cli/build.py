"""`raff build`, `raff show`, `raff export` and `raff cache`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from raffinerie.cli.numbers import COUNT, PERCENT, WORKERS
from raffinerie.errors import RaffError
from raffinerie.store.layout import KINDS, cache_root

# The parsers below are built on every `raff` call (also for --help), so this
# module imports the layers it drives inside the commands only.


def _store(args, lib):
    from raffinerie.store.store import Store

    return Store(cache_root(lib.main, args.cache))


def _identity(args) -> str:
    """The identity of the one board a command works on (its network file is read once)."""
    from raffinerie.cli.commands import one_board
    from raffinerie.config.network import identity

    return identity(*one_board(args))


def build_command(args) -> int:
    from raffinerie.cli.uptodate import is_fresh, remember

    names = list(dict.fromkeys(args.names))
    if is_fresh(args, "build", names):  # nothing it reads has changed since it was last up to date
        print(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} up to date "
              "(nothing it reads has changed since it was last built)")
        return 0
    from raffinerie.cli.commands import load_valid
    from raffinerie.config.network import boards
    from raffinerie.tuning import tune_allocator

    tune_allocator()
    lib, files = load_valid(args)
    _check_names(lib, names)
    store = _store(args, lib)
    found = boards(args.network, args.seed)
    remote = args.remote or lib.remote
    if remote:
        _pull_remote(args, lib, files, store, found, names, remote)
    if len(found) == 1:
        builder = _builder(args, lib, files, store, found[0], label=None)
        report = builder.build(names)
        _print_report(names, report, args, prefix="")
        code = report.exit_code
        if getattr(args, "dask", None) and builder.runner is not None and builder.runner.cluster_peaks:
            peaks = ", ".join(f"{mb:.0f} MB" for mb in builder.runner.cluster_peaks)
            print(f"dask workers ({args.dask}): peak RSS {peaks}")
        if code == 0 and builder.final_plan is not None and builder.runner is not None:
            outputs = [Path(builder.runner.output_dir(n.name)) for n in builder.final_plan.nodes.values()
                       if n.kind == "analysis"]
            remember(args, "build", names, builder.final_plan, outputs)
    else:
        code = _build_boards(args, lib, files, store, found, names)
    if args.report:
        from raffinerie.cli.report import report_after_build

        for name in names:
            report_after_build(args, name)
    return code


def _pull_remote(args, lib, files, store, found, names: list[str], url: str) -> None:
    """Pull from the shared cache what this build would otherwise acquire or make, board by board."""
    from raffinerie.analysis.code import code_provider
    from raffinerie.builder.remotefill import pull_from
    from raffinerie.graph.plan import make_plan
    from raffinerie.store.remote import RemoteCache

    code = code_provider(lib.main, args.analysis_path)
    with store.cache_lock(exclusive=False), RemoteCache(url) as remote:
        for board in found:
            prefix = f"{board.label}: " if len(found) > 1 else ""
            pull_from(remote, store, lambda: make_plan(lib, names, board.identity, store.index(), files, code),
                      lambda text: print(prefix + text, file=sys.stderr, flush=True))


def _check_names(lib, names: list[str]) -> None:
    """Every NAME is a procedure or workflow of the library (one message naming the unknown ones)."""
    unknown = [n for n in names if lib.get(n) is None]
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        raise RaffError(f"unknown procedure{'s' * (len(unknown) > 1)} {listed}; known: "
                        f"{', '.join(lib.names()) or 'none'}", file=lib.main)


def _builder(args, lib, files, store, board, label: str | None):
    """A Builder for one board; with `label`, its progress and outputs are the board's own."""
    from raffinerie.builder.executor import BuildOptions, Builder
    from raffinerie.builder.progress import Progress

    progress = Progress(quiet=args.quiet, prefix=f"{label}: " if label else "")
    runner = _runner(args, lib, store, label)
    options = BuildOptions(force=args.force, force_acquire=args.force_acquire, keep_going=args.keep_going)
    return Builder(lib, files, store, progress, board.network, board.seed, runner,
                   readback=args.readback, max_corrupt=args.max_corrupt / 100, options=options)


def _build_boards(args, lib, files, store, found, names: list[str]) -> int:
    """Build on every board at once; a failing board stops only its own build."""
    from raffinerie.builder.boards import build_boards

    result = build_boards(names, found,
                          lambda board: _builder(args, lib, files, store, board, board.label))
    for item in result.results:
        if item.report is not None:
            _print_report(names, item.report, args, prefix=f"{item.board.label}: ")
    for item in result.failed:
        print(f"raff: error: board {item.board.label} failed: {item.error}", file=sys.stderr)
    if result.failed:
        done = len(found) - len(result.failed)
        print(f"raff: {len(result.failed)} of {len(found)} boards failed; the other {done} finished, "
              "and everything acquired is kept", file=sys.stderr)
    return max([result.exit_code] + [r.report.exit_code for r in result.results if r.report is not None])


def _print_report(names: list[str], report, args, prefix: str) -> None:
    from raffinerie.cli.render import count as _count

    label = ", ".join(names)
    if report.did_nothing:
        print(f"{prefix}{label} {'is' if len(names) == 1 else 'are'} up to date")
    else:
        corrupt = (f" ({report.corrupt_halves} corrupt halves left out)" if report.corrupt_halves else "")
        print(f"{prefix}{label}: {_count(report.acquired, 'point')} acquired{corrupt}, "
              f"{_count(report.datasets, 'dataset')} and {_count(report.analyses, 'analysis', 'analyses')} "
              f"built in {report.seconds:.1f} s")
    if report.failed:  # -k: what failed, and what was left out because of it
        print(f"{prefix}raff: error: {_count(len(report.failed), 'node')} failed; what does not depend on "
              f"{'it' if len(report.failed) == 1 else 'them'} was built (-k):", file=sys.stderr)
        for failure in report.failed:
            print(f"{prefix}  {failure.kind} {failure.name}: {failure.message}", file=sys.stderr)
        if report.skipped:
            print(f"{prefix}  not built because an input failed: {', '.join(report.skipped)}", file=sys.stderr)
    if args.profile and report.acquired:
        print(f"  {prefix}acquisition: {_count(report.acquired, 'point')} in {report.acquiring:.2f} s "
              f"({report.acquired / max(report.acquiring, 1e-9):.1f} points/s)")
        if not prefix:  # several boards share one process: its CPU is not one board's
            print(f"  {_cpu_per_point(report)}")
    if args.profile and report.timer.seconds:
        total = sum(report.timer.seconds.values())
        for stage, seconds in sorted(report.timer.seconds.items(), key=lambda kv: -kv[1]):
            print(f"  {prefix}{stage:36} {seconds:8.2f} s  {100 * seconds / total:5.1f} %")


def _cpu_per_point(report) -> str:
    """The CPU an acquired point cost, against the cores there were: whether the cores set the pace."""
    from raffinerie.builder.executor import cores_bound

    per_point = 1e3 / report.acquired
    raff, emulator = report.acquiring_cpu * per_point, report.emulator_cpu * per_point
    cores, bound = cores_bound(raff + emulator)
    line = f"CPU per point: raff {raff:.1f} ms"
    if emulator:
        line += f", embedded emulator {emulator:.1f} ms (on the same cores, unlike hardware)"
    return line + f"; {cores} core{'s' * (cores != 1)}, so at most {bound:.0f} points/s"


def _runner(args, lib, store, board_label: str | None = None):
    from raffinerie.builder.executor import output_dir

    from raffinerie.analysis.runner import AnalysisRunner

    def where(name: str) -> Path:  # several boards: raff-out/<analysis>/<board>/
        folder = output_dir(lib.main, args.output, name)
        return folder / board_label if board_label else folder

    runner = AnalysisRunner(lib, store, where, args.analysis_path, args.workers)
    if getattr(args, "dask", None):
        from raffinerie.builder.cluster import Cluster

        runner.cluster = Cluster(args.dask)
    return runner


def _dataset(args):
    """(lib, store, plan node, key) of the built dataset of procedure NAME."""
    from raffinerie.cli.commands import load_valid
    from raffinerie.graph.plan import CACHED, make_plan

    lib, files = load_valid(args)
    store = _store(args, lib)
    proc = lib.procedures.get(args.name)
    if proc is None or proc.kind != "daq":
        known = ", ".join(sorted(n for n, p in lib.procedures.items() if p.kind == "daq"))
        raise RaffError(f"'{args.name}' is not a daq procedure of this library; daq procedures: {known}",
                        file=lib.main)
    plan = make_plan(lib, args.name, _identity(args), store.index(), files)
    node = plan.nodes[f"dataset:{args.name}"]
    if node.status != CACHED:
        raise RaffError(f"the dataset of '{args.name}' is not built ({node.reason}); "
                        f"run `raff build {args.name}`", file=lib.main)
    return lib, store, node


def show_command(args) -> int:
    import pandas as pd

    from raffinerie.cli.uptodate import dataset_key
    from raffinerie.store.store import Store

    key = dataset_key(args, args.name)  # from the last up-to-date build or plan, if nothing changed
    if key is not None:
        store = Store(cache_root(Path(args.config), args.cache))
    else:
        _, store, node = _dataset(args)
        key = node.key
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

    lib, store, node = _dataset(args)
    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".zarr", ".root"):
        raise RaffError("export format must be .csv, .zarr or .root", file=out)
    if not out.parent.is_dir():
        raise RaffError(f"cannot write: the folder {out.parent} does not exist", file=out)
    with store.reading("datasets", node.key):
        data = store.open_dataset(node.key)
        try:
            if suffix == ".zarr":
                if out.exists():
                    raise RaffError("already exists; remove it or choose another name", file=out)
                # as stored (xarray.open_zarr reads it), each file checked against the manifest as it is copied
                store.copy_checked("datasets", node.key, FOLDER, out)
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


def cache_command(args) -> int:
    from raffinerie.cli.commands import load_valid

    lib, files = load_valid(args)
    store = _store(args, lib)
    if args.cache_command == "ls":
        return _cache_ls(store)
    if args.cache_command == "verify":
        with store.cache_lock(exclusive=True, waiting=_waiting_for_builds(store)):
            total = store.count()
            damaged = store.verify(step=_entry_progress(store, "cache verify"))
        for d in damaged:
            print(f"{store.path(d.kind, d.key)}: damaged: {d.problem}; moved to quarantine/, "
                  "the next build acquires it again" if d.kind == "measurements" else
                  f"{store.path(d.kind, d.key)}: damaged: {d.problem}; moved to quarantine/")
        print(f"{store.root}: {total} entries verified, {len(damaged)} damaged")
        return 1 if damaged else 0
    if not args.yes:
        return _cache_gc(args, lib, files, store)
    with store.cache_lock(exclusive=True, waiting=_waiting_for_builds(store)):
        return _cache_gc(args, lib, files, store)


def _waiting_for_builds(store):
    def say() -> None:
        print(f"waiting for the builds running on {store.root} to finish ...", file=sys.stderr, flush=True)
    return say


def _entry_progress(store, name: str):
    """Progress over every entry of the cache, on stderr (a 131,072-point cache takes a while)."""
    from raffinerie.builder.progress import Progress

    progress = Progress()
    progress.start(name, store.count(), unit="entries")
    return progress.step


def _cache_ls(store) -> int:
    from raffinerie.cli.render import human_bytes

    usage = store.usage(step=_entry_progress(store, "cache ls"))
    print(f"cache {store.root}")
    for kind in KINDS:
        count, size = usage[kind]
        print(f"  {kind:13} {count:7} entries  {human_bytes(size):>10}")
    names = store.root / "names"
    for kind in ("datasets", "analyses"):
        folder = names / kind
        if folder.is_dir():
            for record in sorted(folder.glob("*.json")):
                doc = json.loads(record.read_text())
                print(f"  {kind[:-1] if kind == 'datasets' else 'analysis'} {doc['name']}: {doc['key'][:16]}")
    return 0


def _cache_gc(args, lib, files, store) -> int:
    from raffinerie.cli.render import human_bytes
    from raffinerie.store.files import tree_size

    from raffinerie.analysis.code import code_provider
    from raffinerie.builder.collect import collect
    from raffinerie.config.network import boards

    named = [board.identity for board in boards(args.network, args.seed)]
    found = collect(lib, files, store, named, code_provider(lib.main, args.analysis_path),
                    args.include_measurements)
    others = [b for b in found.boards if b not in named]
    print(f"live: what the library's procedures need on {', '.join(named)}"
          + (f" and on the other boards the cache holds: {', '.join(others)}" if others else ""))
    doomed = found.doomed
    # folders in raff-out/ that no analysis of the library writes (renamed or removed analyses)
    out_root = lib.main.resolve().parent / "raff-out"
    produced = {name for name, proc in lib.procedures.items() if proc.kind == "analysis"}
    stale = sorted(p for p in out_root.iterdir() if p.is_dir() and not p.is_symlink()
                   and not p.name.startswith(".") and p.name not in produced) if out_root.is_dir() else []
    size = sum(tree_size(p) for _, _, p in doomed) + sum(tree_size(p) for p in stale)
    for kind, key, path in doomed:
        print(f"{'removing' if args.yes else 'would remove'} {kind[:-1] if kind != 'analyses' else 'analysis'} {key[:16]}  {path}")
    for path in stale:
        print(f"{'removing' if args.yes else 'would remove'} output folder {path} (no procedure of the library "
              "writes it)")
        if args.yes:
            shutil.rmtree(path, ignore_errors=True)
    for path in store.stale_tmp():
        print(f"{'removing' if args.yes else 'would remove'} unfinished {path}")
        if args.yes:
            shutil.rmtree(path, ignore_errors=True)
    if args.yes:
        for kind, key, _ in doomed:
            store.remove(kind, key)
    verb = "removed" if args.yes else "would remove (dry run; --yes to delete)"
    kept = "" if args.include_measurements else "; measurements are kept (--include-measurements removes unneeded ones)"
    for board, n in found.other_boards.items():
        print(f"kept {n} unneeded measurement{'s' * (n != 1)} of board {board}, which this command does "
              "not name (--network or --seed names it)")
    if found.unreadable:
        print(f"kept {found.unreadable} unneeded measurement{'s' * (found.unreadable != 1)} whose board "
              "could not be read")
    folders = f", {len(stale)} output folder{'s' * (len(stale) != 1)}" if stale else ""
    print(f"{verb}: {len(doomed)} entries{folders}, {human_bytes(size)}{kept}")
    return 0


def import_command(args) -> int:
    from raffinerie.builder.importer import Assumption, import_runs
    from raffinerie.builder.progress import Progress
    from raffinerie.cli.commands import main_path

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


def add_remote(p) -> None:
    p.add_argument("--remote", metavar="URL",
                   help="a cache shared between test stands (a folder or root://host//path; default: "
                        "`remote:` of MAIN): what it already holds is pulled, not acquired or made again")


def add_parsers(sub, add_config, add_backend) -> None:
    p = sub.add_parser("import", help="bring existing hexactrl runs (.raw + .yaml) into the cache",
                       description="Import pairs X.raw + X.yaml from FOLDER as measurements keyed by "
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

    p = sub.add_parser("build", help="bring procedures or workflows up to date",
                       description="Acquire the points the cache lacks (on the embedded emulator, or "
                                   "the backend of --network), build datasets and run analyses whose "
                                   "inputs changed. Several NAMEs are built together: one backend session "
                                   "acquires the points of all of them, and a point they share is acquired "
                                   "once. Ctrl-C stops after the point in flight; everything acquired is "
                                   "kept.")
    p.add_argument("names", metavar="NAME", nargs="+", help="procedure or workflow (one or more)")
    add_config(p)
    add_backend(p)
    add_remote(p)
    p.add_argument("--dask", metavar="ADDRESS",
                   help="assemble datasets and run analyses on a dask.distributed cluster: a scheduler "
                        "ADDRESS (tcp://host:8786; it must see the cache's folder), or local:N for N "
                        "worker processes on this machine")
    p.add_argument("-w", "--workers", type=WORKERS, default=1, metavar="N",
                   help="run up to N analyses in parallel (acquisition stays serial)")
    p.add_argument("-o", "--output", metavar="DIR", help="where analysis outputs appear (default raff-out/)")
    p.add_argument("-a", "--analysis-path", metavar="PATH",
                   help="a package directory or .py file with user analyses")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--profile", action="store_true", help="print the acquisition's throughput and where its time went")
    p.add_argument("--max-corrupt", type=PERCENT, default=5.0, metavar="PERCENT",
                   help="refuse a point (and stop, exit 3) when more than PERCENT of a chip's halves "
                        "are corrupt (default 5)")
    p.add_argument("--readback", action="store_true",
                   help="read the target's registers back after each configure and stop with an "
                        "error naming every register that differs")
    p.add_argument("--report", action="store_true",
                   help="write the HTML report of each NAME at the end (as `raff report`), beside the outputs")
    p.add_argument("--force", action="store_true",
                   help="build the datasets and run the analyses of NAME again, even those in the cache "
                        "(the new outputs replace the cached ones; measurements are not touched)")
    p.add_argument("--force-acquire", action="store_true",
                   help="acquire every point of NAME again, as a new take: the dataset and analyses "
                        "use the new take, and the earlier takes stay in the cache")
    p.add_argument("-k", "--keep-going", action="store_true",
                   help="a dataset or analysis that fails stops only what depends on it; the others "
                        "are built, the failures are listed at the end, and the exit code is 1")
    p.set_defaults(func=build_command)

    p = sub.add_parser("show", help="describe the dataset of a daq procedure",
                       description="Shape, columns, first rows and cache location of a built dataset.")
    p.add_argument("name", metavar="NAME")
    add_config(p)
    add_backend(p)
    p.add_argument("-n", "--rows", type=COUNT, default=5, help="rows to show (5)")
    p.set_defaults(func=show_command)

    p = sub.add_parser("export", help="write the dataset of a daq procedure to .csv, .zarr or .root")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.csv, FILE.zarr or FILE.root")
    add_config(p)
    add_backend(p)
    p.set_defaults(func=export_command)

    p = sub.add_parser("cache", help="inspect, maintain and share the cache (ls, verify, gc, push, pull)")
    cache_sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    cache_sub.required = True
    for name, text in (("ls", "what the cache holds and its size"),
                       ("verify", "re-hash every entry; damaged ones go to quarantine/ and count as missing"),
                       ("gc", "remove what no procedure of the library needs (dry run unless --yes)")):
        q = cache_sub.add_parser(name, help=text, description=text)
        add_config(q)
        add_backend(q)
        if name == "gc":
            q.add_argument("-a", "--analysis-path", metavar="PATH", help="user analyses (as for build)")
            q.add_argument("--yes", action="store_true", help="really delete")
            q.add_argument("--include-measurements", action="store_true",
                           help="also remove measurements no procedure needs (acquired data!)")
        q.set_defaults(func=cache_command)
    from raffinerie.cli.remote import add_parsers as add_remote_parsers

    add_remote_parsers(cache_sub)  # `raff cache push URL [NAME...]`, `raff cache pull URL [NAME...]`

