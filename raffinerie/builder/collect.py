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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from raffinerie.config.library import Library
from raffinerie.config.resolve import ConfigFiles
from raffinerie.graph.plan import make_plan, take_keys
from raffinerie.store.layout import KINDS
from raffinerie.store.store import DamagedEntry, Store


@dataclass
class Collection:
    """What gc would remove, and what it keeps for boards it was not given."""

    boards: list[str]                       # every board planned (named first)
    named: list[str]                        # the boards of the command
    doomed: list[tuple[str, str, Path]] = field(default_factory=list)    # (kind, key, path)
    other_boards: dict[str, int] = field(default_factory=dict)  # identity -> unneeded points kept
    unreadable: int = 0                     # unneeded points whose board could not be read: kept


def known_boards(store: Store) -> list[str]:
    """Every board the cache has points or build records of."""
    found = list(store.boards())
    for kind, field_of in (("datasets", lambda doc: (doc["inputs"].get("resolved") or {}).get("identity")),
                           ("takes", lambda doc: doc["inputs"].get("identity"))):
        for path in sorted((store.root / "names" / kind).glob("*.json")):
            try:
                identity = field_of(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
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
                if node.key and node.kind in ("dataset", "analysis"):
                    needed["datasets" if node.kind == "dataset" else "analyses"].add(node.key)
    return needed


def collect(lib: Library, files: ConfigFiles, store: Store, named: list[str], code,
            include_measurements: bool) -> Collection:
    """What gc removes: unneeded datasets and analyses, and (`include_measurements`) the unneeded
    measurements of the boards in `named`."""
    boards = list(dict.fromkeys(named + known_boards(store)))
    needed = live_set(lib, files, store, boards, code)
    out = Collection(boards, list(named))
    for kind in ("datasets", "analyses"):
        out.doomed += [(kind, key, path) for key, path in store.entries(kind) if key not in needed[kind]]
    if include_measurements:
        for key, path in store.entries("measurements"):
            if key in needed["measurements"]:
                continue
            board = _board_of(store, key)
            if board in named:
                out.doomed.append(("measurements", key, path))
            elif board is None:
                out.unreadable += 1
            else:
                out.other_boards[board] = out.other_boards.get(board, 0) + 1
    return out


def _board_of(store: Store, key: str) -> str | None:
    """The board a measurement was acquired on, from its own attributes; None if unreadable
    (a damaged one is quarantined by the read, never deleted)."""
    try:
        identity = store.meta("measurements", key).get("identity")
    except (DamagedEntry, OSError):
        return None
    return identity if isinstance(identity, str) else None
