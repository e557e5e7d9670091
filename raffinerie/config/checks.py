"""Checks across a loaded library: references, cycles, key paths, values.

`validate(lib)` returns every problem as a Diagnostic; nothing is raised.
"""

from __future__ import annotations

from pathlib import Path

from raffinerie.config.daqconfig import (RUN_SETTINGS, run_problems, server_override, server_section,
                                         setting_problem)
from raffinerie.config.expand import expand, overlaps
from raffinerie.config.library import AnalysisProcedure, DaqProcedure, Library, Origin
from raffinerie.config.parameters import ParameterTable, load_table
from raffinerie.config.resolve import ConfigFiles
from raffinerie.config.tree import has_path, merge, normalize, set_path
from raffinerie.config.yamlio import real_path
from raffinerie.errors import ERROR, WARNING, Diagnostic


DEFAULT_MAX_POINTS = 10_000_000   # a plan of 10 M points takes about a minute
__all__ = ["DEFAULT_MAX_POINTS", "RUN_SETTINGS", "validate"]


def validate(lib: Library, strict: bool = False, files: ConfigFiles | None = None,
             max_points: int = DEFAULT_MAX_POINTS) -> list[Diagnostic]:
    files = files or ConfigFiles()
    checker = _Checker(lib, files, load_table(), max_points)
    for proc in lib.procedures.values():
        if isinstance(proc, DaqProcedure):
            checker.daq(proc)
        else:
            checker.analysis(proc)
    for flow in lib.workflows.values():
        for name, origin in zip(flow.procedures, flow.members):
            if lib.get(name) is None:
                checker.error(origin,
                              f"workflow '{flow.name}' names unknown procedure '{name}'"
                              + _known(lib, name))
    checker.cycles()
    diags = lib.diagnostics + checker.out + files.diagnostics
    if strict:
        diags = [Diagnostic(ERROR, d.message, d.file, d.line, d.where) for d in diags]
    unique = list(dict.fromkeys(diags))
    return sorted(unique, key=lambda d: (str(d.file), d.line or 0, d.where))


def _known(lib: Library, name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, lib.names(), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Checker:
    def __init__(self, lib: Library, files: ConfigFiles, table: ParameterTable,
                 max_points: int = DEFAULT_MAX_POINTS):
        self.max_points = max_points
        self.lib, self.files, self.table = lib, files, table
        self.out: list[Diagnostic] = []
        self.checked_files: set[Path] = set()

    def error(self, origin: Origin, message: str, severity: str = ERROR) -> None:
        self.out.append(origin.error(message, severity))

    def analysis(self, proc: AnalysisProcedure) -> None:
        target = self.lib.procedures.get(proc.daq)
        if target is None:
            self.error(proc.origin.at("daq"), f"analysis '{proc.name}' reads unknown daq procedure "
                       f"'{proc.daq}'" + _known(self.lib, proc.daq))
        elif not isinstance(target, DaqProcedure):
            self.error(proc.origin.at("daq"), f"'{proc.daq}' is an analysis, not a daq procedure")

    def daq(self, proc: DaqProcedure) -> None:
        if proc.calibration:
            calib = self.lib.procedures.get(proc.calibration)
            if calib is None:
                self.error(proc.origin.at("calibration"), f"'{proc.name}' takes its calibration from "
                           f"'{proc.calibration}', which is not a procedure of this library"
                           + _known(self.lib, proc.calibration))
            elif not isinstance(calib, AnalysisProcedure):
                self.error(proc.origin.at("calibration"),
                           f"calibration '{proc.calibration}' is a daq procedure, not an analysis")
        scan = expand(proc)
        if scan.total > self.max_points:
            self.error(proc.origin.at("parameters"), f"'{proc.name}' has {scan.total:,} points, more "
                       f"than the limit of {self.max_points:,} (raise it with --max-points N)")
        for axis, place, problem in overlaps(scan):
            self.error(axis.origin.at("key"), f"place {'.'.join(map(str, place[1:]))} {problem}")
        self._target_files(proc)
        pod = self.files.target(proc.power_on_default,
                                proc.origin.at("target_settings", "power_on_default"),
                                "power-on default")
        daq = self.files.mapping(proc.daq_default, proc.origin.at("daq_settings", "default"),
                                 "daq default config")
        resolved = self._run_settings(proc, daq) if daq is not None else None
        for param, axis in zip(proc.parameters, scan.axes):
            for place in axis.places:
                tree, path, what = ((daq, place[1:], "daq default config") if place[0] == "daq"
                                    else (pod, place[1:], "power-on default"))
                if tree is not None and not has_path(tree, path):
                    self.error(param.origin.at("key"),
                               f"key path {'.'.join(map(str, path))} is not in the {what}",
                               WARNING)
                if place[0] == "target":
                    self._values(param.origin, path, axis.values)
            if resolved is not None:
                self._scanned_run_settings(param.origin, axis, resolved)

    def _run_settings(self, proc: DaqProcedure, daq: dict) -> dict:
        """The run settings of the resolved daq config are sane; the resolved daq config (server part)."""
        server = server_section(daq)
        override = proc.server_override or {}
        resolved = {**daq, "server": merge(server, server_override(server, override))}
        for name, problem in run_problems(resolved).items():
            in_menu = ("menus", server.get("active_menu")) if name in RUN_SETTINGS and name not in server else ()
            where = (proc.origin.at("daq_settings", "server_override", name) if name in override
                     else Origin(proc.daq_default, ("server",) + in_menu + (name,)))
            self.error(where, problem)
        return resolved

    def _scanned_run_settings(self, origin: Origin, axis, resolved: dict) -> None:
        """A scan of the daq config passes the checks its default file would.

        Each value is laid into the resolved daq config and the run settings
        are read as a run reads them; a value written straight at a run
        setting (of any menu) is checked even where another value shadows it.
        """
        paths = [place[1:] for place in axis.places if place[0] == "daq"]
        if not paths:
            return
        before = run_problems(resolved)
        for value, where in _samples(axis.values, origin):
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

    def _values(self, origin: Origin, path: tuple, values) -> None:
        for value, where in _samples(values, origin):
            for _, problem in self.table.problems(normalize(value), path):
                self.error(where, problem)
                if isinstance(values, range):
                    return

    def _target_files(self, proc: DaqProcedure) -> None:
        """Values in the initial config and the inline overrides fit their registers."""
        if proc.initial_config is not None and real_path(proc.initial_config) not in self.checked_files:
            self.checked_files.add(real_path(proc.initial_config))
            init = self.files.target(proc.initial_config,
                                     proc.origin.at("target_settings", "initial_config"),
                                     "initial config")
            if init is not None:
                self._tree_values(init, Origin(proc.initial_config))
        if proc.overrides:
            self._tree_values(proc.overrides, proc.origin.at("target_settings", "overrides"))

    def _tree_values(self, tree: dict, origin: Origin) -> None:
        for path, problem in self.table.problems(tree):
            self.error(origin.at(*path), problem)

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


def _samples(values, origin: Origin):
    """(value, where it is written) of a parameter's values: a range by its two ends (whole
    numbers in between fit whatever bounds its ends fit), a list item by item."""
    if isinstance(values, range):
        if len(values):
            for value in sorted({values[0], values[-1]}):
                yield value, origin.at("range")
        return
    for i, value in enumerate(values):
        yield value, origin.at("values", i)
