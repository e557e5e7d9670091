"""The content-addressed cache: measurements, datasets and analysis outputs.

Every entry is written under `tmp/` and renamed into
`<kind>/<key[:2]>/<key>/` in one step, so a reader never sees half an entry
and a crash leaves at most a stray folder in `tmp/`. Each entry has a
`manifest.json` with the size and SHA-256 of its files, which `verify`
checks. A per-key lock (`flock`, released by the kernel when a process
dies) keeps two processes from acquiring the same point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from raffinerie import __version__
from raffinerie.store import dataset, manifest, pointfile
from raffinerie.store.entries import READ_ERRORS, Damage, Entries, one_line
from raffinerie.store.files import EntryFormatError, json_default, write_json
from raffinerie.store.layout import KINDS
from raffinerie.store.locks import Locks
from raffinerie.records import check_format
from raffinerie.store.records import Records

# files of a measurement in the old folder layout checked on every read (small: the
# summary and the metadata; the raw bytes are checked by `raff cache verify`)
CHECKED = ("zarr.json", "summary/")


class Store(Entries, Records, Locks):
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- measurements -------------------------------------------------------------

    def put_measurement(self, key: bytes, summary: dict, raw: bytes, meta: dict,
                        events: dict | None = None, raw_compressed: bytes | None = None) -> bool:
        """Commit a measurement: one Zarr v3 zip (see `pointfile`) and its manifest.

        `summary` columns become the rows of one 2-D float64 array (names and
        dtypes in the attributes, so a point is one member, not one per
        column); `raw_compressed` is `pointfile.compress(raw)` if already done.
        """
        packed = raw_compressed if raw_compressed is not None else pointfile.compress(raw)
        names = list(summary)
        dtypes = [np.asarray(summary[n]).dtype.str for n in names]
        attributes = {"key": key.hex(), "raffinerie": __version__, **meta,
                      "summary_columns": names, "summary_dtypes": dtypes}
        table = np.vstack([np.asarray(summary[n], dtype=np.float64) for n in names])

        def write(folder: Path, digests: dict) -> None:
            path = folder / pointfile.FILE
            digests[str(path)] = pointfile.write(path, attributes, table, packed, len(raw), events,
                                                 (names, dtypes), default=json_default)
        committed = self.commit("measurements", key, write)
        if meta.get("identity"):
            self.remember_board(str(meta["identity"]))
        return committed

    def read_summary(self, key: bytes | str, columns: list[str] | None = None,
                     check: bool = False) -> dict[str, np.ndarray]:
        """The per-channel table; a damaged entry is quarantined (DamagedEntry).

        The zip's CRC-32 of the summary is checked on every read; `check`
        also compares the files of an entry in the old layout with its manifest.
        """
        with self.reading("measurements", key) as folder:
            if (folder / pointfile.FILE).is_file():
                names, dtypes, table = pointfile.read_summary(folder / pointfile.FILE)
            else:
                if check:
                    self.check_files("measurements", folder.name, CHECKED)
                attributes, table = _legacy_summary(folder)
                names, dtypes = attributes["summary_columns"], attributes["summary_dtypes"]
            wanted = set(columns) if columns is not None else None
            return {n: table[i].astype(dtypes[i]) for i, n in enumerate(names)
                    if wanted is None or n in wanted}

    def read_events(self, key: bytes | str, check: bool = False) -> dict[str, np.ndarray]:
        with self.reading("measurements", key) as folder:
            if (folder / pointfile.FILE).is_file():
                return pointfile.read_events(folder / pointfile.FILE)
            if check:
                self.check_files("measurements", folder.name, ("zarr.json", "events/"))
            group = _legacy_group(folder)
            return {name: array[...] for name, array in sorted(group["events"].arrays())}

    def read_raw(self, key: bytes | str) -> bytes:
        with self.reading("measurements", key) as folder:
            if (folder / pointfile.FILE).is_file():
                return pointfile.read_raw(folder / pointfile.FILE)
            return _legacy_group(folder)["raw"][...].tobytes()

    def meta(self, kind: str, key: bytes | str) -> dict:
        with self.reading(kind, key) as folder:
            if (folder / "meta.json").is_file():  # small: checked against the manifest on every read
                return check_format(json.loads(self.read_checked(kind, folder.name, "meta.json")),
                                    folder / "meta.json")
            if (folder / pointfile.FILE).is_file():
                return pointfile.read_attributes(folder / pointfile.FILE)
            return dict(_legacy_group(folder).attrs)

    # -- datasets -------------------------------------------------------------------

    def put_dataset(self, key: bytes, meta: dict, write: Callable[[Path], dict], replace: bool = False) -> dict:
        """Commit a dataset: `write(folder)` writes its Zarr folder and returns its shape
        ({layout, rows, columns, points}), which joins `meta` in `meta.json`."""
        shape: dict = {}

        def commit(folder: Path, digests: dict) -> None:
            shape.update(write(folder / dataset.FOLDER))
            write_json(folder / "meta.json", {"key": key.hex(), "raffinerie": __version__, **meta, **shape},
                        digests)
        self.commit("datasets", key, commit, replace)
        return shape

    def open_dataset(self, key: bytes | str) -> "dataset.Dataset":
        """The dataset (see `raffinerie.store.dataset`); a damaged one is quarantined."""
        with self.reading("datasets", key) as folder:
            if not (folder / dataset.FOLDER).is_dir():
                raise EntryFormatError(f"no {dataset.FOLDER} (a dataset of an older raffinerie)")
            return dataset.Dataset(folder / dataset.FOLDER)

    def read_dataset(self, key: bytes | str, columns: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every row of the dataset as numpy columns (the board, a constant, left out)."""
        with self.reading("datasets", key):
            data = self.open_dataset(key)
            names = columns if columns is not None else [c for c in data.columns if c != "board"]
            return data.to_columns(names)

    # -- maintenance ------------------------------------------------------------------

    def verify(self, quarantine: bool = True, step: Callable[[int], None] | None = None) -> list[Damage]:
        """Re-hash every entry; damaged ones move to `quarantine/` (never deleted).

        One entry at a time (memory does not grow with the cache); `step(done)` after each."""
        damaged = []
        done = 0
        for kind in KINDS:
            for key, path in self.entries(kind):
                done += 1
                if step is not None:
                    step(done)
                problem = manifest.problem(path)
                if problem is None and kind == "measurements":
                    problem = _check_tables(path)
                if problem:
                    damaged.append(Damage(kind, key, problem))
                    if quarantine:
                        self.quarantine(kind, key, problem)
        return damaged


def _check_tables(folder: Path) -> str | None:
    """Every array of a measurement read and decoded (the manifest was checked before)."""
    try:
        if (folder / pointfile.FILE).is_file():
            pointfile.check(folder / pointfile.FILE)
        else:
            _read_all(_legacy_group(folder))
    except READ_ERRORS as exc:
        return f"unreadable table: {one_line(exc)}"
    return None


def _read_all(group) -> None:
    for _, array in group.arrays():
        array[...]
    for _, sub in group.groups():
        _read_all(sub)


def _legacy_group(folder: Path):
    """An entry written before measurements were one zip (a plain Zarr v3 folder)."""
    import zarr

    return zarr.open_group(str(folder), mode="r")


def _legacy_summary(folder: Path) -> tuple[dict, np.ndarray]:
    group = _legacy_group(folder)
    return dict(group.attrs), group["summary"][...]
