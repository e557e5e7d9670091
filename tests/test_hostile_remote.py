"""Hostile shared caches (issue 27): a remote entry is the regular files its manifest names.

Every attack is a prepared remote folder (or a folder on a real loopback XRootD server, see
tests/xrootd_server.py) holding one good entry and one crafted one. The pull must refuse the
crafted entry with one line naming it, in bounded time, pull the good one, and never let the
bytes of a secret outside the shared cache reach the local cache. Full disks are small tmpfs
mounts (skipped where mounting is not permitted).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_clean_error, run_raff
from test_remote import SCAN, cache_cli, entries, entry_files, make_entries, ok
from xrootd_server import xrootd_server  # noqa: F401  (the session fixture)

SECRET = b"-----BEGIN PULLER'S PRIVATE KEY----- 6f1c2d9e0a7b"  # bytes that must never be copied
BOUND = 20  # seconds: a refusal is a few requests, a hang is what these attacks used to cause


def key_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_of(files: dict[str, bytes]) -> bytes:
    """A manifest.json as Store.commit writes it, claiming `files` (name: content)."""
    return json.dumps({"files": {n: [len(d), hashlib.sha256(d).hexdigest()] for n, d in files.items()}},
                      indent=1).encode()


@pytest.fixture
def secrets(tmp_path) -> Path:
    """A folder outside every cache, as ~/.ssh would be: a file holding SECRET."""
    home = tmp_path / "home" / ".ssh"
    home.mkdir(parents=True)
    (home / "id_ed25519").write_bytes(SECRET)
    return home


def leaks(cache: Path) -> list[str]:
    """Files under the local cache that hold SECRET, and any link there (none is ever made)."""
    found = []
    for root, dirs, files in os.walk(cache):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                found.append(f"link {path}")
            elif name in files and path.is_file() and SECRET in path.read_bytes():
                found.append(str(path))
    return found


def one_error(result) -> str:
    lines = [l for l in result.err.splitlines() if l.startswith("raff: error")]
    assert len(lines) == 1, result.out + result.err
    return lines[0]


def timed_pull(url, cache: Path, *names: str):
    t0 = time.monotonic()
    result = cache_cli("pull", url, *names, "--cache", cache, timeout=BOUND + 10)
    assert time.monotonic() - t0 < BOUND, f"pull took {time.monotonic() - t0:.0f} s"
    return result


# -- the attacks: each makes the crafted entry `folder` (its parent exists) ----------------------------

def link_to_secret(folder: Path, secrets: Path) -> str:
    """meta.json is a link to the secret; the manifest even has its hash (a guess confirmed)."""
    folder.mkdir()
    (folder / "meta.json").symlink_to(secrets / "id_ed25519")
    (folder / "manifest.json").write_bytes(manifest_of({"meta.json": SECRET}))
    return "meta.json"


def link_without_manifest(folder: Path, secrets: Path) -> str:
    folder.mkdir()
    (folder / "meta.json").symlink_to(secrets / "id_ed25519")
    return "no manifest.json"


def linked_folder(folder: Path, secrets: Path) -> str:
    """A folder of the entry is a link to ~/.ssh; the manifest names the key inside."""
    folder.mkdir()
    (folder / "sub").symlink_to(secrets)
    (folder / "manifest.json").write_bytes(manifest_of({"sub/id_ed25519": SECRET}))
    return "sub"


def linked_folder_without_manifest(folder: Path, secrets: Path) -> str:
    folder.mkdir()
    (folder / "sub").symlink_to(secrets)
    return "no manifest.json"


def entry_is_a_link(folder: Path, secrets: Path) -> str:
    """The entry folder itself is a link to a folder outside, with a manifest of what it holds."""
    (secrets / "manifest.json").write_bytes(manifest_of({"id_ed25519": SECRET}))
    folder.symlink_to(secrets)
    return "link"


def manifest_is_a_link(folder: Path, secrets: Path) -> str:
    folder.mkdir()
    (secrets / "m.json").write_bytes(manifest_of({"id_ed25519": SECRET}))
    (folder / "manifest.json").symlink_to(secrets / "m.json")
    (folder / "id_ed25519").write_bytes(b"x")
    return "manifest.json"


def no_manifest(folder: Path, secrets: Path) -> str:
    folder.mkdir()
    (folder / "meta.json").write_text("{}")
    return "no manifest.json"


def two_links_to_dot(folder: Path, secrets: Path) -> str:
    """a -> . and b -> .: walking the entry is 2^depth paths."""
    folder.mkdir()
    (folder / "meta.json").write_text("{}")
    (folder / "a").symlink_to(".")
    (folder / "b").symlink_to(".")
    return "no manifest.json"


def two_links_to_dot_named(folder: Path, secrets: Path) -> str:
    folder.mkdir()
    (folder / "meta.json").write_text("{}")
    (folder / "a").symlink_to(".")
    (folder / "b").symlink_to(".")
    (folder / "manifest.json").write_bytes(manifest_of({"a/b/a/meta.json": b"{}"}))
    return "a"


def dotdot_name(folder: Path, secrets: Path) -> str:
    folder.mkdir()
    (folder.parent / "x").write_bytes(SECRET)  # beside the entry, in the shard folder
    (folder / "manifest.json").write_bytes(manifest_of({"../x": SECRET}))
    return "../x"


def absolute_name(folder: Path, secrets: Path) -> str:
    folder.mkdir()
    (folder / "manifest.json").write_bytes(manifest_of({str(secrets / "id_ed25519"): SECRET}))
    return "bad file name"


def fifo_named(folder: Path, secrets: Path) -> str:
    """A FIFO: reading it waits for a writer forever."""
    folder.mkdir()
    os.mkfifo(folder / "pipe")
    (folder / "manifest.json").write_bytes(manifest_of({"pipe": b""}))
    return "pipe"


def device_named(folder: Path, secrets: Path) -> str:
    """A character device (as /dev/null): it reads as the empty file its manifest claims."""
    folder.mkdir()
    try:
        os.mknod(folder / "null", 0o644 | 0o020000, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")
    (folder / "manifest.json").write_bytes(manifest_of({"null": b""}))
    return "null"


def too_many_files(folder: Path, secrets: Path) -> str:
    """A manifest naming 200,000 files (more than an entry may have: refused before any is read)."""
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"files": {f"f{i}": [1, "0" * 64] for i in range(200_000)}}))
    return "files"


def too_large(folder: Path, secrets: Path) -> str:
    """A manifest claiming a petabyte."""
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"files": {"f": [10**15, "0" * 64]}}))
    return "bytes"


ATTACKS = [link_to_secret, link_without_manifest, linked_folder, linked_folder_without_manifest,
           entry_is_a_link, manifest_is_a_link, no_manifest, two_links_to_dot, two_links_to_dot_named,
           dotdot_name, absolute_name, fifo_named, device_named, too_many_files, too_large]


def shared_with_attack(tmp_path: Path, attack, secrets: Path) -> tuple[Path, str, str, str]:
    """A shared folder with one good entry (pushed) and one crafted: (folder, good, bad, needle)."""
    a, shared = tmp_path / "a", tmp_path / "shared"
    good = make_entries(a, 1, size=5_000, seed=27)[0]
    ok(cache_cli("push", shared, "--cache", a))
    bad = key_of(f"attack-{attack.__name__}")
    folder = shared / "measurements" / bad[:2] / bad
    folder.parent.mkdir(parents=True, exist_ok=True)
    needle = attack(folder, secrets)
    return shared, good, bad, needle


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__)
def test_a_crafted_remote_entry_is_refused_and_nothing_outside_is_copied(attack, tmp_path, secrets):
    shared, good, bad, needle = shared_with_attack(tmp_path, attack, secrets)
    b = tmp_path / "b"
    result = timed_pull(shared, b)
    line = one_error(result)
    assert_clean_error(result, bad, needle, "not pulled")
    assert f"measurements/{bad}" in line, line
    assert [p.name for p in entries(b)] == [good]  # the good entry is pulled, the crafted one is not
    assert not leaks(b)
    assert not (b / "tmp").exists() or not any((b / "tmp").iterdir())
    if attack in (link_to_secret, linked_folder, entry_is_a_link):  # the same by key, as `build --remote` asks
        again = timed_pull(shared, tmp_path / "c", "--jobs", "1")
        assert_clean_error(again, bad, "link")
        assert not leaks(tmp_path / "c")


def test_names_read_from_the_remote_follow_no_link(tmp_path, secrets):
    """`pull NAME` reads names/<kind>/<NAME>.json and entries' meta.json: a link there is not read."""
    a, shared, b = tmp_path / "a", tmp_path / "shared", tmp_path / "b"
    make_entries(a, 1, size=100)
    ok(cache_cli("push", shared, "--cache", a))
    (secrets / "scan.json").write_text(json.dumps({"key": key_of("x"), "secret": SECRET.decode()}))
    (shared / "names" / "datasets").mkdir(parents=True)
    (shared / "names" / "datasets" / "scan.json").symlink_to(secrets / "scan.json")
    result = timed_pull(shared, b, "scan")
    assert_clean_error(result, "scan.json", "link")
    assert not leaks(b)


def test_build_with_remote_refuses_a_linked_point(libdir, tmp_path, secrets):
    """`raff build --remote DIR`: a pushed point whose file became a link to a secret (with the
    secret's hash in its manifest) is refused with one line; the secret never reaches the cache."""
    main = libdir.main(libdir.daq(parameters=SCAN))
    a, b, shared = tmp_path / "stand-a", tmp_path / "stand-b", tmp_path / "shared"
    assert run_raff("build", "scan", "-c", main, "--cache", a).code == 0
    ok(cache_cli("push", shared, "-c", main, "--cache", a))
    victim = entries(shared)[0]
    (victim / "measurement.zarr.zip").unlink()
    (victim / "measurement.zarr.zip").symlink_to(secrets / "id_ed25519")
    doc = json.loads((victim / "manifest.json").read_text())
    doc["files"]["measurement.zarr.zip"] = [len(SECRET), hashlib.sha256(SECRET).hexdigest()]
    (victim / "manifest.json").write_text(json.dumps(doc))
    t0 = time.monotonic()
    built = run_raff("build", "scan", "-c", main, "--cache", b, "--remote", shared, timeout=120)
    assert time.monotonic() - t0 < 60
    assert_clean_error(built, victim.name, "measurement.zarr.zip", "link")
    one_error(built)
    assert not leaks(b)


# -- push: a local link does not push a file outside the cache ---------------------------------------

def test_push_refuses_a_local_entry_with_a_link_or_without_manifest(tmp_path, secrets):
    a, shared = tmp_path / "a", tmp_path / "shared"
    keys = make_entries(a, 3, size=1_000, seed=28)
    linked = a / "measurements" / keys[0][:2] / keys[0]
    (linked / "meta.json").unlink()
    (linked / "meta.json").symlink_to(secrets / "id_ed25519")
    doc = json.loads((linked / "manifest.json").read_text())
    doc["files"]["meta.json"] = [len(SECRET), hashlib.sha256(SECRET).hexdigest()]
    (linked / "manifest.json").write_text(json.dumps(doc))
    bare = a / "measurements" / keys[1][:2] / keys[1]
    (bare / "manifest.json").unlink()
    t0 = time.monotonic()
    result = cache_cli("push", shared, "--cache", a, timeout=60)
    assert time.monotonic() - t0 < BOUND
    line = one_error(result)
    assert_clean_error(result, "2 damaged local entries not pushed", keys[0], keys[1])
    assert "meta.json" in line and "link" in line and "no manifest.json" in line, line
    assert [p.name for p in entries(shared)] == [keys[2]]
    assert not leaks(shared)


# -- XRootD: the server's stat types and the manifest decide ------------------------------------------

def _give_to_server(path: Path) -> None:
    """What the test made as root, given to the server's user (as the server's own files are)."""
    if os.geteuid() != 0:
        return
    import pwd

    user = pwd.getpwnam("xrootd")
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files, ""]:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def xrootd_link_wrong_hash(folder: Path, secrets: Path) -> str:
    """The server follows links itself; the manifest's hash (not the secret's) refuses the bytes."""
    folder.mkdir()
    (folder / "meta.json").symlink_to(secrets / "id_ed25519")
    (folder / "manifest.json").write_bytes(manifest_of({"meta.json": b"x" * len(SECRET)}))
    return "content changed: meta.json"


XROOTD_ATTACKS = [no_manifest, link_without_manifest, linked_folder_without_manifest, two_links_to_dot,
                  dotdot_name, absolute_name, fifo_named, device_named, xrootd_link_wrong_hash]


@pytest.mark.parametrize("attack", XROOTD_ATTACKS, ids=lambda f: f.__name__)
def test_a_crafted_entry_on_an_xrootd_server_is_refused(attack, xrootd_server, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    path = f"hostile/{attack.__name__}"
    url = xrootd_server.url(path)
    good = make_entries(a, 1, size=5_000, seed=29)[0]
    ok(cache_cli("push", url, "--cache", a))
    bad = key_of(f"xrootd-{attack.__name__}")
    folder = xrootd_server.local(path) / "measurements" / bad[:2] / bad
    folder.parent.mkdir(parents=True, exist_ok=True)
    home = xrootd_server.base / "home" / attack.__name__  # outside the export, readable by the server
    home.mkdir(parents=True)
    (home / "id_ed25519").write_bytes(SECRET)
    _give_to_server(xrootd_server.base / "home")
    needle = attack(folder, home)
    _give_to_server(folder.parent)
    result = timed_pull(url, b)
    line = one_error(result)
    assert_clean_error(result, bad, "not pulled")
    assert f"measurements/{bad}" in line and needle in line, line
    assert [p.name for p in entries(b)] == [good]
    assert not leaks(b)
    assert not any((b / "tmp").iterdir())


# -- full disks, and what a failed push leaves in the remote's tmp/ ---------------------------------------

@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "1m"):
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=20)


def test_a_push_to_a_full_remote_leaves_nothing_in_its_tmp(tmp_path):
    a = tmp_path / "a"
    make_entries(a, 12, size=200_000, seed=30)  # 2.4 MB, into 1 MB
    with tmpfs(tmp_path / "full") as full:
        result = cache_cli("push", full, "--cache", a, "-j", "4", timeout=60)
        assert_clean_error(result, str(full), "No space left")
        one_error(result)
        assert not any((full / "tmp").iterdir()), list((full / "tmp").iterdir())
        assert all(entry_files(p) == entry_files(a / "measurements" / p.parent.name / p.name)
                   for p in entries(full))  # whole entries only


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_later_push_removes_stale_tmp_folders_of_dead_pushers_only(tmp_path):
    a, shared = tmp_path / "a", tmp_path / "shared"
    make_entries(a, 2, size=1_000, seed=31)
    from raffinerie.store.push import writer_host

    host = writer_host()
    k16 = "0123456789abcdef"
    tmp = shared / "tmp"
    tmp.mkdir(parents=True)
    mine_dead = tmp / f"measurements-{k16}-{host}-{dead_pid()}-deadbeef"
    mine_alive = tmp / f"measurements-{k16}-{host}-{os.getpid()}-cafecafe"
    other_fresh = tmp / f"measurements-{k16}-otherstand-4242-0badf00d"
    other_old = tmp / f"datasets-{k16}-otherstand-4243-0ddba11a"
    old_record = tmp / "names-otherstand-4244-12345678.json"
    not_ours = tmp / "someone-elses-folder"
    for folder in (mine_dead, mine_alive, other_fresh, other_old, not_ours):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "f").write_bytes(b"half an entry")
    old_record.write_text("{}")
    day_ago = time.time() - 25 * 3600
    for path in (other_old, old_record, not_ours):
        os.utime(path, (day_ago, day_ago))
    ok(cache_cli("push", shared, "--cache", a))
    assert sorted(p.name for p in tmp.iterdir()) == sorted(p.name for p in (mine_alive, other_fresh, not_ours))


def test_a_pull_into_a_full_local_disk_names_the_local_cache(tmp_path):
    a, shared = tmp_path / "a", tmp_path / "shared"
    make_entries(a, 12, size=200_000, seed=32)
    ok(cache_cli("push", shared, "--cache", a))
    with tmpfs(tmp_path / "full") as full:
        cache = full / "cache"
        result = cache_cli("pull", shared, "--cache", cache, "-j", "4", timeout=60)
        line = one_error(result)
        assert_clean_error(result, str(cache), "no space left")
        assert str(shared) not in line.split("no space left")[0], line  # the remote is not the problem
        assert not any((cache / "tmp").iterdir())
        from test_remote import complete
        assert all(complete(p) for p in entries(cache))


def test_a_pull_from_xrootd_into_a_full_local_disk_names_the_local_cache(xrootd_server, tmp_path):
    a = tmp_path / "a"
    make_entries(a, 12, size=200_000, seed=33)
    url = xrootd_server.url("hostile/full-local")
    ok(cache_cli("push", url, "--cache", a))
    with tmpfs(tmp_path / "full") as full:
        cache = full / "cache"
        result = cache_cli("pull", url, "--cache", cache, "-j", "4", timeout=60)
        line = one_error(result)
        assert_clean_error(result, str(cache), "no space left")
        assert url not in line.split("no space left")[0], line
        assert not any((cache / "tmp").iterdir())


def test_a_push_to_a_full_xrootd_server_leaves_nothing_in_its_tmp(xrootd_server, tmp_path):
    a = tmp_path / "a"
    make_entries(a, 12, size=200_000, seed=34)
    with tmpfs(xrootd_server.local("hostile/full-remote")) as full:
        _give_to_server(full)
        url = xrootd_server.url("hostile/full-remote")
        result = cache_cli("push", url, "--cache", a, "-j", "4", timeout=60)
        line = one_error(result)
        assert_clean_error(result, url, "no space left")  # and no traceback of a late answer either
        assert not any((full / "tmp").iterdir()), list((full / "tmp").iterdir())
        assert all(entry_files(p) == entry_files(a / "measurements" / p.parent.name / p.name)
                   for p in entries(full))
