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
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from raffinerie.analysis.code import CodeIndex, Source, analysis_path_for, locate
from raffinerie.analysis.job import (CALIBRATION, META, NOTES, DamagedDataset, Job, JobFailed, JobResult, Outputs,
                                     run_job)
from raffinerie.analysis.workers import end_group, worker_init
from raffinerie.config.library import AnalysisProcedure, Library
from raffinerie.errors import RaffError
from raffinerie.graph.keying import analysis_inputs
from raffinerie.graph.nodes import Node
from raffinerie.graph.plan import Plan
from raffinerie.records import analysis_record
from raffinerie.store.files import process_alive
from raffinerie.store.entries import DamagedEntry
from raffinerie.store.layout import MANIFEST, CacheIndex


@dataclass
class Submitted:
    """An analysis running in a worker: what `AnalysisRunner.finish` needs of it when it is done."""

    future: Future
    node: Node
    job: Job
    inputs: dict        # what its key hashes, for the build record
    started: float      # time.monotonic() at submission


PROVENANCE = "raff-out.json"  # in each output folder: whose outputs they are (raffinerie.builder.outputs)


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
        """The job of analysis `node`, in a fresh output folder, and what its key hashes."""
        proc = self.lib.procedures[node.name]
        data_node = plan.nodes[node.depends_on[0]]
        folder = self.store.root / "tmp" / f"analysis-{node.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        used = [plan.nodes[d] for d in node.depends_on[1:]]
        job = Job(node.name, self.source(proc), proc.parameters,
                  self.store.dataset_folder(data_node.key), data_node.key, folder,
                  self._calibrations(plan, data_node), tuple((u.name, self._summary(node, u)) for u in used))
        return job, analysis_inputs(proc, data_node.key, self.code(proc), {u.name: u.key for u in used})

    def _summary(self, node: Node, used: Node) -> bytes | None:
        """The summary table of analysis `used` (None if it writes none), checked against its
        entry's manifest. A damaged entry is never read: it goes to quarantine/."""
        try:
            summary = (self.store.meta("analyses", used.key).get("outputs") or {}).get("summary")
            return self.store.read_checked("analyses", used.key, summary) if summary else None
        except DamagedEntry as exc:
            raise RaffError(f"analysis '{node.name}' uses '{used.name}', whose cache entry is damaged "
                            f"({exc.problem}): it is in quarantine/ now; build again to make it anew",
                            file=self.store.path("analyses", used.key)) from None

    def _calibrations(self, plan: Plan, data_node: Node) -> tuple[tuple[str, dict], ...]:
        """The overlays of the calibrations the dataset's points stood on, checked against their
        manifests (as the plan checked them before laying them over the points)."""
        points_node = plan.nodes.get(data_node.depends_on[0]) if data_node.depends_on else None
        if points_node is None or not points_node.depends_on:
            return ()
        index = CacheIndex(self.store.root)
        return tuple((plan.nodes[d].name, index.calibration(bytes.fromhex(plan.nodes[d].key)) or {})
                     for d in points_node.depends_on)

    def submit(self, plan: Plan, node: Node) -> Submitted:
        """Run one analysis in a worker process.

        Always a worker, never raff itself: a distillery that calls os._exit,
        crashes the interpreter or leaves global state (matplotlib) behind
        cannot take the build with it. Workers ignore Ctrl-C; raff decides
        (finish what runs, or on a second Ctrl-C, `kill()` them). Each worker
        leads its own process group, which raff ends with it, and ends itself
        and its group when raff is gone (see `raffinerie.analysis.workers`).
        """
        if self.cluster is not None:
            job, inputs = self.job(plan, node)
            return Submitted(self.cluster.submit(run_job, job), node, job, inputs, time.monotonic())
        if self.pool is None:
            import multiprocessing

            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=worker_init, initargs=(os.getpid(),))
        job, inputs = self.job(plan, node)
        future = self.pool.submit(run_job, job)
        self.worker_pids.update(getattr(self.pool, "_processes", None) or {})  # started by submit
        return Submitted(future, node, job, inputs, time.monotonic())

    def broken(self, running: list[str]) -> JobFailed:
        """The failure of a worker process that ended abruptly; a fresh pool for what follows."""
        self.kill()
        return JobFailed(f"analysis {', '.join(repr(n) for n in running)}: the worker process ended abruptly "
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

    def finish(self, submitted: Submitted, result: JobResult) -> None:
        """Commit what a finished job made, tell its notes and materialise it; raises RaffError for a
        failed job, DamagedEntry for a dataset it found damaged (quarantined here)."""
        node, job = submitted.node, submitted.job
        try:
            if isinstance(result, DamagedDataset):
                self._damaged_dataset(node, job, result)
            if isinstance(result, JobFailed):
                raise RaffError(result.message)
            self._commit(node, job, submitted.inputs, result, time.monotonic() - submitted.started)
            self._tell(node, job)
        finally:
            shutil.rmtree(job.output, ignore_errors=True)
        self.materialise(node)

    def _damaged_dataset(self, node: Node, job: Job, result: DamagedDataset) -> None:
        """The worker could not read the dataset: quarantined if its files fail their check."""
        key, folder = job.dataset_key, job.dataset.parent
        if self.store.check_entry("datasets", key) is None:  # its files are sound: not damage
            raise RaffError(f"analysis '{node.name}': could not read its dataset: {result.problem}", file=folder)
        self.store.quarantine("datasets", key, result.problem)
        raise DamagedEntry("datasets", key, folder, result.problem)

    def _tell(self, node: Node, job: Job) -> None:
        notes = job.output / NOTES
        if notes.is_file():
            for line in notes.read_text().splitlines():
                if line.strip():
                    self.say(f"{node.name}: {line}")

    def _commit(self, node: Node, job: Job, inputs: dict, outputs: Outputs, seconds: float) -> None:
        def write(folder: Path, digests: dict) -> None:
            for name in _stored(job.output, outputs):
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(job.output / name, folder / name)
            if outputs.calibration and outputs.calibration != CALIBRATION:
                shutil.copy(job.output / outputs.calibration, folder / CALIBRATION)
            meta = analysis_record(node.name, inputs, outputs.as_dict(), seconds)
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
            _keep_boards(target, tmp)
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



def _stored(output: Path, outputs: Outputs) -> list[str]:
    """What an entry keeps of the output folder: its top-level files and the declared outputs."""
    names = [item.name for item in Path(output).iterdir() if item.is_file()]
    return list(dict.fromkeys(names + outputs.names()))


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


def _keep_boards(target: Path, new: Path) -> None:
    """Other boards' outputs live in `target/<board>/` (their PROVENANCE file says so): moved into
    the new folder, so that replacing the default board's outputs keeps theirs."""
    if target.is_dir() and not target.is_symlink():
        for sub in target.iterdir():
            if sub.is_dir() and not sub.is_symlink() and (sub / PROVENANCE).is_file() \
                    and not os.path.lexists(new / sub.name):
                os.rename(sub, new / sub.name)


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
