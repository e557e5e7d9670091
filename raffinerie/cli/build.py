"""`raff build NAME...`: bring procedures or workflows up to date, on one board or several."""

from __future__ import annotations

import sys
from pathlib import Path

from raffinerie.cli.numbers import PERCENT, WORKERS
from raffinerie.cli.options import add_analysis_path, add_config_and_backend, add_remote
from raffinerie.errors import RaffError

# The parser below is built on every `raff` call (also for --help), so this
# module imports the layers it drives inside the command only.


def build_command(args) -> int:
    from raffinerie.builder.executor import Interrupted

    try:
        return _build_command(args)
    except Interrupted as exc:  # asked for, not an error: what was kept, and the command to resume
        print(f"raff: {exc.text(again_command(args))}", file=sys.stderr)
        return exc.exit_code


# Left out of the command to resume: another --force-acquire would start yet another take, where
# a plain build finishes the interrupted one (the take was recorded before anything was acquired).
_NOT_AGAIN = {"force_acquire", "func", "parser"}


def again_command(args) -> str:
    """The user's `raff build` command line, as shlex quotes it: every option they gave (-c, --seed,
    --network, --cache, -o, ...), rebuilt from the parsed options, so it holds however raff was
    called (also `main(argv)`)."""
    import argparse
    import shlex

    words = ["raff", "build", *args.names]
    for action in getattr(args, "parser", argparse.ArgumentParser())._actions:
        if not action.option_strings or action.dest in _NOT_AGAIN or isinstance(action, argparse._HelpAction):
            continue
        value, default = getattr(args, action.dest, None), action.default
        if isinstance(default, str) and action.type is not None:
            default = action.type(default)  # argparse parses a string default (--max-points) by its type
        if value is None or value == default:
            continue
        flag = action.option_strings[0]  # the spelling the help lists first: -c, -o, --seed
        if action.nargs == 0:
            words.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def _build_command(args) -> int:
    from raffinerie.cli.uptodate import is_fresh

    names = list(dict.fromkeys(args.names))
    if is_fresh(args, "build", names):  # nothing it reads has changed since it was last up to date
        print(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} up to date "
              "(nothing it reads has changed since it was last built)")
        return 0
    from raffinerie.cli.workspace import load_valid, open_store
    from raffinerie.config.network import boards
    from raffinerie.tuning import tune_allocator

    tune_allocator()
    lib, files = load_valid(args)
    _check_names(lib, names)
    store = open_store(args, lib)
    found = boards(args.network, args.seed)
    remote = args.remote or lib.remote
    if remote:
        _pull_remote(args, lib, files, store, found, names, remote)
    if len(found) == 1:
        code = _build_one(args, lib, files, store, found[0], names)
    else:
        code = _build_boards(args, lib, files, store, found, names)
    if args.report:
        from raffinerie.cli.report import report_after_build

        for name in names:
            report_after_build(args, name)
    return code


def _build_one(args, lib, files, store, board, names: list[str]) -> int:
    """Build on one board; an up-to-date result is stamped, so the next identical build is instant."""
    from raffinerie.cli.uptodate import remember

    builder = _builder(args, lib, files, store, board, label=None)
    report = builder.build(names)
    _print_report(names, report, args, prefix="")
    if getattr(args, "dask", None) and builder.runner is not None and builder.runner.cluster_peaks:
        peaks = ", ".join(f"{mb:.0f} MB" for mb in builder.runner.cluster_peaks)
        print(f"dask workers ({args.dask}): peak RSS {peaks}")
    if report.exit_code == 0 and builder.final_plan is not None and builder.runner is not None:
        outputs = [Path(builder.runner.output_dir(n.name)) for n in builder.final_plan.nodes.values()
                   if n.kind == "analysis"]
        remember(args, "build", names, builder.final_plan, outputs)
    return report.exit_code


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
        raise RaffError(lib.unknown(unknown), file=lib.main)


def _builder(args, lib, files, store, board, label: str | None):
    """A Builder for one board; with `label` (several boards), its progress lines are the board's.
    Its outputs are the board's own unless it is the default board (`board_folder`)."""
    from raffinerie.builder.executor import BuildOptions, Builder
    from raffinerie.builder.progress import Progress

    from raffinerie.builder.outputs import board_folder

    progress = Progress(quiet=args.quiet, prefix=f"{label}: " if label else "")
    runner = _runner(args, lib, store, label or board_folder(board))  # several boards: each in its folder
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
    if args.profile:
        _print_profile(report, prefix)


def _print_profile(report, prefix: str) -> None:
    """`--profile`: the acquisition's throughput and CPU, and the time of each stage."""
    from raffinerie.cli.render import count as _count

    if report.acquired:
        print(f"  {prefix}acquisition: {_count(report.acquired, 'point')} in {report.acquiring:.2f} s "
              f"({report.acquired / max(report.acquiring, 1e-9):.1f} points/s)")
        if not prefix:  # several boards share one process: its CPU is not one board's
            print(f"  {_cpu_per_point(report)}")
    if report.timer.seconds:
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
    from raffinerie.analysis.runner import AnalysisRunner
    from raffinerie.builder.outputs import output_dir

    def where(name: str) -> Path:  # a board but the default one: raff-out/<analysis>/<board>/
        folder = output_dir(lib.main, args.output, name)
        return folder / board_label if board_label else folder

    runner = AnalysisRunner(lib, store, where, args.analysis_path, args.workers)
    if getattr(args, "dask", None):
        from raffinerie.builder.cluster import Cluster

        runner.cluster = Cluster(args.dask)
    return runner


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="bring procedures or workflows up to date",
                       description="Acquire the points the cache lacks (on the embedded emulator, or "
                                   "the backend of --network), build datasets and run analyses whose "
                                   "inputs changed. Several NAMEs are built together: one backend session "
                                   "acquires the points of all of them, and a point they share is acquired "
                                   "once. Ctrl-C stops after the point in flight; everything acquired is "
                                   "kept.")
    p.add_argument("names", metavar="NAME", nargs="+", help="procedure or workflow (one or more)")
    add_config_and_backend(p)
    add_remote(p)
    p.add_argument("--dask", metavar="ADDRESS",
                   help="assemble datasets and run analyses on a dask.distributed cluster: a scheduler "
                        "ADDRESS (tcp://host:8786; it must see the cache's folder), or local:N for N "
                        "worker processes on this machine")
    p.add_argument("-w", "--workers", type=WORKERS, default=1, metavar="N",
                   help="run up to N analyses in parallel (acquisition stays serial)")
    p.add_argument("-o", "--output", metavar="DIR", help="where analysis outputs appear (default raff-out/)")
    add_analysis_path(p, "a package directory or .py file with user analyses")
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
    p.set_defaults(func=build_command, parser=p)  # the parser: `again_command` rebuilds the command line
