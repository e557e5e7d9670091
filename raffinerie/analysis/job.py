"""One analysis job, as a worker process runs it: a distillery, its dataset, its checked outputs.

What runs here runs in a worker (see `raffinerie.analysis.workers`), never in
raff: its result is data the parent can unpickle, one of `JobResult`: the
declared `Outputs`, a `JobFailed` message, or a `DamagedDataset` (the
dataset could not be read; the parent checks and quarantines it).
"""

from __future__ import annotations

import os
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from raffinerie.analysis.code import Source
from raffinerie.analysis.workers import end_leftovers
from raffinerie.errors import RaffError
from raffinerie.store.dataset import Dataset
from raffinerie.store.layout import MANIFEST

CALIBRATION = "calibration.yaml"
NOTES = "notes.txt"   # lines an analysis wants people to read (flagged points, choices it made)


class OutputDir(str):
    """The output folder: a string (os.path.join, +) that also does `/` like a Path."""

    def __truediv__(self, other) -> Path:
        return Path(self) / other


@dataclass
class Job:
    analysis: str
    source: Source
    parameters: dict
    dataset: Path          # the dataset's Zarr folder (data.zarr)
    dataset_key: str       # its key in the cache
    output: Path           # an empty folder for the outputs
    # (name, overlay) of each calibration the dataset's points stood on, in the order applied:
    # given to a distillery that sets `reads_calibrations` (builtin.tuned_config), as its
    # `applied_calibrations`. The dataset's key covers them (they are in its points' keys).
    calibrations: tuple[tuple[str, dict], ...] = ()
    # (name, summary table as written, None if it writes none) of each analysis it `uses`, in
    # the library's order, checked against their manifests: the distillery's `upstream`
    used: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True)
class Outputs:
    """What the distillery declared, by their names in the entry."""

    summary: str | None
    plots: tuple[str, ...]
    calibration: str | None

    def as_dict(self) -> dict:
        """As the analysis's meta.json records them."""
        return {"summary": self.summary, "plots": list(self.plots), "calibration": self.calibration}

    def names(self) -> list[str]:
        return [n for n in (self.summary, self.calibration, *self.plots) if n]


@dataclass(frozen=True)
class JobFailed:
    """The analysis failed: what to tell the user."""

    message: str


@dataclass(frozen=True)
class DamagedDataset:
    """A worker could not read the dataset: the parent quarantines it."""

    problem: str


JobResult = Outputs | JobFailed | DamagedDataset


def run_job(job: Job) -> JobResult:
    """Run one distillery (picklable in, picklable out).

    What the distillery started and left running (its process group, see
    `raffinerie.analysis.workers.worker_init`) ends with it."""
    try:
        return _run_job(job)
    finally:
        end_leftovers()


def _run_job(job: Job) -> JobResult:
    try:
        from raffinerie.analysis.loader import load_class

        cls = load_class(job.source, job.analysis)
        form = getattr(cls, "dataset_form", "pandas")
        if form not in FORMS:
            raise RaffError(f"analysis '{job.analysis}': dataset_form is {form!r}; it must be one of "
                            f"{', '.join(map(repr, FORMS))}", file=job.source.file)
        distillery = _call(job, "__init__", lambda: cls(dict(job.parameters)))
        if getattr(cls, "reads_calibrations", False):
            distillery.applied_calibrations = [(name, dict(overlay)) for name, overlay in job.calibrations]
        if job.used:
            distillery.upstream = _upstream(job)
        try:
            dataset = Dataset(job.dataset)
        except Exception as exc:  # noqa: BLE001 - any failure to read it is damage
            return _damaged(exc)
        columns = _wanted(job, distillery, dataset)
        try:
            data = _form(dataset, form, columns)
        except Exception as exc:  # noqa: BLE001 - any failure to read it is damage
            return _damaged(exc)
        declared = _declared(job, _call(job, "output", distillery.output))
        _call(job, "run", lambda: distillery.run(data, OutputDir(job.output)))
        return _check_outputs(job, declared)
    except RaffError as exc:
        return JobFailed(str(exc))


FORMS = ("pandas", "xarray", "dask", "dataset")


def _wanted(job: Job, distillery, dataset: Dataset) -> list[str] | None:
    """The columns the distillery asks for (`dataset_columns`), checked; None for all."""
    wanted = getattr(distillery, "dataset_columns", None)
    if callable(wanted):
        wanted = _call(job, "dataset_columns", lambda: wanted(dataset))
    if wanted is None:
        return None
    if isinstance(wanted, str) or not all(isinstance(c, str) for c in wanted):
        raise RaffError(f"analysis '{job.analysis}': dataset_columns must be a list of column names",
                        file=job.source.file)
    missing = [c for c in wanted if c not in dataset.dims]
    if missing:
        raise RaffError(f"analysis '{job.analysis}' asks for column {', '.join(map(repr, missing))}, which "
                        f"the dataset does not have; it has: {', '.join(dataset.columns)}",
                        file=job.source.file)
    return list(dict.fromkeys(wanted))


def _form(dataset: Dataset, form: str, columns: list[str] | None):
    if form == "pandas":
        return dataset.to_pandas(columns)
    if form == "dask":
        return dataset.to_dask(columns)
    if form == "xarray":
        data = dataset.to_xarray()
        return data if columns is None else data[[c for c in columns if c in data.data_vars]]
    return dataset


def _damaged(exc: BaseException) -> DamagedDataset:
    return DamagedDataset(" ".join(f"unreadable: {exc}".split())[:200])


def _declared(job: Job, declared) -> dict:
    """What `output()` returned, checked: a mapping of path strings (or None)."""
    if declared is None:
        return {}
    problem = None
    if not isinstance(declared, dict):
        problem = f"returned a {type(declared).__name__}"
    elif not isinstance(declared.get("plots") or [], (list, tuple)):
        problem = f"'plots' is a {type(declared['plots']).__name__}, not a list"
    else:
        paths = [declared.get("summary"), declared.get("calibration"), *(declared.get("plots") or [])]
        bad = [p for p in paths if p is not None and not isinstance(p, (str, os.PathLike))]
        if bad:
            problem = f"names {bad[0]!r}, which is not a path"
    if problem:
        raise RaffError(f"analysis '{job.analysis}': output() {problem}; it must return a mapping "
                        "{'summary': path, 'plots': [paths], 'calibration': path or None}",
                        file=job.source.file)
    return declared


def _call(job: Job, what: str, fn):
    try:
        return fn()
    except RaffError:
        raise
    except SystemExit as exc:  # sys.exit() in a distillery ends the analysis, not raff
        raise RaffError(f"analysis '{job.analysis}' called sys.exit({exc.code!r}) in {what}(); an "
                        "analysis must return (or raise an exception) instead", file=job.source.file) from None
    except Exception as exc:
        frame = _user_frame(exc, job.source)
        raise RaffError(f"analysis '{job.analysis}' failed in {what}(): {type(exc).__name__}: {exc}"
                        + (f" (at {frame})" if frame else ""), file=job.source.file) from None


def _user_frame(exc: BaseException, source: Source) -> str | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename.startswith(str(source.root))]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def _check_outputs(job: Job, declared: dict) -> Outputs:
    """The declared outputs, by their names in the entry; each one written, none on a reserved name.

    A declared file inside the output folder keeps its path there (`chip0/gain.png` and
    `chip1/gain.png` are two plots, not one); one outside it is copied in under its
    file name, and refused if that name is taken.
    """
    out: dict = {"summary": None, "plots": [], "calibration": None}
    wanted = [("summary", declared.get("summary"))] + [("plots", p) for p in declared.get("plots") or []] \
        + [("calibration", declared.get("calibration"))]
    _check_reserved(job, [item.name for item in Path(job.output).iterdir()])
    for kind, path in wanted:
        if not path:
            continue
        name = _entry_name(job, kind, path)
        _check_reserved(job, [name])
        if kind == "plots":
            out["plots"].append(name)
        else:
            out[kind] = name
    if out["calibration"] not in (None, CALIBRATION) and (job.output / CALIBRATION).exists():
        raise RaffError(f"analysis '{job.analysis}' writes {CALIBRATION} but declares its calibration as "
                        f"{out['calibration']}; the cache stores the declared one as {CALIBRATION}, so one "
                        "of them would be lost: declare the one it writes", file=job.source.file)
    return Outputs(out["summary"], tuple(out["plots"]), out["calibration"])


# The files every analysis entry has, written by raff: a distillery's file of the same name would be
# replaced (meta.json, written by `_commit`) or break the entry (store.layout.MANIFEST, which the store
# writes over it and which `raff cache verify` then finds listed in itself). Refused, not renamed: a
# distillery that wrote them never made an entry that verified, and the layout of every existing
# entry (outputs at its top, read by `raff report`, the planner and raff-out/) stays as it is.
META = "meta.json"
RESERVED = (MANIFEST, META)


def _check_reserved(job: Job, names: list[str]) -> None:
    for name in names:
        parts = PurePosixPath(name).parts
        if parts and (parts[-1] == MANIFEST or (len(parts) == 1 and parts[0] in RESERVED)):
            raise RaffError(f"analysis '{job.analysis}' writes {name} in its output folder, a name the cache "
                            f"reserves for its own records ({', '.join(RESERVED)}); name it otherwise",
                            file=job.source.file)


def _entry_name(job: Job, kind: str, path) -> str:
    """Where the declared `path` is kept in the entry: its path under the output folder, or (a file
    outside it, copied in) its file name."""
    folder = os.path.abspath(job.output)
    full = os.path.abspath(os.path.join(folder, os.fspath(path)))  # normalised; an absolute path stays
    if not os.path.isfile(full):
        raise RaffError(f"analysis '{job.analysis}' declared {kind} output {path} but did not write it",
                        file=job.source.file)
    inside = os.path.relpath(full, folder)
    if not inside.startswith(os.pardir + os.sep) and inside != os.pardir:
        return PurePosixPath(*Path(inside).parts).as_posix()
    name = os.path.basename(full)
    if os.path.lexists(os.path.join(folder, name)):
        raise RaffError(f"analysis '{job.analysis}' declared {kind} output {path}, outside its output folder, "
                        f"and its output folder already has a {name}: one would replace the other; write "
                        "it in the output folder instead", file=job.source.file)
    shutil.copy(full, os.path.join(folder, name))  # keep everything inside the entry
    return name


def _upstream(job: Job) -> dict:
    """name -> DataFrame of each used analysis's summary (None where it writes none)."""
    import io

    import pandas as pd

    return {name: None if table is None else pd.read_csv(io.BytesIO(table)) for name, table in job.used}
