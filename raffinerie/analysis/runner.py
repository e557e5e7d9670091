"""Running analyses: a dataset in, a distillery's outputs into the cache and raff-out/.

A distillery is the Datenraffinerie's interface: `__init__(parameters)`,
`output() -> {'summary': path, 'plots': [paths], 'calibration': path or None}`
and `run(data: DataFrame, output_dir)`. Paths from `output()` may be relative
to the output folder.

A distillery may say what it wants of the dataset with two class attributes
(see `raffinerie.store.dataset`): `dataset_columns`, a list of column names
or a method taking the `Dataset` and returning one (default: every column), and
`dataset_form`: "pandas" (the default: the DataFrame it always had),
"xarray" (scan axes as dimensions), "dask" (a lazy DataFrame, out of core)
or "dataset" (the `Dataset` itself, to read it block by block). `output_dir` is a `str` that also supports `/`, so
distilleries written for either strings or `pathlib` run unchanged.

Outputs are written to a temporary folder, checked against what `output()`
declared, committed to the cache under the analysis key, and copied to the
user-visible folder (raff-out/<procedure>/ by default).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import traceback
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from raffinerie.analysis.code import CodeIndex, Source, analysis_path_for, locate
from raffinerie.config.library import AnalysisProcedure, Library
from raffinerie.errors import RaffError
from raffinerie.graph.plan import Node, Plan, analysis_inputs
from raffinerie.store.dataset import Dataset
from raffinerie.store.store import DamagedEntry

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
    output: Path           # an empty folder for the outputs


def run_job(job: Job) -> dict | str:
    """Run one distillery; its declared outputs, or an error message (picklable)."""
    try:
        from raffinerie.analysis.loader import load_class

        cls = load_class(job.source, job.analysis)
        form = getattr(cls, "dataset_form", "pandas")
        if form not in FORMS:
            raise RaffError(f"analysis '{job.analysis}': dataset_form is {form!r}; it must be one of "
                            f"{', '.join(map(repr, FORMS))}", file=job.source.file)
        distillery = _call(job, "__init__", lambda: cls(dict(job.parameters)))
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
        return str(exc)


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


def _damaged(exc: BaseException) -> "DamagedDataset":
    return DamagedDataset(" ".join(f"unreadable: {exc}".split())[:200])


@dataclass
class DamagedDataset:
    """A worker could not read the dataset: the parent quarantines it."""

    problem: str


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


def _check_outputs(job: Job, declared: dict) -> dict:
    def resolve(path) -> Path:
        p = Path(path)
        return p if p.is_absolute() else job.output / p

    out = {"summary": None, "plots": [], "calibration": None}
    wanted = [("summary", declared.get("summary"))] + [("plots", p) for p in declared.get("plots") or []] \
        + [("calibration", declared.get("calibration"))]
    for kind, path in wanted:
        if not path:
            continue
        full = resolve(path)
        if not full.is_file():
            raise RaffError(f"analysis '{job.analysis}' declared {kind} output {path} but did not write it",
                            file=job.source.file)
        if full.parent != job.output:  # keep everything inside the entry
            shutil.copy(full, job.output / full.name)
        name = full.name
        if kind == "plots":
            out["plots"].append(name)
        else:
            out[kind] = name
    return out


class AnalysisRunner:
    def __init__(self, lib: Library, store, output_dir, analysis_path: Path | None, workers: int = 1,
                 say=None):
        self.lib, self.store, self.output_dir = lib, store, output_dir
        # where an analysis's notes go: the build output (stderr, beside the progress lines)
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.analysis_path = analysis_path_for(lib.main, analysis_path)
        self.index = CodeIndex(self.analysis_path)
        self.workers = max(1, int(workers or 1))
        self.pool: ProcessPoolExecutor | None = None
        self.cluster = None  # a raffinerie.builder.cluster.Cluster with --dask
        self.cluster_peaks: list[float] = []

    # -- keys ---------------------------------------------------------------------

    def source(self, proc: AnalysisProcedure) -> Source:
        return locate(proc.module, proc.name, self.analysis_path, proc.origin)

    def code(self, proc: AnalysisProcedure) -> dict[str, str]:
        return self.index.digests(self.source(proc))

    # -- running ------------------------------------------------------------------

    def job(self, plan: Plan, node: Node) -> tuple[Job, dict]:
        proc = self.lib.procedures[node.name]
        data_node = plan.nodes[node.depends_on[0]]
        folder = self.store.root / "tmp" / f"analysis-{node.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        job = Job(node.name, self.source(proc), proc.parameters,
                  self.store.dataset_folder(data_node.key), folder)
        return job, analysis_inputs(proc, data_node.key, self.code(proc))

    def submit(self, plan: Plan, node: Node) -> tuple[Future, Node, Job, dict, float]:
        """Run one analysis in a worker process.

        Always a worker, never raff itself: a distillery that calls os._exit,
        crashes the interpreter or leaves global state (matplotlib) behind
        cannot take the build with it. Workers ignore Ctrl-C; raff decides
        (finish what runs, or on a second Ctrl-C, `kill()` them).
        """
        if self.cluster is not None:
            job, inputs = self.job(plan, node)
            return self.cluster.submit(run_job, job), node, job, inputs, time.monotonic()
        if self.pool is None:
            import multiprocessing

            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init)
        job, inputs = self.job(plan, node)
        return self.pool.submit(run_job, job), node, job, inputs, time.monotonic()

    def broken(self, running: list[str]) -> str:
        """The message for a worker process that ended abruptly; a fresh pool for what follows."""
        self.kill()
        return (f"analysis {', '.join(repr(n) for n in running)}: the worker process ended abruptly "
                "(os._exit, a crash or out of memory) before the analysis returned")

    def kill(self) -> None:
        """Stop the workers now (a second Ctrl-C, or a broken pool)."""
        if self.cluster is not None:
            self.cluster.close()
        if self.pool is None:
            return
        for process in list(getattr(self.pool, "_processes", {}).values()):
            if process.is_alive():
                process.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None

    def finish(self, node: Node, job: Job, inputs: dict, result, t0: float) -> None:
        try:
            if isinstance(result, DamagedDataset):
                key = job.dataset.parent.name
                if self.store.check_entry("datasets", key) is None:  # its files are sound: not damage
                    raise RaffError(f"analysis '{node.name}': could not read its dataset: {result.problem}",
                                    file=job.dataset.parent)
                self.store.quarantine("datasets", key, result.problem)
                raise DamagedEntry("datasets", key, job.dataset.parent, result.problem)
            if isinstance(result, str):
                raise RaffError(result)
            self._commit(node, job, inputs, result, time.monotonic() - t0)
            self._tell(node, job)
        finally:
            shutil.rmtree(job.output, ignore_errors=True)
        self.materialise(node)

    def _tell(self, node: Node, job: Job) -> None:
        notes = job.output / NOTES
        if notes.is_file():
            for line in notes.read_text().splitlines():
                if line.strip():
                    self.say(f"{node.name}: {line}")

    def _commit(self, node: Node, job: Job, inputs: dict, outputs: dict, seconds: float) -> None:
        def write(folder: Path, digests: dict) -> None:
            for item in job.output.iterdir():
                if item.is_file():
                    shutil.copy(item, folder / item.name)
            if outputs["calibration"] and outputs["calibration"] != CALIBRATION:
                shutil.copy(job.output / outputs["calibration"], folder / CALIBRATION)
            meta = {"kind": "analysis", "procedure": node.name, "inputs": inputs, "outputs": outputs,
                    "seconds": round(seconds, 3), "time": time.time()}
            (folder / "meta.json").write_text(_json(meta))
        self.store.commit("analyses", bytes.fromhex(node.key), write)
        self.store.record("analyses", node.name, node.key, inputs)

    def materialise(self, node: Node) -> Path:
        """Copy the cached outputs of `node` to its user-visible folder."""
        source = self.store.require_sound("analyses", node.key)  # small files: hashed, a damaged entry quarantined
        target = Path(self.output_dir(node.name))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("manifest.json"))
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
        return target

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.cluster is not None:
            self.cluster_peaks = self.cluster.peak_memory()  # what each worker needed, for the summary
            self.cluster.close()


def _worker_init() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the build's Ctrl-C is raff's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _json(doc: dict) -> str:
    import json

    return json.dumps(doc, indent=1, sort_keys=True, default=str)
