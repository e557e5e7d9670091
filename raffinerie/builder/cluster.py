"""`raff build --dask ADDRESS` (or `local:N`): dataset assembly and analyses on a dask cluster.

Acquisition stays in raff (one backend session, serial). A dataset is
assembled by one task, reading and writing the cache by its path, so a
remote cluster must see the cache on a shared file system (EOS, NFS);
`local:N` starts N worker processes on this machine for the build and
stops them at its end. An analysis runs on a worker as it would in raff's
own worker process (`run_job`): a pandas distillery gets its DataFrame
there, the built-ins read only what they use.
"""

from __future__ import annotations

import concurrent.futures
import logging
from dataclasses import dataclass, field

from raffinerie.errors import RaffError

LOCAL = "local:"


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Cluster:
    address: str
    _client: object = field(default=None, repr=False)
    _local: object = field(default=None, repr=False)

    def client(self):
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise RaffError("--dask needs dask.distributed (pip install 'dask[distributed]')") from None
        if self.address.startswith(LOCAL):
            workers = self.address[len(LOCAL):]
            if not workers.isdigit() or int(workers) < 1:
                raise RaffError(f"--dask {self.address}: local:N needs a number of workers, e.g. local:2")
            self._local = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
            return Client(self._local)
        try:
            return Client(self.address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a malformed address
            raise RaffError(f"--dask {self.address}: cannot reach the dask scheduler ({exc})") from None

    def submit(self, fn, *args) -> concurrent.futures.Future:
        """`fn(*args)` on a worker, as a concurrent.futures.Future (what the build loop waits on)."""
        bridged: concurrent.futures.Future = concurrent.futures.Future()
        task = self.client().submit(fn, *args, pure=False)

        def done(task) -> None:
            try:
                bridged.set_result(task.result())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting build loop
                bridged.set_exception(exc)
        task.add_done_callback(done)
        bridged.task = task  # keep it referenced, or the scheduler forgets it
        return bridged

    def run(self, fn, *args):
        return self.client().submit(fn, *args, pure=False).result()

    def peak_memory(self) -> list[float]:
        """Peak RSS (MB) of each worker process so far."""
        if self._client is None:
            return []
        return [round(mb) for mb in self._client.run(_peak_rss_mb).values()]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._local is not None:
            self._local.close()
            self._local = None


def assemble(root: str, key: str, meta: dict, points, wanted, where, board, replace: bool = False) -> dict:
    """Build one dataset into the cache at `root` (a task: picklable arguments)."""
    from raffinerie.builder.datasets import write_dataset
    from raffinerie.store.store import Store

    store = Store(root)
    return store.put_dataset(bytes.fromhex(key), meta,
                             lambda folder: write_dataset(points, store, folder, wanted, where, board), replace)
