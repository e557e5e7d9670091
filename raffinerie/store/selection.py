"""Which entries the last builds of some procedures used, found from their build records
(`names/<kind>/<name>.json`) and the entries' `meta.json`, locally or in a shared cache:
what `raff cache push/pull NAME...` copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from raffinerie.records import recorded_calibrations
from raffinerie.store.files import json_dict
from raffinerie.store.folderfs import read_plain_or_none
from raffinerie.store.layout import KINDS, entry_rel
from raffinerie.store.records import checked_record, record_rel

RECORD_KINDS = ("datasets", "analyses")  # the kinds whose build records name what a procedure made
MAX_RECORD_BYTES = 16 << 20   # names/*.json and meta.json, read to select entries (a few kB each)


@dataclass
class Selection:
    """Entry keys per kind (in order, each once) and the build records they came from."""

    keys: dict[str, list[str]]
    records: list[tuple[str, str]]   # (kind, name) of names/<kind>/<name>.json
    unknown: list[str]               # names with no recorded build

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.keys.values())


def select(names: Iterable[str], record: Callable[[str, str], dict | None],
           meta: Callable[[str, str], dict | None]) -> Selection:
    """The entries the last builds of `names` used: for a daq procedure its dataset and
    measurements (the dataset's `point_keys`), for an analysis its output and its dataset,
    and the calibration a dataset was built with, with everything that one used.

    `record(kind, name)` reads names/<kind>/<name>.json and `meta(kind, key)` an
    entry's meta.json, locally or remotely.
    """
    keys: dict[str, dict[str, None]] = {kind: {} for kind in KINDS}
    records: dict[tuple[str, str], None] = {}
    unknown = []

    def dataset(key: str, name: str | None) -> None:
        if key in keys["datasets"]:
            return
        keys["datasets"][key] = None
        doc = meta("datasets", key) or {}
        for point in doc.get("point_keys") or []:
            if isinstance(point, str):
                keys["measurements"][point] = None
        proc = doc.get("procedure") or name
        rec = record("datasets", proc) if isinstance(proc, str) else None
        if rec and rec.get("key") == key:
            records[("datasets", proc)] = None
            inputs = rec.get("inputs") or {}
            keys_used = list(recorded_calibrations(inputs).values()) or [inputs.get("calibration")]
            for calibration in keys_used:
                if isinstance(calibration, str):
                    analysis(calibration, None)

    def analysis(key: str, name: str | None) -> None:
        if key in keys["analyses"]:
            return
        keys["analyses"][key] = None
        doc = meta("analyses", key) or {}
        inputs = doc.get("inputs") or {}
        if isinstance(inputs.get("dataset"), str):
            dataset(inputs["dataset"], None)
        uses = inputs.get("uses")
        for used_name, used in (uses.items() if isinstance(uses, dict) else ()):  # the analyses it read
            if isinstance(used, str):
                analysis(used, used_name)
        proc = doc.get("procedure") or name
        rec = record("analyses", proc) if isinstance(proc, str) else None
        if rec and rec.get("key") == key:
            records[("analyses", proc)] = None

    for name in names:
        found = False
        for kind, follow in zip(RECORD_KINDS, (dataset, analysis)):
            rec = record(kind, name)
            if rec and isinstance(rec.get("key"), str):
                records[(kind, name)] = None
                follow(rec["key"], name)
                found = True
        if not found:
            unknown.append(name)
    return Selection({kind: list(v) for kind, v in keys.items()}, list(records), unknown)


def local_record(root: Path, kind: str, name: str) -> dict | None:
    doc = json_dict(read_plain_or_none(Path(root), record_rel(kind, name), MAX_RECORD_BYTES))
    return checked_record(doc, Path(root) / record_rel(kind, name)) if doc is not None else None


def local_meta(store, kind: str, key: str) -> dict | None:
    return json_dict(read_plain_or_none(Path(store.root), f"{entry_rel(kind, key)}/meta.json", MAX_RECORD_BYTES))
