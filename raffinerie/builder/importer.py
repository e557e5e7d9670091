"""`raff import DIR --name NAME`: bring existing hexactrl runs into the cache.

Each run (`X.raw` with its `X.yaml`; where no raw file is left, the hexactrl
`runsummary` ROOT file `X.root` with its `X.yaml`) becomes a measurement keyed by its
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

What raffinerie trusts here is the data, not where they lie: without
`--board`, the identity in the keys is a digest of the runs' raw bytes, so
runs of another board in a folder of the same name are never taken for
these, and the same runs imported again from anywhere are recognised.

Nothing a failed or killed import leaves behind names a point that is not
in the cache: the points are committed first, then the library is renamed
into place, and MAIN gains its `libraries:` entry last, edited at the places
the YAML parser gives (comments and layout stay), checked to load as the
same document with one more library, and written in one rename. A MAIN
that cannot be edited so is refused before anything is written (raffinerie.builder.staging).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from raffinerie.builder.runfiles import decoded_run, summary_run
from raffinerie.builder.staging import plan_include, staged
from raffinerie.config.expand import axis_names
from raffinerie.config.keys import point_key
from raffinerie.config.library import Origin, ScanParameter, load_library
from raffinerie.config.parameters import load_table
from raffinerie.config.resolve import ConfigFiles
from raffinerie.config.tree import merge, strip_network
from raffinerie.config.yamlio import load_yaml
from raffinerie.daq.rawformat import RawFormatError
from raffinerie.daq.runs import characterisation_modes, run_chips, run_parts, target_chips
from raffinerie.errors import RaffError
from raffinerie.graph.plan import make_plan
from raffinerie.hgcroc import DEFAULT_CHIPS, HALVES
from raffinerie.records import MeasurementRecord
from raffinerie.store.dataset import UNKNOWN_SUFFIX  # marker leaf: <axis>_unknown = 1 where a run lacked the key
from raffinerie.store.store import Store

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


LABELS = "labels"                 # daq-config section of the unknown-value markers
PROCEDURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


@dataclass
class Run:
    name: str
    raw: Path             # the run's file: X.raw, or X.root when only its summary is left
    config: dict          # {"target": resolved target, "daq": daq}
    given: frozenset = frozenset()   # target leaf paths the run's own yaml sets
    chips: int = DEFAULT_CHIPS       # NChips of its yaml (an LD board when it says nothing)
    modes: np.ndarray = field(default_factory=lambda: np.zeros((DEFAULT_CHIPS, HALVES), bool))  # CalibrationSC per half

    @property
    def summary_only(self) -> bool:
        return self.raw.suffix == ".root"

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


def find_runs(folder: Path) -> tuple[list[Run], list[str]]:
    if not folder.is_dir():
        raise RaffError("not a folder of runs", file=folder)
    runs, skipped = [], []
    raws = {p.stem for p in folder.glob("*.raw")}
    files = list(folder.glob("*.raw")) + [p for p in folder.glob("*.root") if p.stem not in raws]
    for raw in sorted(files, key=natural):  # a run's raw file holds more than its summary: it wins
        config_file = raw.with_suffix(".yaml")
        if not config_file.is_file():
            skipped.append(f"{raw.name}: no {config_file.name} beside it")
            continue
        try:  # a yaml of the wrong shape would decode the run in a guessed mode: the run is left out
            own, daq = run_parts(load_yaml(config_file, "run configuration"), config_file)
            daq = merge(daq or {}, {"server": {}, "client": {}})  # both sections, as a library's resolve
            own = strip_network(own)
            chips = run_chips(daq, config_file) or target_chips(own) or DEFAULT_CHIPS
            target = merge(load_table().board_default(chips), own)  # over its own board's default
            modes = characterisation_modes(target, chips, config_file)
        except RaffError as exc:
            skipped.append(f"{raw.name}: not imported: {exc}")
            continue
        given = frozenset(("target",) + path for path, _ in _leaves(own))
        runs.append(Run(raw.stem, raw, {"target": target, "daq": daq}, given, chips, modes))
    if not runs:
        raise RaffError("no runs to import (X.raw or X.root with X.yaml)", file=folder)
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
    main = Path(main)
    lib = load_library(main)
    if lib.get(name) is not None and not _is_imported(lib, name):
        raise RaffError(f"'{name}' is already a procedure of this library", file=main)
    if runs_spec and not assumptions:
        raise RaffError("--runs says which runs an --assume applies to; give --assume AXIS=VALUE")
    library = main.parent / "imported" / f"{name}.yaml"
    entry = f"./imported/{name}.yaml"
    plan_include(main, library, entry)  # a MAIN that cannot take the library: refused before anything is written
    runs, skipped = find_runs(Path(folder))
    decoded, good = {}, []
    for run in runs:  # decode first: damaged runs are left out of the axes too
        try:
            decoded[run.name] = (summary_run(run.raw, run.config["daq"], run.chips) if run.summary_only
                                 else decoded_run(run.raw, run.modes, run.chips))
            good.append(run)
        except RawFormatError as exc:
            skipped.append(f"{run.raw.name}: damaged, not imported: {exc}")
        except RaffError as exc:
            skipped.append(f"{run.raw.name}: not imported: {exc}")
    if not good:
        raise RaffError("no run could be decoded", file=folder)
    axes = infer_axes(good)
    missing, assumed = settle_missing(good, axes, _axis_names(axes, main), list(assumptions), runs_spec)
    axes = infer_axes(good)  # again: assumed values and unknown markers change them
    axes.sort(key=lambda axis: axis[0][0][:2] == ("daq", LABELS))  # the markers last
    corrupt = [Corrupt(run.name, d.corrupt_halves, d.corruption)
               for run in good for d in [decoded[run.name]] if d.corrupt_halves]
    provenance = {"missing": missing or None,
                  "assumed": {a: {"value": v, "runs": r} for a, (v, r) in assumed.items()} or None}
    identity = board or content_identity(decoded[run.name].data for run in good)
    text, side_files = _library_files(Path(folder), name, main, good, axes, board, identity, provenance)
    with staged(main, library, entry, text, side_files) as staging:
        lib = staging.load()
        store = Store(store_root)
        points = make_plan(lib, name, "unused", store.index(), ConfigFiles()).points[name]
        progress.start(name, len(good))
        imported = already = 0
        for i, run in enumerate(good):
            if _commit(store, name, i, run, points, decoded[run.name], main):
                imported += 1
            else:
                already += 1
            progress.step(i + 1)
        staging.publish()
    return ImportReport(imported, already, skipped, [a.name for a in points.scan.axes], library,
                        missing, assumed, corrupt, len(good))


def content_identity(raw_files) -> str:
    """The identity of runs that name no board: a digest of their raw bytes.

    The sorted SHA-256 of each file, hashed again: runs of another board
    differ in every byte, the same runs give the same identity wherever they
    lie and whatever their names, and the order of the runs does not matter.
    Sixteen hex digits (64 bits) tell a lab's imports apart.
    """
    digests = sorted(hashlib.sha256(data).hexdigest() for data in raw_files)
    return "imported/" + hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def _commit(store: Store, name: str, i: int, run: Run, points, decoded, main: Path) -> bool:
    """Commit run i as its point; False when the cache had it (or another import made it meanwhile)."""
    key = points.key(i)
    expected = point_key(run.config["target"], run.config["daq"], points.identity, "summary",
                         points.coordinate(i)[1])
    if key != expected:
        raise RaffError(f"{run.raw.name}: its key cannot be rebuilt from the library entry")
    if store.has("measurements", key):
        return False
    coordinate, repeat = points.coordinate(i)
    record = MeasurementRecord(
        procedure=name, index=i, identity=points.identity, mode="summary", repeat=repeat,
        coordinates={a.name: _plain(v) for a, v in zip(points.scan.axes, coordinate)},
        daq=run.config["daq"], start=run.raw.stat().st_mtime, end=time.time(), raw_bytes=len(decoded.raw),
        imported_from=str(run.raw),
    )
    record = replace(record, events=decoded.n_events, corrupt_halves=decoded.corrupt_halves,
                     corruption=decoded.corruption)
    try:
        if not store.put_measurement(key, decoded.summary, decoded.raw, record.meta()):
            return False  # another process committed the same content first: its import, not ours
        store.journal(event="imported", procedure=name, key=key.hex(), run=str(run.raw))
    except OSError as exc:
        raise RaffError(f"cannot write the cache ({exc.strerror or exc}); {main.name} was left as it was",
                        file=exc.filename or store.root) from None
    return True


def _is_imported(lib, name: str) -> bool:
    proc = lib.procedures.get(name)
    return proc is not None and getattr(proc, "imported", None) is not None


def _library_files(folder: Path, name: str, main: Path, runs: list[Run], axes, board: str | None,
                   identity: str, provenance: dict | None = None) -> tuple[str, dict[Path, str]]:
    """The library's text, and its side files {path: text} (the base target and daq configs).

    Side files are named by their content, so that a new import never
    changes a file the current library reads: until the new library is
    renamed into place, the old one still finds its own.
    """
    data_dir = main.parent / "imported" / name
    base = runs[0].config
    target_text = (f"# resolved target config of run {runs[0].name}, base of the imported procedure {name}\n"
                   + yaml.dump(base["target"], Dumper=_Dumper, sort_keys=False))
    daq_text = (f"# daq config of run {runs[0].name}\n"
                + yaml.dump(base["daq"] or {"server": {}, "client": {}}, Dumper=_Dumper, sort_keys=False))
    side = {data_dir / _content_name("target", target_text): target_text,
            data_dir / _content_name("daq", daq_text): daq_text}
    target_file, daq_file = (f"./{name}/{path.name}" for path in side)
    names = _axis_names(axes, main)
    parameters = []
    for (places, values), axis in zip(axes, names):
        distinct = sorted({repr(v): v for v in values}.values(), key=_sort_key)
        keys = [list(_plain_path(p[1:] if p[0] == "target" else p)) for p in places]
        parameters.append({"keys": keys, "values": distinct})
    points = [[_plain(values[i]) for _, values in axes] for i in range(len(runs))]
    entry = {
        "name": name, "type": "daq",
        "identity": identity,
        "imported": {"source": str(folder.resolve()), "board": board or "unknown",
                     "runs": [r.name for r in runs],
                     # runs whose yaml lacked a scan key: unknown, or the value --assume gave
                     **{k: v for k, v in (provenance or {}).items() if v}},
        "target_settings": {"power_on_default": target_file},
        "daq_settings": {"default": daq_file},
        "parameters": parameters or None,
        "points": points if parameters else None,
        "repeat": len(runs) if not parameters and len(runs) > 1 else None,  # all alike: repeats
    }
    entry = {k: v for k, v in entry.items() if v is not None}
    text = (f"# written by raff import from {folder.resolve()}: {len(runs)} runs, "
            f"axes {', '.join(names) or 'none'}\n"
            + yaml.dump([entry], Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=None))
    return text, side


def _content_name(kind: str, text: str) -> str:
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _plain_path(path: tuple) -> tuple:
    return tuple(_plain(p) for p in path)


def _sort_key(value):
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, repr(value))
