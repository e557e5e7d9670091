"""Shared fixtures: running `raff` as a user would, and the real reference data."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent

# Every test starts raff, its emulator and analysis workers as new processes; where
# PYTHONDONTWRITEBYTECODE is set (as on this project's machines), each one compiled
# raffinerie from source again. Bytecode goes to a folder outside the tree instead:
# the suite took 822 s with 1,592 s of CPU, 750 s with 1,416 s this way (2 cores).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX",
                      os.path.join(tempfile.gettempdir(), f"raff-test-pycache-{os.getuid()}"))
# The memo of large YAML (raffinerie/memo.py) likewise goes beside it, not into the
# user's ~/.cache; tests/test_memo.py sets its own folders.
os.environ.setdefault("RAFF_MEMO_DIR", os.path.join(tempfile.gettempdir(), f"raff-test-memo-{os.getuid()}"))

EXAMPLES = ROOT / "examples"
SHARED = Path(os.environ.get("RAFF_SHARED_DATA", ROOT.parent / "shared" / "data"))
DR012 = SHARED / "reference" / "datenraffinerie-0.1.2"


# Hypothesis: no deadline and no too-slow check for any test. The suite runs on
# parallel workers beside real emulators; a draw that takes 1 s on a busy
# machine is not a failure of the code under test.
settings.register_profile("raffinerie", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("raffinerie")

# The longest files first (measured with --durations=0): with `--dist loadfile
# --no-loadscope-reorder` xdist hands files to the workers in collection order
# (by default it would sort them by their number of tests, and the one-test
# scale file would start last and run alone at the end).
LONGEST_FIRST = ("test_scale.py", "test_analysis_synthetic.py", "test_build.py", "test_text_user.py",
                 "test_analysis_real.py", "test_hostile_damage.py", "test_damage.py",
                 "test_analyses.py", "test_hexactrl.py", "test_build_controls.py",
                 "test_hostile_rawimport.py", "test_uptodate.py", "test_hostile_runner.py",
                 "test_hostile_config.py", "test_hostile_remote.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file keeps its order


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts connections on loopback `port`."""
    import socket

    with socket.socket() as s:
        s.settimeout(timeout)
        return s.connect_ex(("127.0.0.1", port)) == 0


def shared(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return [l for l in (self.out + self.err).splitlines() if l.strip()]


def summary_files(cache: Path) -> list[Path]:
    """The measurement files of a cache, in a stable order."""
    return sorted((Path(cache) / "measurements").glob("*/*/measurement.zarr.zip"))


def damage_member(zip_path: Path, member: str = "summary/c/0/0", offset: int = -3) -> None:
    """Flip one byte inside a member of a measurement zip (its stored bytes, not the directory)."""
    import zipfile

    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(member)
    data = bytearray(Path(zip_path).read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + (offset % info.compress_size)] ^= 0xFF
    Path(zip_path).write_bytes(bytes(data))


def measurement_attributes(cache: Path) -> list[dict]:
    import json
    import zipfile

    out = []
    for path in summary_files(cache):
        with zipfile.ZipFile(path) as zf:
            out.append(json.loads(zf.read("zarr.json"))["attributes"])
    return out


def run_raff(*args: str, cwd: Path | None = None, env: dict | None = None,
             timeout: float = 120) -> Result:
    """Run `python -m raffinerie ARGS` in a subprocess, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("RAFF_CACHE", "RAFF_CONFIG")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "raffinerie", *map(str, args)],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def raff():
    return run_raff


def assert_clean_error(result: Result, *needles: str, code: int = 1) -> None:
    """A user error: the expected exit code, the message, and no traceback."""
    text = result.out + result.err
    assert result.code == code, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"


DAQ_DEFAULT = """\
server: {NChips: 3, NEvents: 100, zmqPushPull_port: 8888}
client: {hw_type: LD, serverIP: localhost, data_push_port: 8888}
"""


class LibraryFolder:
    """A throw-away library: write files, get the main config path."""

    def __init__(self, root: Path):
        self.root = root
        pod = (EXAMPLES / "defaults" / "V3LDHexaboard-poweron-default.yaml").read_text()
        self.write("defaults/pod.yaml", pod)
        self.write("defaults/daq.yaml", DAQ_DEFAULT)

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def daq(self, name: str = "scan", parameters: str = "", extra: str = "",
            server_override: str | None = None) -> str:
        """A daq procedure entry (YAML text, indented for a list)."""
        text = f"""\
        - name: {name}
          type: daq
          target_settings:
            power_on_default: ./defaults/pod.yaml
          daq_settings:
            default: ./defaults/daq.yaml
        """
        text = textwrap.dedent(text)
        if server_override:
            text += f"    server_override: {server_override}\n"
        if extra:
            text += textwrap.indent(textwrap.dedent(extra), "  ")
        if parameters:
            text += "  parameters:\n" + textwrap.indent(textwrap.dedent(parameters), "    ")
        return text

    def main(self, procedures: str, extra: str = "") -> Path:
        body = "procedures:\n" + textwrap.indent(procedures, "  ") + textwrap.dedent(extra)
        return self.write("main.yaml", body)


@pytest.fixture
def libdir(tmp_path) -> LibraryFolder:
    return LibraryFolder(tmp_path)


def emulator_pids(parent: int | None = None, parents: set[int] | None = None) -> list[int]:
    """Pids of running `raffinerie emulator` processes (children of `parent` if given)."""
    parents = parents if parents is not None else ({parent} if parent is not None else None)
    out = []
    for pid, cmd, ppid in _processes():
        if b"raffinerie" in cmd and b"emulator" in cmd:
            if parents is None or ppid in parents:
                out.append(pid)
    return out


def _processes():
    """(pid, arguments, ppid) of every live process that can be read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":       # a zombie has ended; only its parent's wait is missing
            continue
        yield int(entry.name), cmd, int(fields[1])


# Every process a test starts inherits this variable (run_raff and the tests'
# own Popen copy os.environ), so a process still running after its test is
# found by it wherever it was re-parented: a raff, an emulator, a distillery's
# child, an analysis worker or multiprocessing's resource tracker.
# The mark names this process, so under pytest-xdist each worker (its own
# process, importing this file itself) marks only its own tree: a worker never
# sees another worker's processes, nor the controller (whose mark the workers
# inherit, then replace here), as its leaks.
SESSION_MARK = "RAFF_TEST_SESSION"
os.environ[SESSION_MARK] = f"{os.getpid()}-{time.time_ns()}"


def _is_test_runner_helper(cmd: list[bytes]) -> bool:
    """A helper of the test runner itself, living as long as this process, so not a leak:
    multiprocessing's resource tracker or forkserver (a test that uses multiprocessing in
    this process starts one; it ends when its pipe from here closes), or an execnet
    gateway (pytest-xdist's way of starting a worker, should one ever start below us)."""
    text = b" ".join(cmd)
    return (b"multiprocessing.resource_tracker" in text or b"multiprocessing.forkserver" in text
            or b"exec(eval(sys.stdin.readline()))" in text)


def marked_pids() -> dict[int, str]:
    """Live processes started under this test session, other than this one."""
    needle = session_needle()
    out = {}
    for pid, cmd, ppid in _processes():
        if pid == os.getpid() or (ppid == os.getpid() and _is_test_runner_helper(cmd)):
            continue
        if _carries_mark(pid, needle):
            out[pid] = b" ".join(cmd).decode(errors="replace").strip()
    return out


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """Fail a test that leaves a process of its own running once it ends.

    Processes that were running before it (servers of session- or
    module-scoped fixtures, set up first) are not its own. A process is given
    5 s to finish its exit, then killed, so one leak does not fail later tests.
    """
    before = set(marked_pids())
    yield
    deadline = time.monotonic() + 5
    while True:
        left = {pid: cmd for pid, cmd in marked_pids().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if left:
        listing = "; ".join(f"{pid}: {cmd[:160]}" for pid, cmd in sorted(left.items()))
        pytest.fail(f"processes outlived the test: {listing}")


def session_needle() -> bytes:
    """The environment entry that marks the processes of this test session."""
    return f"{SESSION_MARK}={os.environ[SESSION_MARK]}".encode()


def _carries_mark(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def no_emulator_outlives_the_tests():
    """Fail the run if an emulator started during it is still running at its end.

    Those are the ones carrying this session's mark, wherever they were
    re-parented (to init when the raff that started them died, or to a raff
    still running); others on the machine, and other xdist workers', are not ours.
    """
    needle = session_needle()
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = {pid for pid in emulator_pids() if _carries_mark(pid, needle)}
        if not left:
            return
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    pytest.fail(f"emulator processes outlived the tests: {sorted(left)}")

