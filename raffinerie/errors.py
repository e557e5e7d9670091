"""Errors and diagnostics a user can cause, each printed as one line.

The format is `file:line: path.in.doc: message`, the shape compilers use, so
editors and CI logs can jump to the place.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

ERROR = "error"
WARNING = "warning"
NOTE = "note"   # what could not be checked because of an error reported before it


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a file: where it is and what is wrong."""

    severity: str
    message: str
    file: Path | None = None
    at_line: int | None = None   # the line, where it is known at once
    where: str = ""          # the path in the document: `procedures[3].parameters[0].key`
    owner: str = ""          # the procedure or workflow the path is in: `procedure 'pedestal_run'`
    inner: str = ""          # the path inside the owner: `parameters[0].key`
    entry: str = ""          # the name of that procedure or workflow: `pedestal_run`
    # else how to find it: finding a line composes the file again (6 s for a 3.7 MB library),
    # so it is done only for a diagnostic that is shown, not for those a command only counts
    locate: Callable[[], int | None] | None = field(default=None, compare=False, repr=False)

    @property
    def line(self) -> int | None:
        if self.at_line is not None or self.locate is None:
            return self.at_line
        if "_located" not in self.__dict__:
            object.__setattr__(self, "_located", self.locate())
        return self.__dict__["_located"]

    def format(self) -> str:
        head = []
        if self.file is not None:
            head.append(f"{self.file}:{self.line}" if self.line else str(self.file))
        # a user knows procedures by name, not by their index in a list
        head += [part for part in (self.owner, self.inner) if part] if self.owner else \
            ([self.where] if self.where else [])
        prefix = f"{self.severity}: " if self.severity != ERROR else ""
        return ": ".join(head + [prefix + self.message])

    def with_severity(self, severity: str) -> "Diagnostic":
        return replace(self, severity=severity)

    def as_error(self) -> "RaffError":
        error = RaffError(self.message, self.file, self.line, self.where)
        error.diagnostic = self
        error.args = (self.format(),)
        return error

    def as_dict(self) -> dict:
        return {
            "severity": self.severity,
            "file": str(self.file) if self.file is not None else None,
            "line": self.line,
            "where": self.where,
            "owner": self.owner or None,
            "message": self.message,
        }


class RaffError(Exception):
    """An error a user can cause. The CLI prints it as one line and exits."""

    exit_code = 1

    def __init__(self, message: str, file: Path | str | None = None,
                 line: int | None = None, where: str = ""):
        self.diagnostic = Diagnostic(ERROR, message, Path(file) if file else None, line, where)
        super().__init__(self.diagnostic.format())


class ConfigErrors(RaffError):
    """Several configuration problems found at once; all are reported."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        Exception.__init__(self, "\n".join(d.format() for d in diagnostics))


def format_where(path) -> str:
    """A document path as `a.b[0].c`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def nearest(name: str, candidates: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The names of `candidates` closest to a misspelt `name`, best first (the one helper
    every "did you mean" uses, so that all of them suggest alike)."""
    return difflib.get_close_matches(str(name), sorted({str(c) for c in candidates}), n=n, cutoff=cutoff)


def did_you_mean(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    """` (did you mean 'x'?)`, or "" when no candidate is close to `name`."""
    close = nearest(name, candidates, 1, cutoff)
    return f" (did you mean '{close[0]}'?)" if close else ""
