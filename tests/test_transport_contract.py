"""One contract every transport of the shared cache passes (as zarr-python's StoreTests): a folder
on this machine and a real XRootD server on loopback (tests/xrootd_server.py; skipped when
xrootd-server is not installed). The first part drives `Transport` directly, the second the
whole push and pull through `raff cache` (damage, interrupt, overwrite) on both."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import ROOT, assert_clean_error
from test_remote import RUNNER, cache_cli, complete, entries, entry_files, make_entries, ok
from xrootd_server import xrootd_server  # noqa: F401  (the session fixture)


@dataclass
class Place:
    """Where a shared cache lives: `url(name)` for raffinerie, `local(name)` for the test to look."""

    kind: str
    url: Callable[[str], str]
    local: Callable[[str], Path]
    mkdir: Callable[[str], Path]     # a folder the transport may write in


@pytest.fixture(scope="module", params=["folder", "xrootd"])
def server(request):
    """The XRootD server for the xrootd transport (module-scoped: started before a test's own
    processes are counted), None for the folder."""
    return request.getfixturevalue("xrootd_server") if request.param == "xrootd" else None


@pytest.fixture
def place(server, request, tmp_path) -> Place:
    if server is not None:
        prefix = f"contract/{request.node.name.replace('[', '-').rstrip(']')}"
        server.mkdir("contract")
        server.mkdir(prefix)    # owned by the server's user: the push makes its folder below
        return Place("xrootd", lambda name: server.url(f"{prefix}/{name}"),
                     lambda name: server.local(f"{prefix}/{name}"), lambda name: server.mkdir(f"{prefix}/{name}"))
    root = tmp_path / "shared"

    def mkdir(name: str) -> Path:
        (root / name).mkdir(parents=True, exist_ok=True)
        return root / name
    return Place("folder", lambda name: str(root / name), lambda name: root / name, mkdir)


@pytest.fixture
def transport(place):
    """A transport on an empty folder of `place`, and a way to run its coroutines."""
    from fsspec.asyn import get_loop, sync

    from raffinerie.store.remote import open_transport

    place.mkdir("t")
    t = open_transport(place.url("t"))
    loop = get_loop()
    yield t, lambda fn, *args: sync(loop, fn, *args)
    t.close()


# -- the Transport protocol ----------------------------------------------------------------------------

def test_a_written_file_reads_back_whole_and_in_pieces(transport):
    t, run = transport
    data = bytes(range(256)) * 40
    run(t.write, "a/b/file.bin", data)              # its folders are made
    assert run(t.read, "a/b/file.bin", len(data)) == data
    found = run(t.stat, "a/b/file.bin")
    assert found.type == "file" and found.size == len(data) and found.mtime > 0
    assert run(t.stat, "a/b").type == "directory"
    reader = run(t.open_reader, "a/b/file.bin")
    try:
        assert reader.size == len(data)
        assert run(reader.read, 1000, 24) == data[1000:1024]
        assert run(reader.read, len(data) - 5, 100) == data[-5:]
    finally:
        run(reader.close)


def test_a_write_replaces_the_file_that_was_there(transport):
    t, run = transport
    run(t.write, "f.json", b"x" * 1000)
    run(t.write, "f.json", b"short")
    assert run(t.read, "f.json", 100) == b"short"
    assert run(t.stat, "f.json").size == 5


def test_what_is_not_there_is_none_or_file_not_found(transport):
    t, run = transport
    assert run(t.stat, "absent") is None
    assert run(t.stat, "no/such/folder/file") is None
    with pytest.raises(FileNotFoundError):
        run(t.read, "absent", 100)
    with pytest.raises(FileNotFoundError):
        run(t.open_reader, "absent")
    with pytest.raises(FileNotFoundError):
        run(t.ls, "absent")


def test_a_folder_or_a_file_over_the_limit_is_refused_by_name(transport):
    from raffinerie.store.transport import Refused

    t, run = transport
    run(t.write, "big.bin", b"0" * 5000)
    with pytest.raises(Refused, match=r"big\.bin is 5,000 bytes, more than the 4,999 allowed"):
        run(t.read, "big.bin", 4999)
    run(t.mkdirs, "folder")
    with pytest.raises(Refused, match="folder is a folder, not a regular file"):
        run(t.read, "folder", 100)


def test_a_listing_names_files_and_folders_with_their_types(transport):
    t, run = transport
    run(t.write, "d/one.bin", b"1")
    run(t.write, "d/sub/two.bin", b"22")
    listing = dict(run(t.ls, "d"))
    assert sorted(listing) == ["one.bin", "sub"]
    assert listing["one.bin"].type == "file" and listing["one.bin"].size == 1
    assert listing["sub"].type == "directory"
    assert [name for name, _ in run(t.ls, "")] == ["d"]  # "" is the folder itself


def test_mkdirs_makes_parents_and_may_be_repeated(transport):
    t, run = transport
    run(t.mkdirs, "x/y/z")
    run(t.mkdirs, "x/y/z")
    assert run(t.stat, "x/y/z").type == "directory"


def test_a_rename_moves_a_folder_and_never_replaces_one(transport):
    t, run = transport
    run(t.write, "tmp/new/file.bin", b"new")
    run(t.mkdirs, "kind/ab")
    run(t.rename, "tmp/new", "kind/ab/entry")
    assert run(t.stat, "tmp/new") is None
    assert run(t.read, "kind/ab/entry/file.bin", 10) == b"new"

    run(t.write, "tmp/other/file.bin", b"other")   # another stand's copy of the same entry
    with pytest.raises(OSError):
        run(t.rename, "tmp/other", "kind/ab/entry")
    assert run(t.read, "kind/ab/entry/file.bin", 10) == b"new"
    assert run(t.read, "tmp/other/file.bin", 10) == b"other"


def test_rmtree_removes_a_folder_with_all_in_it_and_ignores_what_is_gone(transport):
    t, run = transport
    run(t.write, "gone/a/b.bin", b"b")
    run(t.write, "gone/c.bin", b"c")
    run(t.write, "kept.bin", b"k")
    run(t.rmtree, "gone")
    assert run(t.stat, "gone") is None
    run(t.rmtree, "gone")           # nothing there: no error
    run(t.rmtree, "kept.bin")       # a file too
    assert run(t.stat, "kept.bin") is None


# -- push and pull through `raff cache` ------------------------------------------------------------------

def test_a_pull_never_overwrites_a_local_entry(place, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    keys = make_entries(a, 6, size=20_000, seed=1)
    make_entries(b, 1, size=20_000, seed=2)  # the same key as a's first, other content
    mine = entry_files(entries(b)[0])
    url = place.url("never")
    ok(cache_cli("push", url, "--cache", a))
    pulled = ok(cache_cli("pull", url, "--cache", b))
    assert "pulled 5 entries" in pulled.out and "1 already here" in pulled.out, pulled.out
    assert entry_files(b / "measurements" / keys[0][:2] / keys[0]) == mine
    assert [p.name for p in entries(b)] == sorted(keys)


def test_an_interrupted_push_leaves_no_partial_entry(place, tmp_path):
    cache = tmp_path / "cache"
    keys = make_entries(cache, 300, size=400_000, seed=3)
    url = place.url("killed")
    remote = place.local("killed")
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, "push", url, "--cache", str(cache), "-j", "4"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and len(entries(remote)) < 5:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, "the push ended before it could be interrupted"
    visible = entries(remote)
    assert 5 <= len(visible) < len(keys)
    assert all(complete(p) for p in visible)  # whole entries only; what was being written is in tmp/

    ok(cache_cli("push", url, "--cache", cache))  # the next push finishes the job
    fresh = tmp_path / "fresh"
    assert "pulled 300 entries" in ok(cache_cli("pull", url, "--cache", fresh)).out
    assert all(complete(p) for p in entries(fresh))


def test_a_damaged_remote_entry_is_never_pulled(place, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    keys = make_entries(a, 4, size=30_000, seed=4)
    url = place.url("damaged")
    ok(cache_cli("push", url, "--cache", a))
    victim = place.local("damaged") / "measurements" / keys[2][:2] / keys[2] / "measurement.zarr.zip"
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = cache_cli("pull", url, "--cache", b)
    assert_clean_error(result, url, keys[2], "content changed: measurement.zarr.zip", "not pulled")
    assert len([l for l in result.err.splitlines() if l.startswith("raff: error")]) == 1
    assert not (b / "measurements" / keys[2][:2] / keys[2]).exists()
    assert sorted(p.name for p in entries(b)) == sorted(k for i, k in enumerate(keys) if i != 2)
    assert not any((b / "tmp").iterdir())

    (victim.parent / "manifest.json").write_text("{not json")
    assert_clean_error(cache_cli("pull", url, "--cache", b), keys[2], "manifest.json unreadable")
