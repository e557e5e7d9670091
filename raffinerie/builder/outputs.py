"""Where a board's analysis outputs appear, and the file that says whose they are.

The default board (the embedded emulator with seed 0, as the quickstart builds)
writes `raff-out/<analysis>/`. Every other board, alone (`--network`,
`--seed 6`) or with others, writes `raff-out/<analysis>/<board>/`, so two
boards' plots are never in one folder. Each output folder holds
`raff-out.json` (`PROVENANCE`): the board, the analysis and its key, the
daq procedure and the keys of the datasets it read, the raffinerie version and
when it was built. A board's folder nested in the default board's is
recognised by that file, and kept when the default board's outputs are
replaced (`raffinerie.analysis.runner`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from raffinerie import __version__
from raffinerie.analysis.runner import PROVENANCE
from raffinerie.config.network import DEFAULT_SEED, Board
from raffinerie.graph.nodes import Node
from raffinerie.graph.plan import Plan

PROVENANCE_FORMAT = 1


def output_dir(main: Path, override: str | None, procedure: str) -> Path:
    """The default board's output folder of analysis `procedure`: -o DIR, else raff-out/ beside MAIN."""
    return Path(override) / procedure if override else main.resolve().parent / "raff-out" / procedure


def board_folder(board: Board) -> str | None:
    """The sub-folder of a board's outputs: None for the default board (raff-out/<analysis>/ itself)."""
    return None if board.network is None and board.seed == DEFAULT_SEED else board.label


def provenance(plan: Plan, node: Node, identity: str, built: float | None) -> dict:
    """What `raff-out.json` says of the outputs of analysis `node`."""
    datasets, calibrations = {}, {}
    for dep in _upstream(plan, node):
        if dep.kind == "dataset":
            datasets[dep.name] = dep.key
        elif dep.kind == "analysis":
            calibrations[dep.name] = dep.key
    data = plan.nodes.get(node.depends_on[0]) if node.depends_on else None
    when = built if isinstance(built, (int, float)) else None
    return {"format": PROVENANCE_FORMAT, "board": identity, "analysis": node.name, "key": node.key,
            "procedure": data.name if data is not None else None,
            "datasets": datasets, "calibrations": calibrations, "raffinerie": __version__,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(when)) if when else None}


def write_provenance(folder: Path, doc: dict, built: float | None) -> None:
    """Write `folder/raff-out.json` in one rename (a reader never sees half of it). It carries the
    time the analysis was built, as the outputs copied beside it do: a file modified just before
    the no-op stamp is written would make that stamp racy, and the next build plan in full."""
    path = Path(folder) / PROVENANCE
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    tmp = path.with_name(f".{PROVENANCE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    if isinstance(built, (int, float)):
        os.utime(tmp, (built, built))
    os.replace(tmp, path)


def _upstream(plan: Plan, node: Node) -> list[Node]:
    """Every node `node` depends on, nearest first (its dataset, then calibrations' chains)."""
    out, seen, todo = [], {node.id}, list(node.depends_on)
    while todo:
        node_id = todo.pop(0)
        if node_id in seen or node_id not in plan.nodes:
            continue
        seen.add(node_id)
        dep = plan.nodes[node_id]
        out.append(dep)
        todo += dep.depends_on
    return out
