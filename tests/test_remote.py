"""The cache shared between test stands: `raff cache push/pull` against a real XRootD server on loopback
(tests/xrootd_server.py), and a local folder; the zarr adapter for root:// URLs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, Result, assert_clean_error, run_raff
from xrootd_server import xrootd_server  # noqa: F401  (the session fixture)

# `raff cache push/pull` as main.py runs a command: one line and an exit code for a RaffError
RUNNER = """\
import argparse, sys
from raffinerie.cli.remote import add_parsers
from raffinerie.errors import RaffError
parser = argparse.ArgumentParser(prog="raff cache")
add_parsers(parser.add_subparsers(dest="cache_command", required=True))
args = parser.parse_args(sys.argv[1:])
try:
    sys.exit(args.func(args))
except RaffError as exc:
    print(f"raff: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def cache_cli(*args, timeout: float = 120, env: dict | None = None) -> Result:
    full_env = {k: v for k, v in os.environ.items() if k not in ("RAFF_CACHE", "RAFF_CONFIG")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full_env)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def ok(result: Result) -> Result:
    assert result.code == 0 and "Traceback" not in result.err, result.out + result.err
    return result


def make_entries(cache: Path, n: int, size: int = 150_000, seed: int = 0, kind: str = "measurements",
                 start: int = 0) -> list[str]:
    """`n` entries of about `size` bytes through Store.commit (two files each, as a measurement has)."""
    from raffinerie.store.store import Store

    store, rng, keys = Store(cache), np.random.default_rng(seed), []
    for i in range(start, start + n):
        key = hashlib.sha256(f"{kind}-{i}".encode()).hexdigest()
        data = rng.bytes(size)

        def write(folder: Path, digests: dict, data=data, i=i) -> None:
            (folder / "measurement.zarr.zip").write_bytes(data)
            (folder / "meta.json").write_text(json.dumps({"point": i, "seed": seed}))
        store.commit(kind, key, write)
        keys.append(key)
    return keys


def entry_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def complete(folder: Path) -> bool:
    """An entry folder whose files are exactly those of its manifest, with their sizes and digests."""
    files = entry_files(folder)
    manifest = json.loads(files.pop("manifest.json"))["files"]
    return set(manifest) == set(files) and all(
        len(files[n]) == size and hashlib.sha256(files[n]).hexdigest() == digest
        for n, (size, digest) in manifest.items())


def entries(root: Path, kind: str = "measurements") -> list[Path]:
    return sorted(p for p in (root / kind).glob("*/*") if p.is_dir())


SCAN = """\
- key: [roc_s0, Top, 0, phase_strobe]
  values: [1, 2, 3]
"""


# -- the adapter under zarr ---------------------------------------------------------------------------

def test_zarr_writes_and_reads_a_sharded_group_through_the_adapter(xrootd_server):
    import zarr

    from raffinerie.store.xrootdfs import filesystem, zarr_store

    url = xrootd_server.url("zarr/group.zarr")
    values = np.arange(240 * 16, dtype="f8").reshape(240, 16)
    group = zarr.open_group(store=zarr_store(url), mode="w")
    sharded = group.create_array("sharded", shape=values.shape, chunks=(10, 16), shards=(80, 16), dtype="f8")
    sharded[...] = values
    group.create_array("plain", shape=(50,), chunks=(10,), dtype="i4")[...] = np.arange(50)
    group.attrs["scan"] = {"axes": ["Calib"]}
    assert (xrootd_server.local("zarr/group.zarr") / "sharded" / "c" / "0" / "0").is_file()  # one file per shard

    again = zarr.open_group(store=zarr_store(url, read_only=True), mode="r")
    assert sorted(again.array_keys()) == ["plain", "sharded"]
    assert again.attrs["scan"] == {"axes": ["Calib"]}
    assert (again["sharded"][...] == values).all()
    assert (again["sharded"][95:105, 3] == values[95:105, 3]).all()  # inner chunks across two shards
    assert (again["plain"][-5:] == np.arange(45, 50)).all()
    assert "nothing" not in again  # a missing key is missing (3011 -> FileNotFoundError), not an error

    fs, base = filesystem(xrootd_server.url("zarr"))
    fs.pipe_file(f"{base}/bytes.bin", bytes(range(100)))
    assert fs.cat_file(f"{base}/bytes.bin", start=-10) == bytes(range(90, 100))    # suffix range
    assert fs.cat_file(f"{base}/bytes.bin", start=95, end=None) == bytes(range(95, 100))
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{base}/absent.bin")
    with pytest.raises(FileNotFoundError):
        fs.info(f"{base}/absent.bin")
    assert not fs.exists(f"{base}/absent.bin")


# -- push and pull ------------------------------------------------------------------------------------

def test_two_caches_share_points_through_the_server(xrootd_server, libdir, tmp_path):
    """Stand A builds and pushes `scan`; stand B pulls it and has nothing left to acquire."""
    main = libdir.main(libdir.daq(parameters=SCAN))
    a, b = tmp_path / "stand-a", tmp_path / "stand-b"
    assert run_raff("build", "scan", "-c", main, "--cache", a).code == 0
    url = xrootd_server.url("shared/share")

    pushed = ok(cache_cli("push", url, "scan", "-c", main, "--cache", a))
    assert "pushed 4 entries" in pushed.out and " MB) to " in pushed.out, pushed.out  # 3 points + the dataset
    assert (xrootd_server.local("shared/share") / "names" / "datasets" / "scan.json").is_file()
    assert "pushed 0 entries" in ok(cache_cli("push", url, "scan", "-c", main, "--cache", a)).out

    pulled = ok(cache_cli("pull", url, "scan", "-c", main, "--cache", b))
    assert "pulled 4 entries" in pulled.out, pulled.out
    for kind in ("measurements", "datasets"):
        assert [p.name for p in entries(b, kind)] == [p.name for p in entries(a, kind)]
        for pa, pb in zip(entries(a, kind), entries(b, kind)):
            assert entry_files(pa) == entry_files(pb)  # byte for byte, manifest included
    check = run_raff("plan", "scan", "-c", main, "--cache", b, "--check")
    assert check.code == 0, check.out + check.err  # nothing to acquire on stand B
    built = run_raff("build", "scan", "-c", main, "--cache", b)
    assert built.code == 0 and "up to date" in built.out, built.out
    assert not (b / "tmp").exists() or not any((b / "tmp").iterdir())


def test_build_with_remote_pulls_from_the_server_instead_of_acquiring(xrootd_server, libdir, tmp_path):
    """`raff build --remote root://...`: stand B acquires nothing that stand A pushed."""
    main = libdir.main(libdir.daq(parameters=SCAN))
    a, b = tmp_path / "stand-a", tmp_path / "stand-b"
    assert run_raff("build", "scan", "-c", main, "--cache", a).code == 0
    url = xrootd_server.url("shared/remote-build")
    ok(cache_cli("push", url, "-c", main, "--cache", a))
    plan = run_raff("plan", "scan", "-c", main, "--cache", b, "--remote", url)
    assert plan.code == 0 and "3 of its 3 points to acquire are in remote cache" in plan.out, plan.out + plan.err
    built = run_raff("build", "scan", "-c", main, "--cache", b, "--remote", url)
    assert built.code == 0, built.err
    assert "pulled from" in built.err and "3 points, 1 dataset" in built.err, built.err
    assert "backend:" not in built.err and "up to date" in built.out  # no session opened, nothing acquired
    for kind in ("measurements", "datasets"):
        assert [p.name for p in entries(b, kind)] == [p.name for p in entries(a, kind)]


def test_a_local_folder_and_a_file_url_serve_as_remotes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    keys = make_entries(a, 5, size=10_000, seed=5)
    shared = tmp_path / "shared"
    assert "pushed 5 entries" in ok(cache_cli("push", shared, "--cache", a)).out
    assert not any((shared / "tmp").iterdir())
    assert "pulled 5 entries" in ok(cache_cli("pull", shared, "--cache", b)).out
    assert "pulled 5 entries" in ok(cache_cli("pull", f"file://{shared}", "--cache", c)).out
    for other in (b, c):
        assert [p.name for p in entries(other)] == sorted(keys)
        assert all(entry_files(p) == entry_files(a / "measurements" / p.parent.name / p.name)
                   for p in entries(other))


def test_push_and_pull_by_name_follow_dataset_analysis_and_calibration(tmp_path):
    """NAME selects what its last build used: the analysis, its dataset, that dataset's points and
    the calibration it was built with (with what that used), and nothing else."""
    from raffinerie.store.store import Store

    a, b, shared = tmp_path / "a", tmp_path / "b", tmp_path / "shared"
    store = Store(a)
    points = make_entries(a, 3, size=1000, seed=6)
    cal_points = make_entries(a, 2, size=1000, seed=6, start=10)
    make_entries(a, 4, size=1000, seed=6, start=20)  # used by nothing named

    def put(kind: str, key: str, meta: dict) -> None:
        store.commit(kind, key, lambda folder, digests: (folder / "meta.json").write_text(json.dumps(meta)))
    k = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    put("datasets", k("cal-ds"), {"procedure": "pedestal", "point_keys": cal_points})
    put("analyses", k("cal-an"), {"procedure": "trim", "inputs": {"dataset": k("cal-ds")}})
    put("datasets", k("ds"), {"procedure": "scan", "point_keys": points})
    put("analyses", k("an"), {"procedure": "gain", "inputs": {"dataset": k("ds")}})
    store.record("datasets", "pedestal", k("cal-ds"), {"calibration": None})
    store.record("analyses", "trim", k("cal-an"), {"dataset": k("cal-ds")})
    store.record("datasets", "scan", k("ds"), {"calibration": k("cal-an")})
    store.record("analyses", "gain", k("an"), {"dataset": k("ds")})

    assert "pushed 9 entries" in ok(cache_cli("push", shared, "gain", "--cache", a)).out  # 5 points, 2+2
    assert sorted(p.name for p in (shared / "names" / "analyses").iterdir()) == ["gain.json", "trim.json"]
    assert "pulled 9 entries" in ok(cache_cli("pull", shared, "gain", "--cache", b)).out
    assert sorted(p.name for p in entries(b)) == sorted(points + cal_points)
    assert_clean_error(cache_cli("pull", shared, "nothing", "--cache", b), "no build of nothing")
    assert_clean_error(cache_cli("push", shared, "nothing", "--cache", a), "no build of nothing")


def test_a_build_record_carries_its_format_and_a_newer_one_is_one_clear_error(tmp_path):
    from raffinerie.store.records import RECORD_FORMAT
    from raffinerie.store.store import Store

    a, shared = tmp_path / "a", tmp_path / "shared"
    store = Store(a)
    points = make_entries(a, 2, size=1000, seed=7)
    key = hashlib.sha256(b"ds").hexdigest()
    store.commit("datasets", key, lambda folder, digests: (folder / "meta.json").write_text(
        json.dumps({"procedure": "scan", "point_keys": points})))
    store.record("datasets", "scan", key)
    path = a / "names" / "datasets" / "scan.json"
    doc = json.loads(path.read_text())
    assert doc["format"] == RECORD_FORMAT and doc["key"] == key

    del doc["format"]                       # a record of an older raffinerie: read as the current format
    path.write_text(json.dumps(doc))
    assert "pushed 3 entries" in ok(cache_cli("push", shared, "scan", "--cache", a)).out

    path.write_text(json.dumps({**doc, "format": RECORD_FORMAT + 1}))
    assert_clean_error(cache_cli("push", shared, "scan", "--cache", a), str(path),
                       f"a build record of a newer raffinerie (format {RECORD_FORMAT + 1}")


# -- errors --------------------------------------------------------------------------------------------

def test_an_unreachable_server_is_one_clear_error_within_seconds(tmp_path):
    import socket

    pytest.importorskip("XRootD.client", reason="XRootD Python client not installed")
    pytest.importorskip("fsspec_xrootd", reason="fsspec-xrootd not installed")

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    make_entries(tmp_path / "a", 1, size=100)
    url = f"root://127.0.0.1:{port}//shared"
    for command in ("push", "pull"):
        t0 = time.monotonic()
        result = cache_cli(command, url, "--cache", tmp_path / "a", timeout=60)
        assert time.monotonic() - t0 < 20
        assert_clean_error(result, url, "cannot reach the server")
    assert_clean_error(cache_cli("push", "s3://bucket/x", "--cache", tmp_path / "a"), "unsupported URL scheme")


def test_missing_and_forbidden_remote_folders_are_clear_errors(xrootd_server, tmp_path):
    make_entries(tmp_path / "a", 1, size=100)
    url = xrootd_server.url("shared/never-pushed")
    assert_clean_error(cache_cli("pull", url, "--cache", tmp_path / "b"), url, "no such folder")
    xrootd_server.mkdir("locked", owner=None)  # root's: the server (as xrootd) cannot write there
    if os.geteuid() == 0:
        locked = xrootd_server.url("locked/cache")
        assert_clean_error(cache_cli("push", locked, "--cache", tmp_path / "a"), locked, "permission denied")
    assert_clean_error(cache_cli("push", tmp_path / "x", "--cache", tmp_path / "nothing"), "no cache here")
