"""The metadata records of cache entries (their `meta.json`): one builder for each kind.

A measurement is written by `raff build` (acquired) and by `raff import`
(imported), a dataset by the executor (in process or on a dask worker), an
analysis by the runner; each writer calls the builder here, so the records of
one kind have the same fields whoever wrote them.

Every record carries `format`: a reader refuses one written in a newer format
(`check_format`), and takes one without the field for format 1, the records
written before the field existed. The store adds `key` and `raffinerie` (its
version) when it writes the file. Records are not part of any key.

Pure (no numpy): `raff plan` and `validate` may read records.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, fields, replace

from raffinerie.errors import RaffError

FORMAT = 1             # bump when a field of a record changes meaning or goes away
FORMAT_FIELD = "format"


class RecordKind(enum.StrEnum):
    MEASUREMENT = "measurement"
    DATASET = "dataset"
    ANALYSIS = "analysis"


class DatasetLayout(enum.StrEnum):
    """How a dataset's table is stored (written to data.zarr's attributes and to meta.json)."""

    ROWS = "rows"     # one row per row of the measurements: any set of points
    GRID = "grid"     # points x readout slots: every measurement has the same slots


def check_format(doc: dict, where, what: str = "its record (meta.json)", newest: int = FORMAT) -> dict:
    """`doc`, if this raffinerie reads its format (`newest` and older; none is format 1); an
    error naming `where` for a newer one (update raffinerie) or one that is no version at all.
    Entry records and build records (store.records) are both checked here."""
    version = doc.get(FORMAT_FIELD, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RaffError(f"{what} has format {version!r}, which is not a format version", file=where)
    if version > newest:
        raise RaffError(f"{what} of a newer raffinerie (format {version}; this one reads format "
                        f"{newest} and older): update raffinerie", file=where)
    return doc


def _record(kind: RecordKind, fields_: dict) -> dict:
    return {"kind": str(kind), FORMAT_FIELD: FORMAT, **fields_}


@dataclass(frozen=True)
class MeasurementRecord:
    """The record of one measurement: what was asked for, then what the decoder found.

    Acquired points carry `target_diff` (their target config against the
    power-on default), imported runs `imported_from` (the raw file); `with_run`
    adds what decoding the run found.
    """

    procedure: str
    index: int
    identity: str
    mode: str
    repeat: int
    coordinates: dict
    daq: dict
    start: float
    end: float
    raw_bytes: int
    target_diff: dict | None = None
    imported_from: str | None = None
    events: int | None = None
    corrupt_halves: int | None = None
    corruption: list | None = None

    def with_run(self, events: int, corrupt_halves: int, corruption: list) -> MeasurementRecord:
        return replace(self, events=events, corrupt_halves=corrupt_halves, corruption=corruption)

    def meta(self) -> dict:
        """The record as written to meta.json (optional fields only when set)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        optional = ("target_diff", "imported_from", "events", "corrupt_halves", "corruption")
        return _record(RecordKind.MEASUREMENT,
                       {k: v for k, v in values.items() if k not in optional or v is not None})


def dataset_record(procedure: str, point_keys: list[str], axes: list[str], board: str | None = None,
                   take: int = 0) -> dict:
    """What a dataset is made of: its points (by key), its axes, its board and take.

    `board` is the dataset's constant board column (None when data_columns
    leaves it out); `take` the newest take of its points (`--force-acquire`).
    """
    out = _record(RecordKind.DATASET, {"procedure": procedure, "points": len(point_keys),
                                       "point_keys": list(point_keys), "axes": list(axes)})
    if board is not None:
        out["board"] = board
    if take:
        out["take"] = take
    return out


def dataset_shape(layout: DatasetLayout, rows: int, columns: list[str], points: int) -> dict:
    """The table a dataset writer made; the store joins it to the dataset's record."""
    return {"layout": str(layout), "rows": rows, "columns": list(columns), "points": points}


def analysis_record(procedure: str, inputs: dict, outputs: dict, seconds: float,
                    when: float | None = None) -> dict:
    """What an analysis ran on (`inputs`), what it wrote (`outputs`), how long it took."""
    return _record(RecordKind.ANALYSIS, {"procedure": procedure, "inputs": inputs, "outputs": outputs,
                                         "seconds": round(seconds, 3),
                                         "time": time.time() if when is None else when})


# -- the calibrations in a dataset's build record (names/datasets/<name>.json, its `inputs`) --

def calibration_record(calibrations: dict[str, str]) -> dict:
    """The calibrations a dataset's points stood on: `calibrations`, [name, analysis key] pairs in
    the order applied (a list: records are written with sorted keys); `calibration`, the one key
    of a single calibration, as records before lists had it, so an older raffinerie still reads it."""
    single = next(iter(calibrations.values())) if len(calibrations) == 1 else None
    return {"calibration": single, "calibrations": [[name, key] for name, key in calibrations.items()]}


def recorded_calibrations(inputs: dict) -> dict[str, str]:
    """name -> analysis key of the calibrations a dataset record's `inputs` name, in order."""
    pairs = inputs.get("calibrations")
    if not isinstance(pairs, list):
        return {}
    return {p[0]: p[1] for p in pairs
            if isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)}
