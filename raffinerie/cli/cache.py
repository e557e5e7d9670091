"""`raff cache ls | verify | gc`: what the cache holds, its damage, and what no procedure needs.

(`raff cache push` and `pull` are cli/remote.py's; their parsers hang under `raff cache` here.)
"""

from __future__ import annotations

import sys

from raffinerie.cli.options import add_analysis_path, add_config_and_backend
from raffinerie.store.layout import KINDS

NOUNS = {"measurements": "measurement", "datasets": "dataset", "analyses": "analysis"}  # a store kind's entry


def cache_command(args) -> int:
    from raffinerie.cli.workspace import load_valid, open_store

    lib, files = load_valid(args)
    store = open_store(args, lib)
    if args.cache_command == "ls":
        return _cache_ls(store)
    if args.cache_command == "verify":
        return _cache_verify(store)
    if not args.yes:
        return _cache_gc(args, lib, files, store)
    with store.cache_lock(exclusive=True, waiting=_waiting_for_builds(store)):
        return _cache_gc(args, lib, files, store)


def _cache_verify(store) -> int:
    with store.cache_lock(exclusive=True, waiting=_waiting_for_builds(store)):
        total = store.count()
        damaged = store.verify(step=_entry_progress(store, "cache verify"))
    for d in damaged:
        again = ", the next build acquires it again" if d.kind == "measurements" else ""
        print(f"{store.path(d.kind, d.key)}: damaged: {d.problem}; moved to quarantine/{again}")
    print(f"{store.root}: {total} entries verified, {len(damaged)} damaged")
    return 1 if damaged else 0


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
    for kind in ("datasets", "analyses"):
        for path, doc in store.build_records(kind):
            try:
                print(f"  {NOUNS[kind]} {doc['name']}: {doc['key'][:16]}")
            except (KeyError, TypeError):
                print(f"  {NOUNS[kind]} {path.stem}: an unreadable build record ({path})")
    return 0


def _cache_gc(args, lib, files, store) -> int:
    from raffinerie.analysis.code import code_provider
    from raffinerie.builder.collect import collect, sweep
    from raffinerie.cli.render import human_bytes
    from raffinerie.config.network import boards

    named = [board.identity for board in boards(args.network, args.seed)]
    found = collect(lib, files, store, named, code_provider(lib.main, args.analysis_path),
                    args.include_measurements)
    others = [b for b in found.boards if b not in named]
    print(f"live: what the library's procedures need on {', '.join(named)}"
          + (f" and on the other boards the cache holds: {', '.join(others)}" if others else ""))
    size = found.size()
    doing = "removing" if args.yes else "would remove"
    for entry in found.doomed:
        print(f"{doing} {NOUNS[entry.kind]} {entry.key[:16]}  {entry.path}")
    for path in found.stale_outputs:
        print(f"{doing} output folder {path} (no procedure of the library writes it)")
    for path in found.unfinished:
        print(f"{doing} unfinished {path}")
    if args.yes:
        sweep(found, store)
    _print_kept(found)
    verb = "removed" if args.yes else "would remove (dry run; --yes to delete)"
    kept = "" if args.include_measurements else "; measurements are kept (--include-measurements removes unneeded ones)"
    stale = found.stale_outputs
    folders = f", {len(stale)} output folder{'s' * (len(stale) != 1)}" if stale else ""
    print(f"{verb}: {len(found.doomed)} entries{folders}, {human_bytes(size)}{kept}")
    return 0


def _print_kept(found) -> None:
    """The unneeded measurements gc keeps: of boards the command does not name, or of no known board."""
    for board, n in found.other_boards.items():
        print(f"kept {n} unneeded measurement{'s' * (n != 1)} of board {board}, which this command does "
              "not name (--network or --seed names it)")
    if found.unreadable:
        print(f"kept {found.unreadable} unneeded measurement{'s' * (found.unreadable != 1)} whose board "
              "could not be read")


ACTIONS = (("ls", "what the cache holds and its size"),
           ("verify", "re-hash every entry; damaged ones go to quarantine/ and count as missing"),
           ("gc", "remove what no procedure of the library needs (dry run unless --yes)"))


def add_parser(sub) -> None:
    from raffinerie.cli.remote import add_parsers as add_remote_parsers

    p = sub.add_parser("cache", help="inspect, maintain and share the cache (ls, verify, gc, push, pull)")
    cache_sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    cache_sub.required = True
    for name, text in ACTIONS:
        q = cache_sub.add_parser(name, help=text, description=text)
        add_config_and_backend(q)
        if name == "gc":
            add_analysis_path(q)
            q.add_argument("--yes", action="store_true", help="really delete")
            q.add_argument("--include-measurements", action="store_true",
                           help="also remove measurements no procedure needs (acquired data!)")
        q.set_defaults(func=cache_command)
    add_remote_parsers(cache_sub)  # `raff cache push URL [NAME...]`, `raff cache pull URL [NAME...]`
