"""Several boards in one build: one session, one pipeline, one builder per board, in parallel.

Test stands characterise several hexaboards at once, each on its own
hexacontroller. A board is a network file (or a seed of the embedded
emulator); its identity is in every key, so each board gets its own points,
its own dataset and its own analyses, and their outputs land in
`raff-out/<analysis>/<board>/`. Boards run in threads: their sessions wait on
sockets, and what they compute (decoding, analyses in worker processes)
releases the GIL. A board that fails stops only its own build; the others
finish, and the result says which board failed and why.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field

from raffinerie.builder.acquire import Stop
from raffinerie.builder.executor import BuildReport, Builder
from raffinerie.builder.interrupt import Abort, Interrupted, aborted
from raffinerie.config.network import Board
from raffinerie.errors import RaffError


@dataclass
class BoardResult:
    board: Board
    report: BuildReport | None = None
    error: RaffError | None = None
    interrupted: bool = False


@dataclass
class MultiReport:
    results: list[BoardResult] = field(default_factory=list)

    @property
    def failed(self) -> list[BoardResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def exit_code(self) -> int:
        codes = [r.error.exit_code for r in self.failed]
        return max(codes) if codes else 0


def build_boards(name: str | list[str], found: list[Board], make_builder) -> MultiReport:
    """Build `name` (or several names) on every board at once; `make_builder(board)` gives each
    its Builder."""
    builders = [make_builder(board) for board in found]
    stop = _SharedStop([b.stop for b in builders])
    previous = {sig: signal.signal(sig, stop.interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    report = MultiReport([BoardResult(board) for board in found])
    threads = [threading.Thread(target=_run, args=(builder, name, result), name=f"board-{board.label}",
                                daemon=True)
               for builder, board, result in zip(builders, found, report.results)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)  # joins in slices, so that Ctrl-C reaches the handler
    except KeyboardInterrupt as exc:  # a second Ctrl-C or SIGTERM: the analyses in flight stop too
        for builder in builders:
            if builder.runner is not None:
                builder.runner.kill()
        raise aborted(name if isinstance(name, list) else [name], None, exc) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if any(r.interrupted for r in report.results) and not report.failed:
        raise Interrupted("interrupted", f"the points acquired on {len(found)} boards are kept",
                          [name] if isinstance(name, str) else name, stop.signal)
    return report


def _run(builder: Builder, name: str | list[str], result: BoardResult) -> None:
    try:
        result.report = builder.build(name, signals=False)
    except Interrupted:
        result.interrupted = True
    except RaffError as exc:
        result.error = exc
    except Exception as exc:  # noqa: BLE001 - one board's bug must not hide the others' results
        result.error = RaffError(f"{type(exc).__name__}: {exc}")


class _SharedStop:
    """Ctrl-C or SIGTERM stops every board after its points in flight; a second one aborts."""

    def __init__(self, stops: list[Stop]):
        self.stops = stops
        self.signal = signal.SIGINT

    def interrupt(self, signum, _frame) -> None:
        if self.stops[0]:
            raise Abort(signum)
        self.signal = signum
        for stop in self.stops:
            stop.signal = signum
            stop.event.set()
