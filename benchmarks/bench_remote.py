"""The shared cache: a 1,000-entry cache pushed to and pulled from a loopback XRootD server.

Each entry is a measurement as `raff build` commits it (`Store.put_measurement`:
one Zarr v3 zip with the per-channel summary of 3 chips and the raw data,
about 150 kB, and its manifest). The cache is pushed to a fresh XRootD
server on 127.0.0.1 (Debian's xrootd-server, see tests/xrootd_server.py),
pushed again (nothing to do: one listing per shard), and pulled into an
empty cache (every file checked against its manifest). A local folder as
the remote is timed the same way, for comparison. Prints MB/s and entries/s.

    .venv/bin/python benchmarks/bench_remote.py [ENTRIES] [-j IN_FLIGHT]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from raffinerie.store.remote import RemoteCache  # noqa: E402
from raffinerie.store.store import Store  # noqa: E402

ROWS = 3 * 2 * 39  # 3 chips x 2 halves x (36 channels + calib + 2 cm)
COLUMNS = ("chip", "half", "channel", "channeltype", "adc_mean", "adc_stdd", "adc_median", "adc_iqr",
           "tot_mean", "tot_stdd", "toa_mean", "toa_stdd", "tot_efficiency", "toa_efficiency")
RAW_BYTES = 120_000


def make_cache(root: Path, entries: int) -> tuple[int, float]:
    store, rng = Store(root), np.random.default_rng(7)
    t0 = time.perf_counter()
    for i in range(entries):
        summary = {name: rng.normal(100, 10, ROWS) for name in COLUMNS}
        raw = rng.integers(0, 1 << 16, RAW_BYTES // 2, dtype=np.uint16).tobytes()  # noise: barely compresses
        store.put_measurement(hashlib.sha256(f"bench-{i}".encode()).digest(), summary, raw,
                              {"procedure": "bench", "index": i})
    size = sum(p.stat().st_size for p in (root / "measurements").rglob("*") if p.is_file())
    return size, time.perf_counter() - t0


def timed(label: str, run, entries: int) -> None:
    t0 = time.perf_counter()
    t = run()
    seconds = time.perf_counter() - t0
    mb = t.bytes / 1e6
    print(f"  {label:34} {t.entries:5} copied {t.present:5} skipped  {mb:7.1f} MB  {seconds:6.2f} s  "
          f"{mb / seconds:7.1f} MB/s  {(t.entries or t.present) / seconds:7.0f} entries/s", flush=True)


def bench(url: str, local: Path, scratch: Path, entries: int, jobs: int) -> None:
    pulled = scratch / "pulled"
    shutil.rmtree(pulled, ignore_errors=True)
    with RemoteCache(url, create=True, entries_in_flight=jobs) as remote:
        timed("push (all new)", lambda: remote.push(Store(local), "measurements"), entries)
        timed("push again (all there)", lambda: remote.push(Store(local), "measurements"), entries)
        timed("pull into an empty cache", lambda: remote.pull(Store(pulled), "measurements"), entries)
    got = sorted(p.name for p in (pulled / "measurements").glob("*/*"))
    assert len(got) == entries, f"{len(got)} entries pulled, {entries} expected"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", nargs="?", type=int, default=1000)
    parser.add_argument("-j", "--jobs", type=int, default=32, help="entries in flight (default 32)")
    args = parser.parse_args()
    from xrootd_server import missing, running_server

    scratch = Path(tempfile.mkdtemp(prefix="raff-bench-remote-"))
    try:
        local = scratch / "cache"
        size, seconds = make_cache(local, args.entries)
        print(f"{args.entries} measurement entries, {size / 1e6:.1f} MB ({size / args.entries / 1e3:.0f} kB each, "
              f"2 files), committed in {seconds:.1f} s; {args.jobs} entries in flight")
        why = missing()
        if why:
            print(f"XRootD: skipped ({why})")
        else:
            with running_server() as server:
                print(f"XRootD server on 127.0.0.1:{server.port} (loopback):")
                bench(server.url("bench/shared"), local, scratch, args.entries, args.jobs)
        print("local folder:")
        bench(str(scratch / "folder-remote"), local, scratch, args.entries, args.jobs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
