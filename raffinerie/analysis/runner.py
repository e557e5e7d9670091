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
user-visible folder (raff-out/<procedure>/ by default). The entry keeps the
folder's top-level files and every declared output at its path in the folder
(`chip0/gain.png` and `chip1/gain.png` are two files); `manifest.json` and
`meta.json` are the cache's own and refused. Each worker leads a process group:
what a distillery starts and leaves running ends with its job, and with raff.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import sys
import time
import traceback
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from raffinerie.analysis.code import CodeIndex, Source, analysis_path_for, locate
from raffinerie.config.library import AnalysisProcedure, Library
from raffinerie.errors import RaffError
from raffinerie.graph.plan import Node, Plan, analysis_inputs
from raffinerie.store.dataset import Dataset
from raffinerie.lifetime import die_with_parent
from raffinerie.store.files import process_alive
from raffinerie.store.layout import MANIFEST
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
    """Run one distillery; its declared outputs, or an error message (picklable).

    What the distillery started and left running (its process group, see `_worker_init`)
    ends with it."""
    try:
        return _run_job(job)
    finally:
        end_leftovers()


def _run_job(job: Job) -> dict | str:
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
    """The declared outputs, by their names in the entry; each one written, none on a reserved name.

    A declared file inside the output folder keeps its path there (`chip0/gain.png` and
    `chip1/gain.png` are two plots, not one); one outside it is copied in under its
    file name, and refused if that name is taken.
    """
    out = {"summary": None, "plots": [], "calibration": None}
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
    return out


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
        self.worker_pids: set[int] = set()  # every worker started (each leads a process group)
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
        (finish what runs, or on a second Ctrl-C, `kill()` them). Each worker
        leads its own process group, which raff ends with it, and ends itself
        and its group when raff is gone (see `_worker_init`).
        """
        if self.cluster is not None:
            job, inputs = self.job(plan, node)
            return self.cluster.submit(run_job, job), node, job, inputs, time.monotonic()
        if self.pool is None:
            import multiprocessing

            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init, initargs=(os.getpid(),))
        job, inputs = self.job(plan, node)
        future = self.pool.submit(run_job, job)
        self.worker_pids.update(getattr(self.pool, "_processes", None) or {})  # started by submit
        return future, node, job, inputs, time.monotonic()

    def broken(self, running: list[str]) -> str:
        """The message for a worker process that ended abruptly; a fresh pool for what follows."""
        self.kill()
        return (f"analysis {', '.join(repr(n) for n in running)}: the worker process ended abruptly "
                "(os._exit, a crash or out of memory) before the analysis returned")

    def kill(self) -> None:
        """Stop the workers and whatever they started, now (a second Ctrl-C, or a broken pool)."""
        if self.cluster is not None:
            self.cluster.close()
        if self.pool is None:
            return
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            if process.is_alive():
                process.kill()  # itself: one just started may not lead its group yet, and killpg miss it
        self._end_groups()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None
        self.worker_pids.clear()  # gone: a pid is not ours once its group has ended

    def _end_groups(self) -> None:
        """SIGKILL to the process group of every worker this runner started: the workers (if
        alive) and what their distilleries left behind, e.g. after os._exit."""
        for pid in sorted(self.worker_pids):
            end_group(pid)

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
            for name in _stored(job.output, outputs):
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(job.output / name, folder / name)
            if outputs["calibration"] and outputs["calibration"] != CALIBRATION:
                shutil.copy(job.output / outputs["calibration"], folder / CALIBRATION)
            meta = {"kind": "analysis", "procedure": node.name, "inputs": inputs, "outputs": outputs,
                    "seconds": round(seconds, 3), "time": time.time()}
            (folder / META).write_text(_json(meta))
        try:
            self.store.commit("analyses", bytes.fromhex(node.key), write)
        except OSError as exc:  # the cache's disk: full, read-only, ... (the store removed its temporary)
            raise RaffError(f"cannot store the outputs of analysis '{node.name}': {os_problem(exc)}",
                            file=self.store.root) from None
        self.store.record("analyses", node.name, node.key, inputs)

    def materialise(self, node: Node) -> Path:
        """Copy the cached outputs of `node` to its user-visible folder, replacing it in one rename.

        The copy is made beside it under a temporary name, removed whatever fails (a full disk
        must not fill up further with every attempt), as are those a killed raff left.
        """
        source = self.store.require_sound("analyses", node.key)  # small files: hashed, a damaged entry quarantined
        target = Path(self.output_dir(node.name))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(target)
            shutil.rmtree(tmp, ignore_errors=True)
            for skipped in _copy_entry(source, tmp):
                self.say(f"warning: {source / skipped}: not a regular file; not copied to {target}")
            _replace(tmp, target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RaffError(f"cannot write the outputs of analysis '{node.name}': {os_problem(exc)}",
                            file=target) from None
        return target

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self._end_groups()  # each worker ended its leftovers after each job (Linux); the net for the rest
        self.worker_pids.clear()
        if self.cluster is not None:
            self.cluster_peaks = self.cluster.peak_memory()  # what each worker needed, for the summary
            self.cluster.close()


def _worker_init(parent: int | None = None) -> None:
    """A worker: its own process group, which it ends when raff is gone.

    Ctrl-C at the terminal reaches raff only (the worker's group is not the
    terminal's); raff decides. What a distillery starts (subprocesses and their
    children) joins the worker's group, unless it makes a session of its own,
    so `end_group` ends it all. If raff dies without stopping the worker
    (kill -9), Linux sends the worker SIGTERM (PR_SET_PDEATHSIG) and a watchdog
    thread sees the parent change (for a distillery that handles SIGTERM, or
    where prctl is missing); either way the worker ends its group and itself.
    multiprocessing's resource tracker then sees its pipe close and ends too.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the build's Ctrl-C is raff's to handle
    global _LEADS_GROUP
    try:
        os.setpgid(0, 0)
        _LEADS_GROUP = True
    except OSError:  # not permitted (a session leader): stays in raff's group, which raff ends
        pass
    signal.signal(signal.SIGTERM, lambda *_: end_group(os.getpid()))
    if parent is None:
        return
    if not die_with_parent(signal.SIGTERM, parent):  # raff died before the request was made
        end_group(os.getpid())
    import threading

    threading.Thread(target=_watch_parent, args=(parent,), name="raff-parent-watch", daemon=True).start()


_LEADS_GROUP = False  # this process is a worker that `_worker_init` made a group leader
PARENT_POLL = 0.5  # seconds between the watchdog's looks at the parent: cheap, and a prompt end


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    end_group(os.getpid())


def end_group(pgid: int) -> None:
    """SIGKILL to the process group `pgid` (a worker's, led by it): nothing of it outlives raff.
    Called by a worker on itself, it ends there."""
    import signal

    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # already gone (or not a group: nothing of ours)
        pass
    if pgid == os.getpid():  # not a group leader after all: at least this worker ends
        os._exit(1)


def end_leftovers() -> None:
    """In a worker after a job: end the processes its distillery left running in the worker's group
    (all but the worker). Linux only (/proc); elsewhere raff ends the group when it closes the pool."""
    import signal

    me = os.getpid()
    if not _LEADS_GROUP or os.getpgrp() != me or not os.path.isdir("/proc"):
        return  # not a worker of ours (a dask worker's group is not ours to end)
    for pid in _group_members(me):
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _group_members(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after the command, which may hold spaces
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid:  # state, ppid, pgrp (proc(5))
            out.append(int(entry))
    return out


def _stored(output: Path, outputs: dict) -> list[str]:
    """What an entry keeps of the output folder: its top-level files and the declared outputs."""
    names = [item.name for item in Path(output).iterdir() if item.is_file()]
    declared = [outputs["summary"], outputs["calibration"], *outputs["plots"]]
    return list(dict.fromkeys(names + [n for n in declared if n]))


def _copy_entry(source: Path, target: Path) -> list[str]:
    """Copy the regular files of an entry (not its manifest) to the new folder `target`; the names
    of what it holds besides (links, devices: never followed), which are left out."""
    skipped = []
    target.mkdir()
    for root, dirs, files in os.walk(source):
        rel = os.path.relpath(root, source)
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):  # os.walk does not enter it; say so
                skipped.append(os.path.normpath(os.path.join(rel, name)))
            else:
                os.mkdir(os.path.join(target, rel, name))
        for name in files:
            path = os.path.join(root, name)
            if name == MANIFEST:
                continue
            if not stat.S_ISREG(os.lstat(path).st_mode):
                skipped.append(os.path.normpath(os.path.join(rel, name)))
                continue
            shutil.copy2(path, os.path.join(target, rel, name))
    return skipped


def _replace(new: Path, target: Path) -> None:
    """Put the folder `new` at `target`: the old one is renamed aside, not removed, until `new` is in."""
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old, target)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.unlink(old)


def _remove_stale(target: Path) -> None:
    """The temporary folders of `target` that raffs no longer running left (killed mid-copy)."""
    for path in target.parent.glob(f".{glob.escape(target.name)}.*"):
        pid = path.name[len(target.name) + 2:].rsplit(".", 1)[0]
        if path.suffix in (".tmp", ".old") and pid.isdigit() and int(pid) != os.getpid() \
                and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def os_problem(exc: OSError) -> str:
    """'no space left on device': what an OSError says, without its errno and paths (the caller
    names the place)."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _json(doc: dict) -> str:
    import json

    return json.dumps(doc, indent=1, sort_keys=True, default=str)
