"""`raff import DIR --name NAME`: bring existing hexactrl runs into the cache.

Each run (`X.raw` with its `X.yaml`) becomes a measurement keyed by its
configuration, resolved over the power-on default as raffinerie resolves its
own points. The scan axes are what differs between the runs' configurations;
a library file records a procedure NAME with those axes and one explicit
point per run (runs of identical configuration are repeats), and the main
config includes it, so plans, datasets and analyses find it like any other
procedure. A run whose raw file is damaged is reported and skipped.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from raffinerie.config.expand import axis_names
from raffinerie.config.keys import point_key
from raffinerie.config.library import Origin, ScanParameter, load_library
from raffinerie.config.parameters import load_table
from raffinerie.config.resolve import ConfigFiles, server_setting
from raffinerie.config.tree import merge, normalize, strip_network
from raffinerie.config.yamlio import line_of, load_yaml
from raffinerie.daq.rawformat import RawFormatError
from raffinerie.daq.runs import characterisation_modes, decode_run
from raffinerie.errors import RaffError
from raffinerie.graph.plan import make_plan
from raffinerie.store.store import Store

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass
class Run:
    name: str
    raw: Path
    config: dict          # {"target": resolved target, "daq": daq}


@dataclass
class ImportReport:
    imported: int
    already: int
    skipped: list[str]
    axes: list[str]
    library: Path


def natural(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def find_runs(folder: Path, pod: dict) -> tuple[list[Run], list[str]]:
    if not folder.is_dir():
        raise RaffError("not a folder of runs", file=folder)
    runs, skipped = [], []
    for raw in sorted(folder.glob("*.raw"), key=natural):
        config_file = raw.with_suffix(".yaml")
        if not config_file.is_file():
            skipped.append(f"{raw.name}: no {config_file.name} beside it")
            continue
        try:
            doc = normalize(load_yaml(config_file, "run configuration") or {})
        except RaffError as exc:
            skipped.append(f"{raw.name}: {exc}")
            continue
        target = strip_network(doc.get("target", {}) if isinstance(doc.get("target"), dict) else {})
        daq = doc.get("daq", {}) if isinstance(doc.get("daq"), dict) else {}
        runs.append(Run(raw.stem, raw, {"target": merge(pod, target), "daq": daq}))
    if not runs:
        raise RaffError("no runs to import (pairs of X.raw and X.yaml)", file=folder)
    return runs, skipped


def _leaves(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, prefix + (key,))
    else:
        yield prefix, tree


_MISSING = "\0missing"


def infer_axes(runs: list[Run]) -> list[tuple[list[tuple], list]]:
    """(places, value per run) of every group of leaves that vary together."""
    flats = [dict(_leaves(r.config)) for r in runs]
    paths = sorted({p for f in flats for p in f}, key=lambda p: tuple(map(str, p)))
    groups: dict[tuple, list[tuple]] = {}
    for path in paths:
        values = tuple(f.get(path, _MISSING) for f in flats)
        if len({repr(v) for v in values}) > 1:
            if _MISSING in values:
                raise RaffError(f"{'.'.join(map(str, path))} is set in some runs and missing in "
                                "others; such runs cannot be one procedure")
            groups.setdefault(tuple(repr(v) for v in values), []).append(path)
    return [(places, [flats[i][places[0]] for i in range(len(runs))]) for places in groups.values()]


def import_runs(folder: Path, name: str, main: Path, store_root: Path, board: str | None,
                progress) -> ImportReport:
    lib = load_library(main)
    if lib.get(name) is not None and not _is_imported(lib, name):
        raise RaffError(f"'{name}' is already a procedure of this library", file=main)
    pod = load_table().power_on_default()
    runs, skipped = find_runs(Path(folder), pod)
    decoded, good = {}, []
    for run in runs:  # decode first: damaged runs are left out of the axes too
        try:
            data = run.raw.read_bytes()
            chips = server_setting(run.config["daq"], "NChips", 3) or 3
            decoded[run.name] = (data, decode_run(data, run.raw, characterisation_modes(
                run.config["target"], chips), chips))
            good.append(run)
        except (RawFormatError, OSError) as exc:
            skipped.append(f"{run.raw.name}: damaged, not imported: {exc}")
    if not good:
        raise RaffError("no run could be decoded", file=folder)
    axes = infer_axes(good)
    library = _write_library(Path(folder), name, main, good, axes, board)
    _include(main, library)
    lib = load_library(main)
    if lib.diagnostics:
        raise RaffError(f"the written library does not load: {lib.diagnostics[0].format()}", file=library)
    store = Store(store_root)
    plan = make_plan(lib, name, "unused", store.index(), ConfigFiles())
    points = plan.points[name]
    imported = already = 0
    progress.start(name, len(good))
    for i, run in enumerate(good):
        key = points.key(i)
        expected = point_key(run.config["target"], run.config["daq"], points.identity, "summary",
                             points.coordinate(i)[1])
        if key != expected:
            raise RaffError(f"{run.raw.name}: its key cannot be rebuilt from the library entry")
        if store.has("measurements", key):
            already += 1
        else:
            data, run_decoded = decoded[run.name]
            meta = {"kind": "measurement", "procedure": name, "index": i, "identity": points.identity,
                    "mode": "summary", "repeat": points.coordinate(i)[1], "imported_from": str(run.raw),
                    "coordinates": {a.name: _plain(v) for a, v in zip(points.scan.axes, points.coordinate(i)[0])},
                    "daq": run.config["daq"], "start": run.raw.stat().st_mtime, "end": time.time(),
                    "raw_bytes": len(data), "corrupt_halves": int((~run_decoded.halves.good).sum()),
                    "corruption": run_decoded.corruption_report()}
            store.put_measurement(key, run_decoded.summary(), data, meta)
            store.journal(event="imported", procedure=name, key=key.hex(), run=str(run.raw))
            imported += 1
        progress.step(i + 1)
    return ImportReport(imported, already, skipped, [a.name for a in points.scan.axes], library)


def _is_imported(lib, name: str) -> bool:
    proc = lib.procedures.get(name)
    return proc is not None and getattr(proc, "imported", None) is not None


def _write_library(folder: Path, name: str, main: Path, runs: list[Run], axes, board: str | None) -> Path:
    base_dir = main.parent / "imported"
    data_dir = base_dir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    base = runs[0].config
    (data_dir / "target.yaml").write_text(
        f"# resolved target config of run {runs[0].name}, base of the imported procedure {name}\n"
        + yaml.dump(base["target"], Dumper=_Dumper, sort_keys=False))
    (data_dir / "daq.yaml").write_text(
        f"# daq config of run {runs[0].name}\n" + yaml.dump(base["daq"] or {"server": {}, "client": {}},
                                                           Dumper=_Dumper, sort_keys=False))
    names = axis_names([ScanParameter([p[0][-1]], [], Origin(main), list(p)) for p, _ in axes]) \
        if axes else []
    parameters = []
    for (places, values), axis in zip(axes, names):
        distinct = sorted({repr(v): v for v in values}.values(), key=_sort_key)
        keys = [list(_plain_path(p[1:] if p[0] == "target" else p)) for p in places]
        parameters.append({"keys": keys, "values": distinct})
    points = [[_plain(values[i]) for _, values in axes] for i in range(len(runs))]
    entry = {
        "name": name, "type": "daq",
        "identity": board or f"imported/{folder.resolve().name}",
        "imported": {"source": str(folder.resolve()), "board": board or "unknown",
                     "runs": [r.name for r in runs]},
        "target_settings": {"power_on_default": f"./{name}/target.yaml"},
        "daq_settings": {"default": f"./{name}/daq.yaml"},
        "parameters": parameters or None,
        "points": points if parameters else None,
        "repeat": len(runs) if not parameters and len(runs) > 1 else None,  # all alike: repeats
    }
    entry = {k: v for k, v in entry.items() if v is not None}
    library = base_dir / f"{name}.yaml"
    library.write_text(f"# written by raff import from {folder.resolve()}: {len(runs)} runs, "
                       f"axes {', '.join(names) or 'none'}\n"
                       + yaml.dump([entry], Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=None))
    return library


def _include(main: Path, library: Path) -> None:
    """Add the library to the main config's `libraries:` (text edit: comments stay)."""
    relative = "./" + str(library.relative_to(main.parent))
    doc = load_yaml(main, "main config") or {}
    libraries = doc.get("libraries") or []
    if relative in libraries or str(library) in libraries:
        return
    lines = main.read_text().splitlines(keepends=True)
    if libraries:
        last = line_of(main, ("libraries", len(libraries) - 1))
        if last == line_of(main, ("libraries",)):  # flow style: libraries: [a, b]
            text = lines[last - 1]
            end = text.rindex("]")
            lines[last - 1] = text[:end] + f", {relative}" + text[end:]
        else:
            indent = re.match(r"\s*", lines[last - 1]).group(0)
            lines.insert(last, f"{indent}- {relative}\n")
    elif "libraries" in doc:
        line = line_of(main, ("libraries",))
        if "[]" not in lines[line - 1]:
            raise RaffError("cannot add to `libraries:`; add the library by hand: " + relative, file=main)
        lines[line - 1] = lines[line - 1].replace("[]", f"[{relative}]", 1)
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"libraries:\n  - {relative}\n")
    main.write_text("".join(lines))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _plain_path(path: tuple) -> tuple:
    return tuple(_plain(p) for p in path)


def _sort_key(value):
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, repr(value))
