"""Errors and diagnostics a user can cause, each printed as one line.

The format is `file:line: path.in.doc: message`, the shape compilers use, so
editors and CI logs can jump to the place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a file: where it is and what is wrong."""

    severity: str
    message: str
    file: Path | None = None
    line: int | None = None
    where: str = ""

    def format(self) -> str:
        head = []
        if self.file is not None:
            head.append(f"{self.file}:{self.line}" if self.line else str(self.file))
        if self.where:
            head.append(self.where)
        prefix = "warning: " if self.severity == WARNING else ""
        return ": ".join(head + [prefix + self.message])

    def as_error(self) -> "RaffError":
        return RaffError(self.message, self.file, self.line, self.where)

    def as_dict(self) -> dict:
        return {
            "severity": self.severity,
            "file": str(self.file) if self.file is not None else None,
            "line": self.line,
            "where": self.where,
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
