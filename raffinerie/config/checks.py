"""Checks across a loaded library: references, cycles, key paths, values.

`validate(lib)` returns every problem as a Diagnostic; nothing is raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from raffinerie.config.daqconfig import (RUN_SETTINGS, run_problems, run_settings_as_meant, server_override,
                                         server_section, setting_problem)
from raffinerie.config.expand import expand, overlaps
from raffinerie.config.library import AnalysisProcedure, DaqProcedure, Library, Origin, ScanParameter
from raffinerie.config.parameters import ParameterTable, load_table
from raffinerie.config.resolve import ConfigFiles, leaf_paths
from raffinerie.config.tree import KEEP, has_path, merge, normalize, set_path
from raffinerie.config.yamlio import real_path
from raffinerie.errors import ERROR, NOTE, WARNING, Diagnostic, RaffError, did_you_mean


DEFAULT_MAX_POINTS = 10_000_000   # a plan of 10 M points takes about a minute
__all__ = ["DEFAULT_MAX_POINTS", "RUN_SETTINGS", "validate"]


def validate(lib: Library, strict: bool = False, files: ConfigFiles | None = None,
             max_points: int = DEFAULT_MAX_POINTS,
             module: Callable[[AnalysisProcedure], list | None] | None = None,
             names: list[str] | None = None) -> list[Diagnostic]:
    """Every problem of `lib`. `module(analysis)` raises RaffError when the analysis's code cannot
    be found, and returns its parameters' problems as (place, message) (the analysis layer knows
    code; this one only reports it). With `names`,
    the problems of entries they do not need come last, unsorted: they are only counted
    (`blocking`), so their lines are never looked up."""
    files = files or ConfigFiles()
    checker = _Checker(lib, files, load_table(), max_points)
    for proc in lib.procedures.values():
        if isinstance(proc, DaqProcedure):
            checker.daq(proc)
        else:
            checker.analysis(proc, module)
    for flow in lib.workflows.values():
        for name, origin in zip(flow.procedures, flow.members):
            if lib.get(name) is None:
                checker.unknown(origin, flow.name, name, f"workflow '{flow.name}' names unknown "
                                f"procedure '{name}'", lib.names())
    checker.cycles()
    diags = lib.diagnostics + checker.out + files.diagnostics
    if strict:
        diags = [d.with_severity(ERROR) if d.severity == WARNING else d for d in diags]
    unique = [d for d in dict.fromkeys(diags) if d not in lib.causes]
    # the files that could not be read come first: what is said after them may follow from them
    needed = lib.needs(names) if names is not None else None

    def shown(d: Diagnostic) -> bool:
        return needed is None or not d.entry or d.entry in needed

    place = sorted((d for d in unique if shown(d)), key=lambda d: (str(d.file), d.line or 0, d.where)) \
        + [d for d in unique if not shown(d)]
    return list(dict.fromkeys(lib.causes)) + checker.notes() + place


def blocking(diags: list[Diagnostic], lib: Library, names: list[str]) -> tuple[list[Diagnostic], list[str]]:
    """The errors that stop a plan or build of `names`, and the other entries that have errors.

    An error stops it when it is of a procedure or workflow that `names` need, or of none
    (a file that did not load, a daq config: it may be one they read); an error of another
    entry does not (issue 23: who asks for `test_1` gets `test_1`).
    """
    needed = lib.needs(names)
    errors = [d for d in diags if d.severity == ERROR]
    stop = [d for d in errors if not d.entry or d.entry in needed]
    others = sorted({d.entry for d in errors if d.entry and d.entry not in needed})
    return stop, others


def _kinds(lib: Library, kind: type) -> list[str]:
    return [n for n, p in lib.procedures.items() if isinstance(p, kind)]


class _Checker:
    def __init__(self, lib: Library, files: ConfigFiles, table: ParameterTable,
                 max_points: int = DEFAULT_MAX_POINTS):
        self.max_points = max_points
        self.lib, self.files, self.table = lib, files, table
        self.out: list[Diagnostic] = []
        self.checked_files: set[Path] = set()
        self.unchecked: dict[Path, list[str]] = {}   # broken file -> who refers to a name in it

    def error(self, origin: Origin, message: str, severity: str = ERROR) -> None:
        self.out.append(origin.error(message, severity))

    def unknown(self, origin: Origin, who: str, name: str, message: str, candidates: list[str]) -> None:
        """A reference to `name`, which is not in the library: an error, unless a file (or entry)
        that seems to define it could not be loaded; then the reference is left unchecked."""
        source = self.lib.broken_source(name)
        if source is not None:
            self.unchecked.setdefault(source, []).append(who)
        else:
            self.error(origin, message + did_you_mean(name, candidates, cutoff=0.75))

    def notes(self) -> list[Diagnostic]:
        """One line per file that could not be loaded: what was not checked because of it."""
        out = []
        for path, who in self.unchecked.items():
            who = list(dict.fromkeys(who))
            shown = ", ".join(f"'{w}'" for w in who[:4]) + (f" and {len(who) - 4} more" if len(who) > 4 else "")
            many = len(who) > 1
            out.append(Diagnostic(NOTE, f"{len(who)} procedure{'s' * many} that read{'s' * (not many)} "
                                        f"what {path.name} defines {'are' if many else 'is'} not "
                                        f"checked ({shown}); fix the errors of {path.name} first", path))
        return out

    def analysis(self, proc: AnalysisProcedure, module=None) -> None:
        target = self.lib.procedures.get(proc.daq)
        if target is None:
            self.unknown(proc.origin.at("daq"), proc.name, proc.daq, f"analysis '{proc.name}' reads "
                         f"unknown daq procedure '{proc.daq}'", _kinds(self.lib, DaqProcedure))
        elif not isinstance(target, DaqProcedure):
            self.error(proc.origin.at("daq"), f"'{proc.daq}' is an analysis, not a daq procedure")
        for i, name in enumerate(proc.uses):
            used = self.lib.procedures.get(name)
            if used is None:
                self.unknown(proc.origin.at("uses", i), proc.name, name, f"analysis '{proc.name}' uses "
                             f"unknown analysis '{name}'", _kinds(self.lib, AnalysisProcedure))
            elif not isinstance(used, AnalysisProcedure):
                self.error(proc.origin.at("uses", i), f"'{name}' is a daq procedure, not an analysis: "
                           f"an analysis reads its own daq procedure's dataset (`daq:`) and uses analyses")
        if module is not None:
            try:
                problems = module(proc) or []
            except RaffError as exc:  # said of the procedure, which the line names already
                message = exc.diagnostic.message.removeprefix(f"analysis '{proc.name}': ")
                self.error(proc.origin.at("module") if proc.module_given else proc.origin, message)
                problems = []
            for where, message in problems:
                self.error(proc.origin.at(*where), message)

    def daq(self, proc: DaqProcedure) -> None:
        for i, name in enumerate(proc.calibrations):
            where = proc.calibration_origin(i)
            calib = self.lib.procedures.get(name)
            if calib is None:
                self.unknown(where, proc.name, name, f"'{proc.name}' takes its calibration from '{name}', "
                             "which is not a procedure of this library", _kinds(self.lib, AnalysisProcedure))
            elif not isinstance(calib, AnalysisProcedure):
                self.error(where, f"calibration '{name}' is a daq procedure, not an analysis")
        scan = expand(proc)
        if scan.total > self.max_points:
            self.error(proc.origin.at("parameters"), f"'{proc.name}' has {scan.total:,} points, more "
                       f"than the limit of {self.max_points:,} (raise it with --max-points N)")
        for axis, place, problem in overlaps(scan):
            self.error(axis.origin.at(axis.written), f"place {'.'.join(map(str, place[1:]))} {problem}")
        pod = self.files.target(proc.power_on_default,
                                proc.origin.at("target_settings", "power_on_default"),
                                "power-on default")
        self._target_files(proc, pod)
        daq = self.files.mapping(proc.daq_default, proc.origin.at("daq_settings", "default"),
                                 "daq default config")
        resolved = self._run_settings(proc, daq) if daq is not None else None
        for param, axis in zip(proc.parameters, scan.axes):
            unknown: dict[str, list[tuple]] = {}   # what is wrong -> the places it is wrong at
            for place in axis.places:
                tree, path, what = ((daq, place[1:], "daq default config") if place[0] == "daq"
                                    else (pod, place[1:], "power-on default"))
                if tree is not None and not has_path(tree, path):
                    problem = _unregistered(self.table, tree, path) if place[0] == "target" else None
                    if problem is not None:  # the chips would refuse it: an error, said once
                        unknown.setdefault(problem, []).append(path)
                        continue
                    self.error(param.origin.at(param.written),
                               f"key path {'.'.join(map(str, path))} is not in the {what}",
                               WARNING)
                if place[0] == "target":
                    self._values(param, path, axis.values)
            if resolved is not None:
                self._scanned_run_settings(param, axis, resolved)
            for problem, paths in unknown.items():
                more = f" (and {len(paths) - 1} more place{'s' * (len(paths) > 2)})" if len(paths) > 1 else ""
                self.error(param.origin.at(param.written), f"key path {'.'.join(map(str, paths[0]))}{more} is in "
                           f"neither the power-on default nor the HGCROCv3 register map: {problem}")

    def _run_settings(self, proc: DaqProcedure, daq: dict) -> dict:
        """The run settings of the resolved daq config are sane; the resolved daq config (server part)."""
        server = server_section(daq)
        override = proc.server_override or {}
        resolved = run_settings_as_meant({**daq, "server": merge(server, server_override(server, override))})
        for name, problem in run_problems(resolved).items():
            in_menu = ("menus", server.get("active_menu")) if name in RUN_SETTINGS and name not in server else ()
            where = (proc.origin.at("daq_settings", "server_override", name) if name in override
                     else Origin(proc.daq_default, ("server",) + in_menu + (name,)))
            self.error(where, problem)
        return resolved

    def _scanned_run_settings(self, param: ScanParameter, axis, resolved: dict) -> None:
        """A scan of the daq config passes the checks its default file would.

        Each value is laid into the resolved daq config and the run settings
        are read as a run reads them; a value written straight at a run
        setting (of any menu) is checked even where another value shadows it.
        """
        paths = [place[1:] for place in axis.places if place[0] == "daq"]
        if not paths:
            return
        before = run_problems(resolved)
        for value, where in _samples(axis.values, param):
            scanned = resolved
            for path in paths:
                scanned = set_path(scanned, path, normalize(value))
            found = {k: v for k, v in run_problems(scanned).items() if before.get(k) != v}
            for path in paths:
                if path[:1] == ("server",) and (len(path) == 2 or (len(path) == 4 and path[1] == "menus")):
                    problem = setting_problem(path[-1], value)
                    if problem:
                        found.setdefault(path[-1], problem)
            for problem in found.values():
                self.error(where, problem)

    def _values(self, param: ScanParameter, path: tuple, values) -> None:
        for value, where in _samples(values, param):
            for _, problem in self.table.problems(normalize(value), path):
                self.error(where, problem)
                if isinstance(values, range):
                    return

    def _target_files(self, proc: DaqProcedure, pod: dict | None) -> None:
        """Values in the initial config and the inline overrides fit their registers, and their
        keys are registers (of the power-on default or the register map)."""
        if proc.initial_config is not None and real_path(proc.initial_config) not in self.checked_files:
            self.checked_files.add(real_path(proc.initial_config))
            init = self.files.target(proc.initial_config,
                                     proc.origin.at("target_settings", "initial_config"),
                                     "initial config")
            if init is not None:
                self._tree_values(init, Origin(proc.initial_config), pod)
        if proc.overrides:
            self._tree_values(proc.overrides, proc.origin.at("target_settings", "overrides"), pod)

    def _tree_values(self, tree: dict, origin: Origin, pod: dict | None) -> None:
        for path, problem in self.table.problems(tree):
            self.error(origin.at(*path), problem)
        if pod is None:
            return
        for path in leaf_paths(tree):
            problem = None if has_path(pod, path) else _unregistered(self.table, pod, path)
            if problem is not None:
                self.error(origin.at(*path), f"{'.'.join(map(str, path))} is in neither the power-on "
                           f"default nor the HGCROCv3 register map: {problem}")

    def cycles(self) -> None:
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        reported: set[frozenset] = set()

        def visit(name: str, stack: list[str]) -> None:
            node = self.lib.get(name)
            if node is None or state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = stack[stack.index(name):] + [name]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    first = self.lib.get(cycle[0])
                    self.error(first.origin.at("name"), "dependency cycle: " + " -> ".join(cycle))
                return
            state[name] = 1
            for dep in node.dependencies():
                visit(dep, stack + [name])
            state[name] = 2

        for name in self.lib.names():
            visit(name, [])


_LEVELS = ("chip", "block", "instance", "parameter")


def _unregistered(table: ParameterTable, pod: dict, path: tuple) -> str | None:
    """What is wrong with a target key path that the power-on default lacks, if the register
    map lacks it too (the chips refuse it); None if the map has it."""
    found = table.unknown_part(path)
    if found is None:
        return None
    level, names = found
    if level >= len(_LEVELS):
        return f"a register is {len(_LEVELS)} parts ({', '.join(_LEVELS)}), this path has {len(path)}"
    node = pod
    for part in path[:level]:  # the names the power-on default has at that level count too
        node = node.get(part) if isinstance(node, dict) else None
    names = [str(n) for n in names] + [str(n) for n in (node if isinstance(node, dict) else {})]
    inside = f"block {path[1]} has no" if level > 1 else "no"
    return f"{inside} {_LEVELS[level]} {path[level]!r}" + did_you_mean(str(path[level]), names)


def _samples(values, param: ScanParameter):
    """(value, where it is written) of a parameter's values: a range by its two ends (whole
    numbers in between fit whatever bounds its ends fit), a list item by item; a template's
    columns at the template, but for the places it leaves as configured (checked with the files)."""
    origin = param.origin
    if isinstance(values, range):
        if len(values):
            for value in sorted({values[0], values[-1]}):
                yield value, origin.at("range")
        return
    for i, value in enumerate(values):
        if param.written == "template":
            if value is not KEEP:
                yield value, origin.at("template")
            continue
        yield value, origin.at("values", i)
