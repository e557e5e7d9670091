"""`raff build` and `raff plan --check` when nothing changed: answered from a stamp.

See `raffinerie.store.stamp`. Only the plain single-board forms take this
path (no --force, --force-acquire or --report); everything else plans in
full. Imports stay light: this runs before the library is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from raffinerie.store import stamp
from raffinerie.store.layout import cache_root, entry_dir


def _request(args, command: str, names: list[str]) -> dict | None:
    if getattr(args, "force", False) or getattr(args, "force_acquire", False) or getattr(args, "report", False):
        return None
    if len(args.network or []) > 1 or len(args.seed or []) > 1:
        return None
    main = Path(args.config)
    if not main.is_file():
        return None  # the full path says what is wrong
    analysis = getattr(args, "analysis_path", None) or os.environ.get("RAFF_ANALYSIS_PATH")
    return {"command": command, "main": str(main.resolve()), "names": sorted(names),
            "max_points": getattr(args, "max_points", None),  # a lower limit refuses the build
            "network": [str(Path(p).resolve()) for p in args.network or []], "seed": args.seed or [],
            "analysis_path": str(Path(analysis).resolve()) if analysis else None,
            "output": str(Path(args.output).resolve()) if getattr(args, "output", None) else None}


def _root(args) -> Path:
    return cache_root(Path(args.config), args.cache)


def is_fresh(args, command: str, names: list[str]) -> bool:
    request = _request(args, command, names)
    return request is not None and stamp.fresh(_root(args), request)


def remember(args, command: str, names: list[str], plan, output_dirs: list[Path] = ()) -> None:
    """Stamp an up-to-date plan: what this command read, and the entries it stands on."""
    from raffinerie.inputs import recorded

    request = _request(args, command, names)
    if request is None or plan.todo:
        return
    root = _root(args)
    present = [str(entry_dir(root, n.kind.store_kind, n.key)) for n in plan.nodes.values()
               if n.kind.keyed and n.key]
    nodes = {n.id: n.key for n in plan.nodes.values() if n.key}
    # the materialised outputs too: one deleted or edited in raff-out/ is restored by a full build
    outputs = [path for top in output_dirs for path in _output_files(top)]
    stamp.write(root, request, recorded() + outputs, present + [str(p) for p in output_dirs], nodes)


def dataset_key(args, name: str) -> str | None:
    """The key of NAME's dataset from a stamp that still holds (of `raff build NAME` or
    `raff plan NAME`), or None: then `raff show` plans."""
    for command in ("build", "plan"):
        request = _request(args, command, [name])
        held = stamp.holding(_root(args), request) if request is not None else None
        if held is not None and held.get("nodes", {}).get(f"dataset:{name}"):
            return held["nodes"][f"dataset:{name}"]
    return None


def _output_files(top) -> list[str]:
    """The files of an output folder, without the folders of other boards nested in it
    (raff-out/<analysis>/<board>/, with their own raff-out.json): a build of another board must
    not make this one's stamp stale."""
    from raffinerie.analysis.runner import PROVENANCE

    out = []
    for where, dirs, names in os.walk(top):
        dirs[:] = [d for d in dirs if not os.path.isfile(os.path.join(where, d, PROVENANCE))]
        out += [os.path.join(where, name) for name in names]
    return out
