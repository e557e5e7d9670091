"""A build stopped by Ctrl-C or SIGTERM: what was kept, and the command that goes on.

Not a failure: the user asked for it, so the CLI says `raff: interrupted: ...`, not
`raff: error:`, and exits 128 + the signal (130 for SIGINT, as shells expect).
"""

from __future__ import annotations

import shlex
import signal
from typing import Sequence

from raffinerie.errors import RaffError
from raffinerie.words import count


class Interrupted(RaffError):
    """Ctrl-C or SIGTERM: what was in flight was finished and kept. Exit 128 + the signal.

    Not a failure: the user asked for it. `head` is what happened (`interrupted`, `aborted`),
    `kept` what was kept; `text(command)` says them with the command to run again, which the
    CLI gives in full (the options the user typed), since only it knows them."""

    def __init__(self, head: str, kept: str, names: Sequence[str], signum: int = signal.SIGINT):
        self.head, self.kept, self.names = head, kept, list(names)
        super().__init__(self.text(f"raff build {shlex.join(self.names)}"))
        self.exit_code = 128 + int(signum)

    def text(self, command: str) -> str:
        return f"{self.head}: {self.kept}; run `{command}` again to continue"


class Abort(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM: stop what is in flight too. It carries the signal, so that raff
    exits 130 for SIGINT and 143 for SIGTERM, whichever the user sent that time."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = int(signum)


def kept_points(acquired: int | None) -> str:
    """`1 point acquired in this build is kept`, `6 points acquired ... are kept`."""
    if acquired is None:
        return "the points acquired are kept"
    return f"{count(acquired, 'point')} acquired in this build {'is' if acquired == 1 else 'are'} kept"


def aborted(names: list[str], acquired: int | None, exc: KeyboardInterrupt) -> Interrupted:
    """The error of a build stopped by a second signal (`exc`), with its exit code."""
    return Interrupted("aborted", f"what was in flight was stopped; {kept_points(acquired)}", names,
                       getattr(exc, "signum", signal.SIGINT))
