"""A Datenraffinerie 1.0 library read directly: each document converted in memory, entry by entry.

`as_012(doc, path, renderer)` gives the 0.1.2 document that `raff migrate`
would write for a 1.0 main config or library file (but templates as explicit
places and points, given to the loader as index tuples), while the merged settings of each procedure stay in memory
(`raffinerie.config.memfiles`) under paths that name the 1.0 file and the
procedure. An entry that cannot be converted is left as it is, with its
problem (`Failure`), for the loader to skip and report as that entry's own:
it stops only what needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raffinerie.config import memfiles
from raffinerie.config.dr10 import _ANALYSIS_MARKERS, convert_analysis, convert_daq
from raffinerie.config.template import Renderer
from raffinerie.errors import RaffError


@dataclass
class Converted:
    """The 0.1.2 document, what could not be converted, and for each daq procedure converted
    (by its place in the document) the index of the 1.0 parameter of each of its parameters:
    a problem of a parameter is said at the parameter the user wrote. The explicit points of a
    procedure with templates are given as the loader's index tuples, not written into `doc`."""

    doc: Any
    failures: list
    sources: dict[tuple, list[tuple[int, str]]]   # per parameter: (1.0 parameter, key or template)
    points: dict[tuple, list[tuple]]   # explicit points (value-index tuples) of template procedures


@dataclass(frozen=True)
class Failure:
    """An entry that could not be converted: its place in the document, its name, the problem."""

    where: tuple
    name: str | None
    message: str


def as_012(doc: Any, path: Path, renderer: Renderer) -> Converted:
    failures: list[Failure] = []
    sources: dict[tuple, list[tuple[int, str]]] = {}
    points: dict[tuple, list[tuple]] = {}

    def entries(items: list, where: tuple) -> list:
        out = []
        for i, entry in enumerate(items):
            try:
                mine: list[tuple[int, str]] = []
                explicit: list[tuple] = []
                out.append(_entry(entry, path, renderer, mine, explicit))
                sources[where + (i,)] = mine
                if explicit:
                    points[where + (i,)] = explicit
            except RaffError as exc:
                name = entry.get("name") if isinstance(entry, dict) else None
                failures.append(Failure(where + (i,), name if isinstance(name, str) else None,
                                        _message(exc, path)))
                out.append(entry)
        return out

    if isinstance(doc, list):
        return Converted(entries(doc, ()), failures, sources, points)
    out = dict(doc)
    if isinstance(doc.get("procedures"), list):
        out["procedures"] = entries(doc["procedures"], ("procedures",))
    if isinstance(doc.get("workflows"), list):
        out["workflows"] = [_workflow(w) for w in doc["workflows"]]
    return Converted(out, failures, sources, points)


def _entry(entry: Any, path: Path, renderer: Renderer, sources: list, points: list[tuple]) -> Any:
    if not isinstance(entry, dict):
        return entry  # the schema check says what is wrong with it
    if entry.get("type") == "analysis" or any(k in entry for k in _ANALYSIS_MARKERS):
        return convert_analysis(entry)
    if "system_settings" not in entry:
        return entry  # written in the 0.1.2 format already
    name = entry.get("name")

    def keep(kind: str, mapping: dict) -> str:
        file = f"{path.name}#{name}.{kind}"   # relative to the 1.0 file, as a file it names would be
        memfiles.put(path.parent / file, mapping)
        return file

    return convert_daq(entry, path, keep, renderer, sources, points)


def _workflow(flow: Any) -> Any:
    if not isinstance(flow, dict) or "tasks" not in flow:
        return flow
    out = {k: v for k, v in flow.items() if k != "tasks"}
    out["procedures"] = flow["tasks"]
    return out


def _message(exc: RaffError, path: Path) -> str:
    """The problem, with the file it lies in when that is another one (a default file, say)."""
    diag = exc.diagnostic
    return diag.format() if diag.file is not None and diag.file != path else diag.message
