"""What a run's file gives `raff import`: a raw run decoded, or hexactrl's runsummary of a run
whose raw file is gone, in the one shape the importer commits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raffinerie.config.daqconfig import daq_setting
from raffinerie.daq import rootio
from raffinerie.daq.runs import decode_run, read_raw
from raffinerie.errors import RaffError


@dataclass(frozen=True)
class Taken:
    """What a run's file gives: its bytes (for the identity), the summary, what decoding found."""

    data: bytes                          # the file's bytes
    raw: bytes                           # the raw data kept in the cache: none for a ROOT summary
    summary: dict
    n_events: int
    corrupt_halves: int | None = None    # None: a ROOT summary does not say
    corruption: list | None = None


def decoded_run(path: Path, modes, chips: int) -> Taken:
    """A raw run, decoded (RawFormatError for damaged bytes)."""
    data = read_raw(path)
    d = decode_run(data, path, modes, chips)
    return Taken(data, data, d.summary(), d.n_events, d.corrupt_halves, d.corruption_report())


def summary_run(path: Path, daq: dict | None, chips: int) -> Taken:
    """A run of which only hexactrl's runsummary is left: its table, and the events its yaml
    asked for (the summary does not count them; a yaml without NEvents leaves the run out)."""
    events = daq_setting(daq or {}, "NEvents")
    if isinstance(events, bool) or not isinstance(events, int) or events < 1:
        raise RaffError(f"no NEvents in {path.with_suffix('.yaml').name}: a ROOT summary does not say "
                        "how many events it averages")
    table = rootio.summary_as_decoded(rootio.read_root_summary(path), events, path)
    found = int(table["chip"].max()) + 1 if len(table["chip"]) else 0
    if found != chips:
        raise RaffError(f"its summary has {found} chips, NChips of its yaml {chips} (3 when it says none)")
    return Taken(path.read_bytes(), b"", table, events)
