"""Resolution: the complete target and daq config of a point.

target = power-on default ⊕ initial config ⊕ overrides ⊕ calibration ⊕ point
daq    = default ⊕ {server: server_override} ⊕ {client: client_override}

In a menu-generation daq config, a `server_override` key that the active
menu has (and the server section has not) goes into the active menu.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from raffinerie.config.daqconfig import int_setting, run_settings_as_meant, server_override, server_section
from raffinerie.config import memfiles
from raffinerie.config.library import DaqProcedure, Origin, missing_message
from raffinerie.config.tree import merge, normalize, set_path, strip_network
from raffinerie.config.yamlio import load_yaml, real_path
from raffinerie.errors import Diagnostic, RaffError


class ConfigFiles:
    """Target and daq files, each read once; problems become diagnostics."""

    def __init__(self):
        self._docs: dict[Path, Any] = {}
        self._failed: dict[Path, Diagnostic] = {}
        self.diagnostics: list[Diagnostic] = []

    def mapping(self, path: Path, origin: Origin, what: str) -> dict | None:
        """The normalised mapping in `path`, or None after reporting why not."""
        key = real_path(path)
        if key in self._docs:
            return self._docs[key]
        if key in self._failed:
            diag = self._failed[key]
            if diag.file != path:  # a missing file is reported at every reference
                self.diagnostics.append(origin.error(diag.message))
            return None
        try:
            doc = memfiles.get(path)  # a 1.0 procedure's merged settings, read directly
            if doc is None:
                doc = load_yaml(path, what)
        except RaffError as exc:
            diag = exc.diagnostic
            if diag.line is None:  # not found / unreadable: say where it is named
                diag = origin.error(missing_message(exc, path))
            self._failed[key] = diag
            self.diagnostics.append(diag)
            return None
        if not isinstance(doc, dict):
            problem = "is empty" if doc is None else f"holds a {type(doc).__name__}, not a mapping"
            diag = Diagnostic("error", f"{what} {problem}", path, 1)
            self._failed[key] = diag
            self.diagnostics.append(diag)
            return None
        doc = normalize(doc)
        self._docs[key] = doc
        return doc

    def target(self, path: Path, origin: Origin, what: str) -> dict | None:
        doc = self.mapping(path, origin, what)
        return strip_network(doc) if doc is not None else None


def base_config(proc: DaqProcedure, files: ConfigFiles, calibrations: Sequence[dict] = ()) -> dict | None:
    """`{"target": ..., "daq": ...}` of `proc` before its scan, or None if a file failed.

    `calibrations`: the outputs of `proc.calibrations`, in that order; each overlays the
    target as it stands after the ones before it, so a later one wins on a shared register.
    """
    where = proc.origin
    pod = files.target(proc.power_on_default, where.at("target_settings", "power_on_default"),
                       "power-on default")
    init = {}
    if proc.initial_config is not None:
        init = files.target(proc.initial_config, where.at("target_settings", "initial_config"),
                            "initial config")
    daq = files.mapping(proc.daq_default, where.at("daq_settings", "default"), "daq default config")
    if pod is None or init is None or daq is None:
        return None
    target = merge(merge(pod, init), proc.overrides)
    for name, calibration in zip(proc.calibrations, calibrations, strict=True):
        calibration = normalize(calibration or {})
        _check_calibration(proc, name, calibration)
        target = merge(target, calibration)
    server = server_override(server_section(daq), proc.server_override)
    daq = run_settings_as_meant(merge(daq, {"server": server, "client": proc.client_override}))
    return {"target": target, "daq": daq}


def _check_calibration(proc: DaqProcedure, name: str, calibration: dict) -> None:
    """A calibration is an analysis's output: its register values pass the checks a file's do."""
    from raffinerie.config.parameters import load_table

    problems = [f"{'.'.join(map(str, path))}: {problem}"
                for path, problem in load_table().problems(calibration)]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise proc.calibration_origin(proc.calibrations.index(name)).error(
            f"the calibration '{name}' that '{proc.name}' takes sets "
            f"{'; '.join(problems[:3])}{more}").as_error()


def server_setting(daq: dict | None, name: str, default: int) -> int:
    """An integer run setting (NEvents, NChips): the active menu's, else the server section's."""
    return int_setting(daq, name, default)


def resolve_point(base: dict, patch: list[tuple[tuple, Any]]) -> dict:
    """The fully materialised config of one point (for tests and the backend)."""
    for place, value in patch:
        base = set_path(base, place, normalize(value))
    return base


def written_at(proc: DaqProcedure, axes, message: str) -> tuple[str, Origin] | None:
    """(register, where `proc` writes it) for a register that a backend's `message` names.

    A backend refuses a register by its dotted place (`roc_s0.Top.0.phase_strob`), with no
    idea of the file it came from; the scan keys and the overrides of the procedure are
    looked for in the message, longest first, as whole places.
    """
    written = [(place[1:], axis.origin.at(axis.written)) for axis in axes for place in axis.places
               if place[0] == "target"]
    written += [(path, proc.origin.at("target_settings", "overrides", *path))
                for path in leaf_paths(proc.overrides)]
    for path, origin in sorted(written, key=lambda w: -len(".".join(map(str, w[0])))):
        dotted = ".".join(map(str, path))
        if dotted and re.search(rf"(?<![\w.]){re.escape(dotted)}(?!\w)", message):
            return dotted, origin
    return None


def leaf_paths(tree: dict, prefix: tuple = ()):
    """The path of every leaf (a value that is not a mapping) of `tree`."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaf_paths(value, prefix + (key,))
        else:
            yield prefix + (key,)
