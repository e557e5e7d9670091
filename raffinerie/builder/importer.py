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

What raffinerie trusts here is the data, not where they lie: without
`--board`, the identity in the keys is a digest of the runs' raw bytes, so
runs of another board in a folder of the same name are never taken for
these, and the same runs imported again from anywhere are recognised.

Nothing a failed or killed import leaves behind names a point that is not
in the cache: the points are committed first, then the library is renamed
into place, and MAIN gains its `libraries:` entry last, edited at the places
the YAML parser gives (comments and layout stay), checked to load as the
same document with one more library, and written in one rename. A MAIN
that cannot be edited so is refused before anything is written.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import stat
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from raffinerie.config.expand import axis_names
from raffinerie.config.keys import point_key
from raffinerie.config.library import Origin, ScanParameter, load_library
from raffinerie.config.parameters import load_table
from raffinerie.config.resolve import ConfigFiles
from raffinerie.config.tree import merge, strip_network
from raffinerie.config.yamlio import load_yaml, read_text, real_path
from raffinerie.daq.rawformat import RawFormatError
from raffinerie.daq.runs import characterisation_modes, decode_run, read_raw, run_chips, run_parts
from raffinerie.errors import RaffError
from raffinerie.graph.plan import make_plan
from raffinerie.hgcroc import DEFAULT_CHIPS, HALVES
from raffinerie.store.store import Store

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SafeLoader = yaml.SafeLoader  # the pure-Python one: its marks index characters of the text, as edits need


LABELS = "labels"                 # daq-config section of the unknown-value markers
PROCEDURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
UNKNOWN_SUFFIX = "_unknown"       # marker leaf: <axis>_unknown = 1 where the run lacked the key


@dataclass
class Run:
    name: str
    raw: Path
    config: dict          # {"target": resolved target, "daq": daq}
    given: frozenset = frozenset()   # target leaf paths the run's own yaml sets
    chips: int = DEFAULT_CHIPS       # NChips of its yaml (an LD board when it says nothing)
    modes: np.ndarray = field(default_factory=lambda: np.zeros((DEFAULT_CHIPS, HALVES), bool))  # CalibrationSC per half

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
        try:  # a yaml of the wrong shape would decode the run in a guessed mode: the run is left out
            own, daq = run_parts(load_yaml(config_file, "run configuration"), config_file)
            own = strip_network(own)
            target = merge(pod, own)
            chips = run_chips(daq, config_file) or DEFAULT_CHIPS
            modes = characterisation_modes(target, chips, config_file)
        except RaffError as exc:
            skipped.append(f"{raw.name}: not imported: {exc}")
            continue
        given = frozenset(("target",) + path for path, _ in _leaves(own))
        runs.append(Run(raw.stem, raw, {"target": target, "daq": daq}, given, chips, modes))
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
    main = Path(main)
    lib = load_library(main)
    if lib.get(name) is not None and not _is_imported(lib, name):
        raise RaffError(f"'{name}' is already a procedure of this library", file=main)
    if runs_spec and not assumptions:
        raise RaffError("--runs says which runs an --assume applies to; give --assume AXIS=VALUE")
    library = main.parent / "imported" / f"{name}.yaml"
    entry = f"./imported/{name}.yaml"
    _plan_include(main, library, entry)  # a MAIN that cannot take the library: refused before anything is written
    pod = load_table().power_on_default()
    runs, skipped = find_runs(Path(folder), pod)
    decoded, good = {}, []
    for run in runs:  # decode first: damaged runs are left out of the axes too
        try:
            data = read_raw(run.raw)
            decoded[run.name] = (data, decode_run(data, run.raw, run.modes, run.chips))
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
    corrupt = [Corrupt(run.name, int((~d.halves.good).sum()), d.corruption_report())
               for run in good for d in [decoded[run.name][1]] if (~d.halves.good).any()]
    provenance = {"missing": missing or None,
                  "assumed": {a: {"value": v, "runs": r} for a, (v, r) in assumed.items()} or None}
    identity = board or content_identity(decoded[run.name][0] for run in good)
    text, side_files = _library_files(Path(folder), name, main, good, axes, board, identity, provenance)
    with _staged(main, library, entry, text, side_files) as staged:
        lib = staged.load()
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
        staged.publish()
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
    data, run_decoded = decoded
    meta = {"kind": "measurement", "procedure": name, "index": i, "identity": points.identity,
            "mode": "summary", "repeat": points.coordinate(i)[1], "imported_from": str(run.raw),
            "coordinates": {a.name: _plain(v) for a, v in zip(points.scan.axes, points.coordinate(i)[0])},
            "daq": run.config["daq"], "start": run.raw.stat().st_mtime, "end": time.time(),
            "raw_bytes": len(data), "corrupt_halves": int((~run_decoded.halves.good).sum()),
            "corruption": run_decoded.corruption_report()}
    try:
        if not store.put_measurement(key, run_decoded.summary(), data, meta):
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


# --- the library and MAIN, written so that a failure or a kill changes nothing ------------------

class _Staged:
    """The new library under a temporary name, and a copy of MAIN that includes it.

    The copy lies beside MAIN (relative paths resolve alike), so loading it
    checks the new library together with everything MAIN has, and gives the
    points' keys, while MAIN itself and the library it may already include
    are untouched. `publish()` then renames the library into place and edits
    MAIN, under a lock on MAIN.
    """

    def __init__(self, main: Path, library: Path, entry: str, text: str, side_files: dict[Path, str]):
        self.main, self.library, self.entry, self.side_files = main, library, entry, side_files
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.temp_library = library.with_name(f".{library.name}.{tag}.tmp")
        self.temp_main = main.with_name(f".{main.name}.{tag}.import.yaml")
        library.parent.mkdir(parents=True, exist_ok=True)
        for path in (main, real_path(main), library):  # what a killed import left (kill -9 runs no finally)
            _remove_dead_temporaries(path)
        for path, content in side_files.items():
            _ensure(path, content)
        _write_atomically(self.temp_library, text)
        main_text = _main_text(main)
        temp_entry = f"./imported/{self.temp_library.name}"
        at = _included_at(main, main_text, library)
        _write_atomically(self.temp_main, _with_library(main_text, temp_entry, main, replace=at))

    def load(self):
        lib = load_library(self.temp_main)
        if lib.diagnostics:
            problem = lib.diagnostics[0].format().replace(str(self.temp_main), str(self.main)) \
                .replace(str(self.temp_library), str(self.library))
            raise RaffError(f"the imported library does not load with {self.main.name}, which was left as "
                            f"it was: {problem}", file=self.library)
        return lib

    def publish(self) -> None:
        real = real_path(self.main)
        with _locked(real):
            for path, content in self.side_files.items():  # a concurrent import may have cleaned them up
                _ensure(path, content)
            os.replace(self.temp_library, self.library)
            _remove_stale(self.library.parent / self.library.stem, set(self.side_files))
            text = _main_text(real)
            if _included_at(self.main, text, self.library) is None:
                try:
                    new = _with_library(text, self.entry, self.main)
                except RaffError as exc:
                    raise RaffError(f"the runs are imported and the library written to {self.library}, but "
                                    f"{exc.diagnostic.message}", file=self.main) from None
                _write_atomically(real, new, like=real)

    def discard(self) -> None:
        for path in (self.temp_main, self.temp_library):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


@contextmanager
def _staged(main: Path, library: Path, entry: str, text: str, side_files: dict[Path, str]):
    staged = None
    try:
        staged = _Staged(main, library, entry, text, side_files)
        yield staged
    finally:
        if staged is not None:
            staged.discard()
        else:  # staging itself failed: leave no temporary behind
            for path in main.parent.glob(f".{main.name}.{os.getpid()}-*.import.yaml"):
                path.unlink(missing_ok=True)
            for path in library.parent.glob(f".{library.name}.{os.getpid()}-*.tmp"):
                path.unlink(missing_ok=True)


def _main_text(main: Path) -> str:
    """MAIN's text, once its document is known to be within the YAML bounds (depth, aliases,
    duplicate keys: `load_yaml`), so that parsing and comparing it again here is bounded too."""
    real = real_path(main)
    load_yaml(real, "main config")
    return read_text(real, "main config")


def _plan_include(main: Path, library: Path, entry: str) -> None:
    """Refuse now, before anything is written, a MAIN that cannot take the library."""
    text = _main_text(main)
    if _included_at(main, text, library) is None:
        _with_library(text, entry, main)


def _included_at(main: Path, text: str, library: Path) -> int | None:
    """Index of the `libraries:` item of MAIN that is `library`, if any."""
    try:
        doc = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError:
        return None
    libraries = doc.get("libraries") if isinstance(doc, dict) else None
    target = real_path(library)
    for i, item in enumerate(libraries if isinstance(libraries, list) else []):
        if isinstance(item, str) and item and real_path(main.parent / item) == target:
            return i
    return None


def _with_library(text: str, entry: str, main: Path, replace: int | None = None) -> str:
    """MAIN's text with `entry` appended to `libraries:` (or in place of item `replace`).

    The text is edited where the YAML parser says the list and its items
    are, so comments and layout stay; the result must load as MAIN's
    document with only that change, or the edit is refused (add it by hand).
    """
    try:
        root = yaml.compose(text, Loader=_SafeLoader)
        doc = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError:
        root = doc = None
        edited = None
    else:
        edited = _edit_libraries(text, root, entry, replace)
    expected = dict(doc) if isinstance(doc, dict) else {}
    libraries = list(expected.get("libraries") or [])
    if replace is None:
        libraries.append(entry)
    else:
        libraries[replace] = entry
    expected["libraries"] = libraries
    if edited is not None and (doc is None or isinstance(doc, dict)):
        try:
            if yaml.load(edited, Loader=_SafeLoader) == expected:
                return edited
        except yaml.YAMLError:
            pass
    raise RaffError(f"cannot add {entry} to `libraries:` of this file without changing anything else "
                    "(its layout does not allow it); add it by hand, then import again", file=main)


def _edit_libraries(text: str, root, entry: str, replace: int | None) -> str | None:
    """The edited text, or None where no place for the entry is known."""
    if root is None:  # an empty MAIN
        return _append_line(text, f"libraries:\n  - {entry}\n")
    if not isinstance(root, yaml.MappingNode):
        return None
    value = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "libraries"), None)
    if value is None:
        if root.flow_style:
            return None
        indent = " " * root.start_mark.column
        return _append_line(text, f"{indent}libraries:\n{indent}  - {entry}\n")
    if isinstance(value, yaml.ScalarNode):
        if value.tag != "tag:yaml.org,2002:null" or value.style is not None or replace is not None:
            return None
        start, end = value.start_mark.index, value.end_mark.index
        return text[:start] + (" " if start == end else "") + f"[{entry}]" + text[end:]
    if not isinstance(value, yaml.SequenceNode):
        return None
    items = value.value
    if replace is not None:
        item = items[replace]
        if not isinstance(item, yaml.ScalarNode) or item.start_mark.line != item.end_mark.line:
            return None
        return text[:item.start_mark.index] + entry + text[item.end_mark.index:]
    if value.flow_style:
        if items:
            at = items[-1].end_mark.index
            return text[:at] + f", {entry}" + text[at:]
        at = value.end_mark.index - 1
        return text[:at] + entry + text[at:] if text[at:at + 1] == "]" else None
    first, last = items[0].start_mark, items[-1].end_mark
    prefix = text[text.rfind("\n", 0, first.index) + 1:first.index]
    if not re.fullmatch(r" *- +", prefix):
        return None
    if last.column == 0 and last.index > 0:
        at = last.index  # the item ends at a line break already (a block scalar)
    else:
        newline = text.find("\n", last.index)
        if newline < 0:
            return text + "\n" + prefix + entry + "\n"
        at = newline + 1
    return text[:at] + prefix + entry + "\n" + text[at:]


def _append_line(text: str, lines: str) -> str:
    return text + ("\n" if text and not text.endswith("\n") else "") + lines


@contextmanager
def _locked(path: Path, wait: float = 60.0):
    """An exclusive lock on the file `path` (flock), for read-modify-write of MAIN by several imports.

    MAIN is replaced by a rename, so a lock taken on a file that is no
    longer MAIN is dropped and taken again on the new one. Bounded: after
    `wait` seconds (a minute; an edit takes milliseconds) it gives up.
    """
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RaffError(f"another process has held a lock on this file for {wait:.0f} s; "
                                        "nothing was changed", file=path) from None
                    time.sleep(0.01)
            held, now = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
                yield
                return
        finally:
            os.close(fd)


def _write_atomically(path: Path, text: str, like: Path | None = None) -> None:
    """Write `path` in one step: a reader (or a crash) sees the old file or the new one.

    With `like`, the new file keeps that file's permission bits.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if like is not None:
            os.chmod(tmp, stat.S_IMODE(os.stat(like).st_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.(?:part|tmp|import\.yaml)")


def _remove_dead_temporaries(path: Path) -> None:
    """Temporary copies of `path` (this module's names: `.NAME.PID-XXXXXXXX.*`) whose process is gone."""
    for candidate in path.parent.glob(f".{path.name}.*"):
        m = _TEMPORARY.fullmatch(candidate.name)
        if m and m["name"] == path.name and not _alive(int(m["pid"])):
            candidate.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a name not made here): leave its file alone
    return True


def _ensure(path: Path, text: str) -> None:
    """A content-named file: written once (atomically), then left as it is."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, text)


def _remove_stale(folder: Path, keep: set[Path]) -> None:
    """Side files of earlier imports of this procedure that the library no longer reads."""
    for path in list(folder.glob("target-*.yaml")) + list(folder.glob("daq-*.yaml")):
        if path not in keep:
            path.unlink(missing_ok=True)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _plain_path(path: tuple) -> tuple:
    return tuple(_plain(p) for p in path)


def _sort_key(value):
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, repr(value))
