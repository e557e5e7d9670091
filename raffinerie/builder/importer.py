"""`raff import DIR --name NAME`: bring existing hexactrl runs into the cache.

Each run (`X.raw` with its `X.yaml`) becomes a measurement keyed by its
configuration, resolved over the power-on default as raffinerie resolves its
own points. The scan axes are what differs between the runs' configurations;
a library file records a procedure NAME with those axes and one explicit
point per run (runs of identical configuration are repeats), and the main
config includes it, so plans, datasets and analyses find it like any other
procedure. A run whose raw file is damaged is reported and skipped.

A run whose yaml lacks a key that other runs scan (runs 1-16 of the real
timewalk campaign carry no `phase_strobe`) gets no value invented for it:
it is imported with that scan value unknown, and a marker axis
`labels.<axis>_unknown` (1 for such runs) keeps its key apart from any run
that really was at the power-on default, and tells the analyses to treat
the value as NaN. `--assume AXIS=VALUE [--runs SPEC]` says what the value
was instead; the imported procedure records either choice under
`imported: {missing: ..., assumed: ...}`.
"""

from __future__ import annotations

import os
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


LABELS = "labels"                 # daq-config section of the unknown-value markers
PROCEDURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
UNKNOWN_SUFFIX = "_unknown"       # marker leaf: <axis>_unknown = 1 where the run lacked the key


@dataclass
class Run:
    name: str
    raw: Path
    config: dict          # {"target": resolved target, "daq": daq}
    given: frozenset = frozenset()   # target leaf paths the run's own yaml sets

    @property
    def number(self) -> int | None:
        """The run number: the last integer in its name (test_run_12 -> 12)."""
        found = re.findall(r"\d+", self.name)
        return int(found[-1]) if found else None


@dataclass(frozen=True)
class Assumption:
    """`--assume AXIS=VALUE`: the value of a scan key the runs' yamls lack."""

    axis: str
    value: int

    @classmethod
    def parse(cls, text: str) -> "Assumption":
        axis, sep, value = text.partition("=")
        if not sep or not axis.strip():
            raise RaffError(f"--assume {text!r}: expected AXIS=VALUE, e.g. phase_strobe=2")
        try:
            return cls(axis.strip(), int(value, 0))
        except ValueError:
            raise RaffError(f"--assume {text!r}: the value must be an integer") from None


@dataclass
class Corrupt:
    run: str
    halves: int
    lines: list[str]


@dataclass
class ImportReport:
    imported: int
    already: int
    skipped: list[str]
    axes: list[str]
    library: Path
    missing: dict[str, list[str]]                      # axis -> runs left with an unknown value
    assumed: dict[str, tuple[int, list[str]]]          # axis -> (value, runs it was assumed for)
    corrupt: list[Corrupt]
    runs: int = 0


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
        given = frozenset(("target",) + path for path, _ in _leaves(target))
        runs.append(Run(raw.stem, raw, {"target": merge(pod, target), "daq": daq}, given))
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


def select_runs(runs: list[Run], spec: str | None) -> set[str]:
    """Names of the runs `spec` names: numbers and ranges (`1-16,20`) or run names."""
    if not spec:
        return {r.name for r in runs}
    chosen: set[str] = set()
    by_name = {r.name: r for r in runs}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part in by_name:
            chosen.add(part)
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise RaffError(f"--runs {spec!r}: {part!r} is neither a run name nor a number or range (1-16)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        hits = {r.name for r in runs if r.number is not None and lo <= r.number <= hi}
        if not hits:
            raise RaffError(f"--runs {spec!r}: no run numbered {part}")
        chosen |= hits
    return chosen


def missing_keys(runs: list[Run], axes, names: list[str]) -> dict[str, list[str]]:
    """Per axis (by name), the runs whose own yaml lacks one of its target places."""
    out = {}
    for (places, _), axis in zip(axes, names):
        targets = [p for p in places if p[0] == "target"]
        lacking = [r.name for r in runs if targets and not all(p in r.given for p in targets)]
        if lacking:
            out[axis] = lacking
    return out


def settle_missing(runs: list[Run], axes, names: list[str], assumptions: list[Assumption],
                   spec: str | None) -> tuple[dict, dict]:
    """Apply the assumptions to the runs lacking their key; mark the others unknown.

    Returns ({axis: runs still unknown}, {axis: (value, runs assumed)}).
    """
    missing = missing_keys(runs, axes, names)
    places = dict(zip(names, (p for p, _ in axes)))
    chosen = select_runs(runs, spec)
    assumed: dict[str, tuple[int, list[str]]] = {}
    for a in assumptions:
        if a.axis not in places:
            raise RaffError(f"--assume {a.axis}={a.value}: {a.axis} is not a scan axis of these runs "
                            f"(axes: {', '.join(names) or 'none'})")
        lacking = [n for n in missing.get(a.axis, []) if n in chosen]
        if not lacking:
            raise RaffError(f"--assume {a.axis}={a.value}: no run{' of --runs ' + spec if spec else ''} "
                            f"lacks {a.axis}; --assume only fills values a run's yaml does not give")
        given = sorted(chosen - set(missing.get(a.axis, [])), key=lambda n: _natural_name(n))
        if spec and given:
            raise RaffError(f"--assume {a.axis}={a.value} --runs {spec}: {', '.join(given[:5])} "
                            f"set {a.axis} in their yaml; --assume only fills values a yaml lacks")
        for run in runs:
            if run.name in lacking:
                for place in places[a.axis]:
                    _set(run.config, place, a.value)
        assumed[a.axis] = (a.value, lacking)
        missing[a.axis] = [n for n in missing[a.axis] if n not in lacking]
    missing = {axis: lacking for axis, lacking in missing.items() if lacking}
    for axis, lacking in missing.items():  # a marker keeps the placeholder apart from real values
        for run in runs:
            run.config["daq"] = merge(run.config["daq"] or {},
                                      {LABELS: {axis + UNKNOWN_SUFFIX: int(run.name in lacking)}})
    return missing, assumed


def _set(tree: dict, path: tuple, value) -> None:
    for level in path[:-1]:
        tree = tree.setdefault(level, {})
    tree[path[-1]] = value


def _natural_name(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _axis_names(axes, main: Path) -> list[str]:
    return axis_names([ScanParameter([p[0][-1]], [], Origin(main), list(p)) for p, _ in axes]) \
        if axes else []


def import_runs(folder: Path, name: str, main: Path, store_root: Path, board: str | None,
                progress, assumptions: list[Assumption] = (), runs_spec: str | None = None) -> ImportReport:
    if not PROCEDURE_NAME.fullmatch(name):
        raise RaffError(f"--name {name!r}: a procedure name is letters, digits, '_', '-' and '.', "
                        "starting with a letter or '_' (it names files under imported/)")
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
    if runs_spec and not assumptions:
        raise RaffError("--runs says which runs an --assume applies to; give --assume AXIS=VALUE")
    axes = infer_axes(good)
    missing, assumed = settle_missing(good, axes, _axis_names(axes, main), list(assumptions), runs_spec)
    axes = infer_axes(good)  # again: assumed values and unknown markers change them
    axes.sort(key=lambda axis: axis[0][0][:2] == ("daq", LABELS))  # the markers last
    corrupt = [Corrupt(run.name, int((~d.halves.good).sum()), d.corruption_report())
               for run in good for d in [decoded[run.name][1]] if (~d.halves.good).any()]
    provenance = {"missing": missing or None,
                  "assumed": {a: {"value": v, "runs": r} for a, (v, r) in assumed.items()} or None}
    library = _write_library(Path(folder), name, main, good, axes, board, provenance)
    before = main.read_text()
    _include(main, library)  # last, in one step; undone if the result does not load
    lib = load_library(main)
    if lib.diagnostics:
        _replace(main, before)
        raise RaffError(f"the written library does not load, so {main.name} was left as it was: "
                        f"{lib.diagnostics[0].format()}", file=library)
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
    return ImportReport(imported, already, skipped, [a.name for a in points.scan.axes], library,
                        missing, assumed, corrupt, len(good))


def _is_imported(lib, name: str) -> bool:
    proc = lib.procedures.get(name)
    return proc is not None and getattr(proc, "imported", None) is not None


def _write_library(folder: Path, name: str, main: Path, runs: list[Run], axes, board: str | None,
                   provenance: dict | None = None) -> Path:
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
    names = _axis_names(axes, main)
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
                     "runs": [r.name for r in runs],
                     # runs whose yaml lacked a scan key: unknown, or the value --assume gave
                     **{k: v for k, v in (provenance or {}).items() if v}},
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
    _replace(main, "".join(lines))


def _replace(path: Path, text: str) -> None:
    """Write `path` in one step: a reader (or a crash) sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _plain_path(path: tuple) -> tuple:
    return tuple(_plain(p) for p in path)


def _sort_key(value):
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, repr(value))
