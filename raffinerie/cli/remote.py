"""`raff cache push URL [NAME...]` and `raff cache pull URL [NAME...]`: the cache shared between test stands.

URL is a folder (a path or `file:///path`) or an XRootD server such as EOS
(`root://host[:port]//path`). With NAMEs (procedures or workflows), the
entries the last builds of those procedures used are copied: a daq
procedure's dataset and measurements, an analysis's outputs and its
dataset, and the calibrations they were built with; push also copies the
records of those builds (`names/`), so that `pull NAME` on another stand
finds them. Without NAME, everything is copied.

Nothing is overwritten: an entry already at the destination is skipped.
Heavy packages (fsspec, XRootD) are imported only when a command runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from raffinerie.cli.numbers import WORKERS
from raffinerie.errors import RaffError

KIND_ORDER = ("measurements", "datasets", "analyses")  # what a later kind refers to goes first


def add_parsers(cache_sub, default_config: str = "main_config.yaml") -> None:
    """`push` and `pull` under `raff cache` (`cache_sub` is its subparsers object)."""
    for name, text, func in (
            ("push", "copy cache entries to a shared cache (a folder or root://host//path)", _push),
            ("pull", "copy cache entries from a shared cache into this one (checked against their manifests)",
             _pull)):
        q = cache_sub.add_parser(name, help=text, description=(
            f"{text[0].upper()}{text[1:]}. With NAMEs, the entries the last builds of those procedures or "
            "workflows used (dataset, measurements, analysis outputs, calibrations); without, everything. "
            "Entries already there are skipped; nothing is overwritten. Progress on stderr, a summary "
            "line at the end."))
        q.add_argument("url", metavar="URL", help="a folder, file:///path, or root://host[:port]//path (XRootD, EOS)")
        q.add_argument("names", metavar="NAME", nargs="*", help="procedures or workflows (default: everything)")
        q.add_argument("-c", "--config", metavar="MAIN",
                       default=os.environ.get("RAFF_CONFIG", default_config),
                       help=f"main configuration file (default: $RAFF_CONFIG or ./{default_config}); "
                            "it places the cache, and names workflows")
        q.add_argument("--cache", metavar="DIR",
                       help="cache directory (default: $RAFF_CACHE or .raffinerie-cache/ beside MAIN)")
        q.add_argument("-j", "--jobs", type=WORKERS, default=32, metavar="N",
                       help="entries in flight at once (default 32)")
        q.set_defaults(func=func)


def _push(args) -> int:
    return push_command(args)


def _pull(args) -> int:
    return pull_command(args)


def push_command(args) -> int:
    from raffinerie.store.layout import KINDS
    from raffinerie.store.records import record_rel, records_rel
    from raffinerie.store.selection import RECORD_KINDS, local_meta, local_record, select
    from raffinerie.store.transfer import Direction, LocalDamaged, Transfer

    root = _local_root(args)
    if not (root / "measurements").is_dir() and not any((root / k).is_dir() for k in KINDS):
        raise RaffError("no cache here (nothing built yet?)", file=root)
    names = list(dict.fromkeys(args.names or []))
    total = Transfer(Direction.PUSH)
    with _connected(args, root, create=True) as (store, remote):
        if names:
            selection = select(_expand(args, names, lambda n: _known_locally(root, n)),
                               lambda kind, name: local_record(root, kind, name),
                               lambda kind, key: local_meta(store, kind, key))
            _refuse_unknown(selection.unknown, f"no build of {{}} recorded in {root} (build it first)")
            keys = selection.keys
            records = selection.records
        else:
            keys = {kind: None for kind in KIND_ORDER}
            records = [(kind, p.stem) for kind in RECORD_KINDS
                       for p in sorted((root / records_rel(kind)).glob("*.json"))]
        progress = _Progress("push", args.url, selection.count if names else None)
        try:
            _each_kind(keys, progress, total,
                       lambda kind, tell: remote.push(store, kind, keys[kind], tell, strict=False))
            for kind, name in records:
                data = (root / record_rel(kind, name)).read_bytes()
                remote.write_record(kind, name, data)
        finally:
            progress.close()
    print(f"pushed {_summary(total, args.url, 'to', 'already there')}")
    _note_missing(total, "not in the local cache (removed by `raff cache gc`?); not pushed")
    if total.damaged:
        raise LocalDamaged(args.url, total)
    return 0


def pull_command(args) -> int:
    from raffinerie.store.selection import RECORD_KINDS, local_meta, local_record, select
    from raffinerie.store.transfer import Direction, RemoteDamaged, Transfer

    root = _local_root(args)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RaffError(f"cannot make the cache folder: {exc.strerror or exc}", file=root) from None
    names = list(dict.fromkeys(args.names or []))
    total = Transfer(Direction.PULL)
    with _connected(args, root, create=False) as (store, remote):
        if names:
            def record(kind: str, name: str):
                return remote.read_record(kind, name) or local_record(root, kind, name)

            def meta(kind: str, key: str):
                return remote.read_meta(kind, key) or local_meta(store, kind, key)

            selection = select(_expand(args, names, lambda n: any(record(k, n) for k in RECORD_KINDS)),
                               record, meta)
            _refuse_unknown(selection.unknown, f"no build of {{}} pushed to {args.url} (nor built here)")
            keys = selection.keys
        else:
            keys = {kind: None for kind in KIND_ORDER}
        progress = _Progress("pull", args.url, selection.count if names else None)
        try:
            _each_kind(keys, progress, total,
                       lambda kind, tell: remote.pull(store, kind, keys[kind], tell, strict=False))
        finally:
            progress.close()
    if total.entries:
        store.journal(event="pulled", url=args.url, entries=total.entries, bytes=total.bytes)
    print(f"pulled {_summary(total, args.url, 'from', 'already here')}")
    _note_missing(total, f"not in {args.url}; not pulled")
    if total.damaged:
        raise RemoteDamaged(args.url, total)
    return 0


# -- helpers ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def _connected(args, root: Path, create: bool):
    """(the local Store, the RemoteCache at args.url), the local cache held shared meanwhile."""
    from raffinerie.store.remote import RemoteCache
    from raffinerie.store.store import Store

    store = Store(root)
    with RemoteCache(args.url, create=create, entries_in_flight=args.jobs) as remote, \
            store.cache_lock(exclusive=False, waiting=_waiting(root)):
        yield store, remote


def _each_kind(keys: dict, progress, total, move) -> None:
    """`move(kind, tell)` for each kind with keys to move (None: all of them), in KIND_ORDER."""
    for kind in KIND_ORDER:
        if keys[kind] is None or keys[kind]:
            total.add(move(kind, progress.kind(kind)))
            progress.done_kind()


def _local_root(args) -> Path:
    from raffinerie.store.layout import cache_root

    if args.cache or os.environ.get("RAFF_CACHE"):
        return cache_root(Path(args.config), args.cache)
    main = Path(args.config)
    if not main.is_file():
        hint = " (name one with -c MAIN, or the cache with --cache DIR)" if args.config == "main_config.yaml" else ""
        raise RaffError(f"main config not found{hint}", file=main)
    return cache_root(main, None)


def _known_locally(root: Path, name: str) -> bool:
    from raffinerie.store.records import record_rel
    from raffinerie.store.selection import RECORD_KINDS

    return any((root / record_rel(kind, name)).is_file() for kind in RECORD_KINDS)


def _expand(args, names: list[str], known) -> list[str]:
    """Names with workflows replaced by their procedures (read from MAIN, when it can be read)."""
    if all(known(n) for n in names):
        return names
    try:
        from raffinerie.config.library import load_library

        lib = load_library(Path(args.config)) if Path(args.config).is_file() else None
    except RaffError:
        lib = None
    if lib is None:
        return names
    out: list[str] = []

    def add(name: str, depth: int = 0) -> None:
        flow = lib.workflows.get(name) if not known(name) else None
        if flow is None or depth > 50:
            out.append(name)
            return
        for member in flow.procedures:
            add(member, depth + 1)
    for name in names:
        add(name)
    return list(dict.fromkeys(out))


def _refuse_unknown(unknown: list[str], template: str) -> None:
    if unknown:
        raise RaffError(template.format(", ".join(unknown)))


def _waiting(root: Path):
    def say() -> None:
        print(f"waiting for `raff cache gc` or `verify` on {root} to finish ...", file=sys.stderr, flush=True)
    return say


def _summary(t, url: str, preposition: str, present: str) -> str:
    mb = t.bytes / 1e6
    rate = f", {mb / t.seconds:.1f} MB/s" if t.seconds > 0 and t.entries else ""
    return (f"{t.entries} entr{'y' if t.entries == 1 else 'ies'} ({mb:.1f} MB) {preposition} {url} "
            f"in {t.seconds:.1f} s{rate}; {t.present} {present}")


def _note_missing(t, text: str) -> None:
    if t.missing:
        kinds = sorted({m.kind for m in t.missing})
        print(f"note: {len(t.missing)} entries ({', '.join(kinds)}) the builds used are {text}", file=sys.stderr)


class _Progress:
    """Progress on stderr: rewritten in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, verb: str, url: str, total: int | None):
        self.verb, self.url, self.total = verb, url, total
        self.tty = sys.stderr.isatty()
        self.every = 0.2 if self.tty else 5.0
        self.t0 = self.last = time.monotonic()
        self.base_entries = self.base_bytes = 0
        self.current = None
        self.printed = False
        self._kind = ""

    def kind(self, kind: str):
        self._kind = kind
        return self

    def __call__(self, t) -> None:
        self.current = t
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        done = self.base_entries + t.entries + t.present
        of = f"/{self.total}" if self.total else ""
        mb = (self.base_bytes + t.bytes) / 1e6
        line = (f"{self.verb}: {done}{of} entries ({self._kind}), {mb:.1f} MB copied, "
                f"{now - self.t0:.0f} s")
        print(("\r" + line + "\x1b[K") if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)
        self.printed = True

    def done_kind(self) -> None:
        if self.current is not None:
            self.base_entries += self.current.entries + self.current.present
            self.base_bytes += self.current.bytes
            self.current = None

    def close(self) -> None:
        if self.tty and self.printed:
            print(file=sys.stderr, flush=True)
