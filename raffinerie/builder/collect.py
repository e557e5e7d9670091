"""What `raff cache gc` keeps: the live set, over every board the cache knows.

Keys hold the board's identity, so what the library needs depends on the
board. gc therefore plans every procedure of the library on every board it
knows of, not only on the board of the command:

- the boards the command names (`--network`, `--seed`; the embedded
  emulator's seed 0 without them, as for every command);
- every board the cache holds points of (`names/boards/`, recorded when a
  point is committed; see `Store.remember_board`);
- the boards of the build records (`names/datasets/`, `names/takes/`), for
  caches written before boards were recorded.

Live is what those plans use: the points (current take and the earlier ones
`--force-acquire` kept), the datasets and the analyses. Datasets and
analyses outside it are removed (they are made again from the
measurements). Measurements are acquired data: one outside it is removed
only if it was acquired on a board the command names (its own attributes
say which); the measurements of any other board are kept and counted.

gc also removes the folders in raff-out/ that no analysis of the library
writes (renamed or removed analyses) and the unfinished writes left in tmp/.
`collect` decides all of it; `sweep` removes it; the command only prints.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from raffinerie.config.library import Library
from raffinerie.config.resolve import ConfigFiles
from raffinerie.graph.plan import make_plan
from raffinerie.graph.points import take_keys
from raffinerie.store.files import tree_size
from raffinerie.store.layout import KINDS
from raffinerie.store.entries import DamagedEntry
from raffinerie.store.store import Store

# The store kind of the entry a plan node of each kind has (points have measurements, one per
# point). The one place gc maps node kinds to store kinds: `NodeKind.store_kind` replaces it.
ENTRY_KINDS = {"dataset": "datasets", "analysis": "analyses"}


@dataclass(frozen=True)
class Doomed:
    """A cache entry no procedure needs."""

    kind: str                               # its store kind (measurements, datasets, analyses)
    key: str
    path: Path


@dataclass
class Collection:
    """What gc would remove, and what it keeps for boards it was not given."""

    boards: list[str]                       # every board planned (named first)
    named: list[str]                        # the boards of the command
    doomed: list[Doomed] = field(default_factory=list)
    other_boards: dict[str, int] = field(default_factory=dict)  # identity -> unneeded points kept
    unreadable: int = 0                     # unneeded points whose board could not be read: kept
    stale_outputs: list[Path] = field(default_factory=list)  # raff-out/ folders no analysis writes
    unfinished: list[Path] = field(default_factory=list)     # tmp/ leftovers of interrupted writes

    def size(self) -> int:
        """Bytes the doomed entries and stale output folders take (unfinished writes not counted)."""
        return sum(tree_size(d.path) for d in self.doomed) + sum(tree_size(p) for p in self.stale_outputs)


def known_boards(store: Store) -> list[str]:
    """Every board the cache has points or build records of."""
    found = list(store.boards())
    for kind, field_of in (("datasets", lambda doc: (doc["inputs"].get("resolved") or {}).get("identity")),
                           ("takes", lambda doc: doc["inputs"].get("identity"))):
        for _, doc in store.build_records(kind):
            try:
                identity = field_of(doc)
            except (KeyError, TypeError, AttributeError):
                continue  # an unreadable record names no board
            if isinstance(identity, str):
                found.append(identity)
    return list(dict.fromkeys(found))


def live_set(lib: Library, files: ConfigFiles, store: Store, boards: list[str], code) -> dict[str, set[str]]:
    """Keys (hex) of each kind that the library's procedures need on any of `boards`."""
    needed: dict[str, set[str]] = {kind: set() for kind in KINDS}
    index = store.index()
    for identity in boards:
        for name in lib.procedures:
            plan = make_plan(lib, name, identity, index, files, code)
            for points in plan.points.values():
                # the current take, and the earlier ones --force-acquire kept (acquired data, never dropped)
                for keys in [points.keys] + [take_keys(points, t) for t in range(points.take)]:
                    keys = keys.hex()
                    needed["measurements"].update(keys[i:i + 64] for i in range(0, len(keys), 64))
            for node in plan.nodes.values():
                if node.key and node.kind in ENTRY_KINDS:
                    needed[ENTRY_KINDS[node.kind]].add(node.key)
    return needed


def collect(lib: Library, files: ConfigFiles, store: Store, named: list[str], code,
            include_measurements: bool) -> Collection:
    """What gc removes: unneeded datasets and analyses, (`include_measurements`) the unneeded
    measurements of the boards in `named`, stale output folders and unfinished writes."""
    boards = list(dict.fromkeys(named + known_boards(store)))
    needed = live_set(lib, files, store, boards, code)
    out = Collection(boards, list(named))
    for kind in ENTRY_KINDS.values():
        out.doomed += [Doomed(kind, key, path) for key, path in store.entries(kind) if key not in needed[kind]]
    if include_measurements:
        _collect_measurements(store, needed["measurements"], out)
    out.stale_outputs = stale_outputs(lib)
    out.unfinished = store.stale_tmp()
    return out


def _collect_measurements(store: Store, needed: set[str], out: Collection) -> None:
    """Doom the unneeded measurements of the named boards; count those of other boards."""
    for key, path in store.entries("measurements"):
        if key in needed:
            continue
        board = _board_of(store, key)
        if board in out.named:
            out.doomed.append(Doomed("measurements", key, path))
        elif board is None:
            out.unreadable += 1
        else:
            out.other_boards[board] = out.other_boards.get(board, 0) + 1


def stale_outputs(lib: Library) -> list[Path]:
    """The folders in raff-out/ beside MAIN that no analysis of the library writes (renamed or
    removed analyses); files there, such as reports, and hidden folders are left alone. The
    outputs of boards other than the default one are inside their analysis's folder
    (raff-out/<analysis>/<board>/, `raffinerie.builder.outputs`), so they go with it, or stay."""
    root = lib.main.resolve().parent / "raff-out"
    if not root.is_dir():
        return []
    produced = {name for name, proc in lib.procedures.items() if proc.kind == "analysis"}
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                  and not p.name.startswith(".") and p.name not in produced)


def sweep(found: Collection, store: Store) -> None:
    """Remove what `collect` found (under the cache's exclusive lock)."""
    for path in found.stale_outputs + found.unfinished:
        shutil.rmtree(path, ignore_errors=True)
    for entry in found.doomed:
        store.remove(entry.kind, entry.key)


def _board_of(store: Store, key: str) -> str | None:
    """The board a measurement was acquired on, from its own attributes; None if unreadable
    (a damaged one is quarantined by the read, never deleted)."""
    try:
        identity = store.meta("measurements", key).get("identity")
    except (DamagedEntry, OSError):
        return None
    return identity if isinstance(identity, str) else None
