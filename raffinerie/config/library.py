"""Loading a main configuration and the procedure libraries it includes.

Loading checks each file against its schema and builds plain procedure
objects; every problem is collected as a Diagnostic so that `raff validate`
can report all of them at once. Paths resolve against the file naming them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from raffinerie.config import schema
from raffinerie.config.tree import normalize
from raffinerie.config.yamlio import MissingFile, line_of, load_yaml, read_text, real_path
from raffinerie.errors import ERROR, Diagnostic, RaffError, did_you_mean, format_where

if TYPE_CHECKING:
    from raffinerie.config.search import SearchSpec


@dataclass(frozen=True)
class Origin:
    """Where something is written: a file and a path inside its document."""

    file: Path
    path: tuple = ()
    owner: str = ""   # `procedure 'NAME'` when the path is inside one: messages name it so
    depth: int = 0    # how much of `path` leads to the owner (`procedures`, 3)
    entry: str = ""   # the owner's name alone (which procedure a problem is of)

    @property
    def line(self) -> int | None:
        return line_of(self.file, self.path)

    def at(self, *more) -> "Origin":
        return Origin(self.file, self.path + more, self.owner, self.depth, self.entry)

    def of(self, kind: str, name) -> "Origin":
        """This place as the entry of the `kind` (procedure, workflow) named `name`."""
        return Origin(self.file, self.path, f"{kind} '{name}'", len(self.path), str(name))

    def error(self, message: str, severity: str = ERROR) -> Diagnostic:
        return Diagnostic(severity, message, self.file, None, format_where(self.path),
                          self.owner, format_where(self.path[self.depth:]) if self.owner else "", self.entry,
                          locate=partial(line_of, self.file, self.path))  # picklable, unlike a lambda


@dataclass
class ScanParameter:
    levels: list             # each level a key or a list of keys (fan-out)
    values: range | list
    origin: Origin
    paths: list[tuple] | None = None   # explicit places (`keys:`) instead of levels
    written: str = "key"     # the field that says its places: key, keys, or a template's columns
    search: "SearchSpec | None" = None  # a value looked for among `values`, per place (config/search.py)

    def places(self) -> list[tuple]:
        if self.paths is not None:
            return list(self.paths)
        paths: list[tuple] = [()]
        for level in self.levels:
            options = level if isinstance(level, list) else [level]
            paths = [p + (o,) for p in paths for o in options]
        return paths


@dataclass
class DaqProcedure:
    name: str
    origin: Origin
    power_on_default: Path
    daq_default: Path
    initial_config: Path | None = None
    overrides: dict = field(default_factory=dict)
    server_override: dict = field(default_factory=dict)
    client_override: dict = field(default_factory=dict)
    parameters: list[ScanParameter] = field(default_factory=list)
    # analyses whose calibration outputs overlay the target, in order (a later one wins)
    calibrations: tuple[str, ...] = ()
    calibrations_listed: bool = False   # written as a list (so each has its own place)
    mode: str = "summary"
    repeat: int = 1
    data_columns: list[str] | None = None
    points: list[tuple] | None = None   # explicit value-index tuples instead of the product
    identity: str | None = None         # target identity of the keys (imported data)
    imported: dict | None = None        # provenance of imported runs; never acquired again
    kind = "daq"

    def dependencies(self) -> list[str]:
        return list(self.calibrations)

    @property
    def search(self) -> "ScanParameter | None":
        """Its search parameter, if it has one (at most one: raffinerie.config.search)."""
        return next((p for p in self.parameters if p.search is not None), None)

    def calibration_origin(self, i: int) -> Origin:
        """Where the library names the i-th calibration."""
        return self.origin.at("calibration", i) if self.calibrations_listed else self.origin.at("calibration")


@dataclass
class AnalysisProcedure:
    name: str
    origin: Origin
    daq: str
    module: str
    parameters: dict = field(default_factory=dict)
    module_given: bool = True   # False: `module:` left out, so the module is the name
    # analyses whose outputs (summary table) this one reads beside its dataset, e.g. the
    # untuned board's pedestals that builtin.tuned_config sets beside the tuned ones
    uses: tuple[str, ...] = ()
    kind = "analysis"

    def dependencies(self) -> list[str]:
        return [self.daq, *self.uses]


@dataclass
class Workflow:
    name: str
    origin: Origin
    procedures: list[str]
    members: list[Origin] = field(default_factory=list)  # where each name is written
    kind = "workflow"

    def dependencies(self) -> list[str]:
        return list(self.procedures)


Procedure = DaqProcedure | AnalysisProcedure


@dataclass
class Library:
    main: Path
    procedures: dict[str, Procedure] = field(default_factory=dict)
    workflows: dict[str, Workflow] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    formats: dict[Path, str] = field(default_factory=dict)   # the format each file was recognised as
    remote: str | None = None   # `remote:` of the main config: a shared cache to look in first
    # files (or entries) that could not be loaded, and the names they seem to define (None: any
    # name, the file was not read): a reference to one of those is a consequence, not an error
    broken: dict[Path, set[str] | None] = field(default_factory=dict)
    causes: list[Diagnostic] = field(default_factory=list)   # why whole files were not loaded

    @property
    def format(self) -> str:
        """The format of the library: Datenraffinerie 0.1.2, or 1.0 if any file is in it."""
        from raffinerie.config.dr10 import FORMAT_10, FORMAT_012

        return FORMAT_10 if FORMAT_10 in self.formats.values() else FORMAT_012

    def get(self, name: str) -> Procedure | Workflow | None:
        return self.procedures.get(name) or self.workflows.get(name)

    def names(self) -> list[str]:
        return sorted(self.procedures) + sorted(self.workflows)

    def needs(self, names: list[str]) -> set[str]:
        """`names` and every procedure they depend on, however deep (names not defined included)."""
        found, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                entry = self.get(name)
                todo += entry.dependencies() if entry is not None else []
        return found

    def unknown(self, names: list[str]) -> str:
        """The message for NAMEs that are not procedures or workflows of this library."""
        listed = ", ".join(repr(n) + did_you_mean(n, self.names()) for n in names)
        return (f"unknown procedure{'s' * (len(names) > 1)} {listed}; known: "
                f"{', '.join(self.names()) or 'none'}")

    def broken_source(self, name: str) -> Path | None:
        """The file that may define `name` but could not be loaded, if any."""
        for path, names in self.broken.items():
            if names is None or name in names:
                return path
        return None


def load_library(main: Path) -> Library:
    """Load `main` and everything it includes; problems go to `.diagnostics`."""
    main = Path(main)
    lib = Library(main=main)
    loader = _Loader(lib)
    try:
        loader.load(main, "main", stack=())
    finally:
        loader.close()
    return lib


class _Loader:
    def __init__(self, lib: Library):
        self.lib = lib
        self.done: set[Path] = set()
        self._renderer = None   # the sandboxed template renderer, started for the first template

    def renderer(self):
        if self._renderer is None:
            from raffinerie.config.template import Renderer

            self._renderer = Renderer()
        return self._renderer

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()

    def report(self, diag: Diagnostic) -> None:
        self.lib.diagnostics.append(diag)

    def unloaded(self, path: Path, diag: Diagnostic) -> None:
        """`path` could not be loaded, for the reason `diag`: a cause, reported first."""
        self.lib.causes.append(diag)
        self.report(diag)
        self.lib.broken[path] = _names_in(path)

    def load(self, path: Path, kind: str, stack: tuple, origin: Origin | None = None) -> None:
        real = real_path(path)
        if real in stack:
            chain = " -> ".join(p.name for p in stack[stack.index(real):] + (real,))
            where = origin or Origin(path)
            self.report(where.error(f"library includes itself ({chain})"))
            return
        if real in self.done:
            return
        self.done.add(real)
        try:
            doc = load_yaml(path, "library file" if kind == "library" else "main config")
        except RaffError as exc:
            diag = exc.diagnostic
            if origin is not None and diag.line is None:
                diag = origin.error(missing_message(exc, path))
            self.unloaded(path, diag)
            return
        self.lib.files.append(path)
        if doc is None:
            self.report(Diagnostic(ERROR, "file is empty", path, 1))
            return
        from raffinerie.config import dr10

        failures: list = []
        if dr10.detect(doc) is not None:  # read as it is: converted in memory, entry by entry
            self.lib.formats[path] = dr10.FORMAT_10
            converted = self._dr10(doc, path)
            doc, failures = converted.doc, converted.failures
        else:
            converted = None
            self.lib.formats[path] = dr10.FORMAT_012
        skip = {format_where(f.where) for f in failures}
        problems = [d for d in schema.check(doc, kind, path) if not _inside(d.where, skip)]
        bad = {d.where for d in problems} | skip
        for failure in failures:
            where = Origin(path, failure.where)
            self.report((where.of("procedure", failure.name) if failure.name else where).error(failure.message))
        if "" in bad:  # the document as a whole has the wrong shape
            for diag in problems:
                self.unloaded(path, diag)
            return
        for diag in problems:
            self.report(_named(diag, doc))
        if isinstance(doc, list):
            self._procedures(doc, Origin(path), bad, converted)
        elif isinstance(doc, dict):
            for i, entry in enumerate(doc.get("libraries") or []):
                if isinstance(entry, str) and entry:
                    self.load(path.parent / entry, "library", stack + (real,),
                              Origin(path, ("libraries", i)))
            if kind == "main" and isinstance(doc.get("remote"), str):
                remote = doc["remote"]
                # a relative folder is beside the main config, like every other path in it
                self.lib.remote = remote if "://" in remote or Path(remote).is_absolute() \
                    else str(path.parent / remote)
            procs = doc.get("procedures")
            if isinstance(procs, list):
                self._procedures(procs, Origin(path, ("procedures",)), bad, converted)
            flows = doc.get("workflows")
            if isinstance(flows, list):
                self._workflows(flows, Origin(path, ("workflows",)), bad)

    def _dr10(self, doc, path: Path):
        from raffinerie.config.dr10read import as_012
        from raffinerie.config.template import Renderer

        with Renderer() as renderer:  # one sandboxed child for the file's templates, if it has any
            return as_012(doc, path, renderer)

    def _procedures(self, entries: list, origin: Origin, bad: set[str], converted=None) -> None:
        """`converted`: the dr10read.Converted of a 1.0 file (its parameters' 1.0 places, its
        explicit points), given with the entries, not kept: `load` reads included files between."""
        sources_of = converted.sources if converted is not None else {}
        points_of = converted.points if converted is not None else {}
        for i, entry in enumerate(entries):
            here = origin.at(i)
            prefix = format_where(here.path)
            if any(w == prefix or w.startswith(prefix + ".") or w.startswith(prefix + "[")
                   for w in bad):  # already reported by the schema check
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    self.lib.broken.setdefault(origin.file, set()).add(entry["name"])
                continue
            proc = _build(entry, here.of("procedure", entry["name"]), self.report, self.renderer)
            sources = sources_of.get(here.path)
            if sources and isinstance(proc, DaqProcedure):  # said at the 1.0 parameter written
                for param, (source, written) in zip(proc.parameters, sources):
                    param.origin = here.of("procedure", entry["name"]).at("parameters", source)
                    param.written = "template" if written == "template" else param.written
            if here.path in points_of and isinstance(proc, DaqProcedure):
                proc.points = points_of[here.path]
            self._add(proc, self.lib.procedures)

    def _workflows(self, entries: list, origin: Origin, bad: set[str]) -> None:
        for i, entry in enumerate(entries):
            here = origin.at(i)
            if any(w.startswith(format_where(here.path)) for w in bad):
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    self.lib.broken.setdefault(origin.file, set()).add(entry["name"])
                continue
            here = here.of("workflow", entry["name"])
            names, members = [], []
            for key in ("procedures", "analyses"):
                for j, name in enumerate(entry.get(key) or []):
                    names.append(name)
                    members.append(here.at(key, j))
            self._add(Workflow(entry["name"], here, names, members), self.lib.workflows)

    def _add(self, item, table: dict) -> None:
        first = self.lib.procedures.get(item.name) or self.lib.workflows.get(item.name)
        if first is not None:
            self.report(item.origin.at("name").error(
                f"'{item.name}' is defined twice (first at {first.origin.file}:{first.origin.line})"))
            return
        table[item.name] = item


_NAME = re.compile(r"""(?:^|[\s{,-])name:\s*['"]?([^\s'",}\]#]+)""", re.MULTILINE)
_ENTRY = re.compile(r"^(procedures|workflows)?\[(\d+)\](.*)$")


def _names_in(path: Path) -> set[str] | None:
    """The names a file that did not load seems to define (read as text), or None if unreadable."""
    try:  # read as any config file is: a FIFO or /dev/zero is refused, not read for ever
        return set(_NAME.findall(read_text(path)))
    except RaffError:
        return None


def _inside(where: str, entries: set[str]) -> bool:
    """`where` lies in one of the `entries` (document places such as `[3]`)."""
    return any(where == e or where.startswith(e + ".") or where.startswith(e + "[") for e in entries)


def _named(diag: Diagnostic, doc) -> Diagnostic:
    """A schema diagnostic inside a procedure or workflow, naming it rather than its index."""
    found = _ENTRY.match(diag.where)
    if found is None or found.group(3).startswith(".name"):
        return diag  # not in an entry, or its name is what is wrong
    key, index, rest = found.groups()
    entries = doc.get(key) if key and isinstance(doc, dict) else doc
    entry = entries[int(index)] if isinstance(entries, list) and int(index) < len(entries) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name:
        return diag
    kind = "workflow" if key == "workflows" else "procedure"
    return replace(diag, owner=f"{kind} '{name}'", inner=rest.lstrip("."), entry=name)


def missing_message(exc: RaffError, path: Path) -> str:
    """The message of a file named somewhere that could not be read, naming `path`."""
    if isinstance(exc, MissingFile):
        return f"{exc.text}: {path}{exc.hint}"
    return f"{exc.diagnostic.message}: {path}"


def _build(entry: dict, origin: Origin, report, renderer=None) -> Procedure:
    from raffinerie.config import scanparams  # it reads into this module's classes

    base = origin.file.parent
    if entry["type"] == "analysis":
        return AnalysisProcedure(
            name=entry["name"], origin=origin, daq=entry["daq"],
            module=entry.get("module") or entry["name"],
            parameters=dict(entry.get("parameters") or {}), module_given=bool(entry.get("module")),
            uses=tuple(entry.get("uses") or ()))
    target, daq = entry["target_settings"], entry["daq_settings"]
    init = target.get("initial_config")
    templated = any("template" in p for p in entry.get("parameters") or [])
    proc = DaqProcedure(
        name=entry["name"], origin=origin,
        power_on_default=base / target["power_on_default"],
        initial_config=base / init if init else None,
        overrides=normalize(target.get("overrides") or {}),
        daq_default=base / daq["default"],
        server_override=normalize(daq.get("server_override") or {}),
        client_override=normalize(daq.get("client_override") or {}),
        parameters=[] if templated else [scanparams.parameter(p, origin.at("parameters", i), report)
                                         for i, p in enumerate(entry.get("parameters") or [])],
        calibrations=_calibrations(entry.get("calibration")),
        calibrations_listed=isinstance(entry.get("calibration"), list),
        mode=entry.get("mode", "summary"),
        repeat=entry.get("repeat", 1),
        data_columns=entry.get("data_columns"),
        identity=entry.get("identity"),
        imported=entry.get("imported"),
    )
    if templated:
        if entry.get("points") is not None:
            report(origin.at("points").error("explicit points and a template parameter do not go together: "
                                              "a template's points are the product of its values"))
        proc.parameters, proc.points = scanparams.templated(entry["parameters"], origin, report, renderer,
                                                            proc.repeat)
    elif entry.get("points") is not None:
        proc.points = scanparams.points(entry["points"], proc.parameters, origin.at("points"), report)
    if any("search" in p for p in entry.get("parameters") or []):
        from raffinerie.config.search import check_procedure

        check_procedure(entry, proc.parameters, origin, report)
    return proc


def _calibrations(value) -> tuple[str, ...]:
    """`calibration: NAME` or `calibration: [A, B, ...]` (the schema has checked the shape)."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
