"""A real XRootD server on loopback, for the shared-cache tests and benchmark.

Debian's `xrootd-server` (installed by `.ci/run`). It refuses to run as
root, so its folder is given to the `xrootd` user and it is started with
`-R xrootd`. XRootD 5.5 has no directive to bind its listening socket to one
address, so it is started IPv4-only (`-I v4`) and told to accept clients
from the loopback only (`xrd.allow host localhost` / `127.0.0.1`): a
connection from any other address is reset at once. The tests skip when
the binary, the `xrootd` user or the Python client is missing.

`running_server()` is a context manager; `xrootd_server` the session
fixture built on it (stopped at the end of the session).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port, listening

CONFIG = """\
all.export /
oss.localroot {data}
all.adminpath {admin}
all.pidpath {admin}
xrd.allow host localhost
xrd.allow host 127.0.0.1
xrd.port {port}
"""


@dataclass
class XRootDServer:
    port: int
    data: Path          # the server's folder: URL path /x is data/x
    base: Path
    proc: subprocess.Popen

    def url(self, path: str) -> str:
        return f"root://127.0.0.1:{self.port}//{path.lstrip('/')}"

    def local(self, path: str) -> Path:
        """Where the server keeps what the URL of `path` names."""
        return self.data / path.lstrip("/")

    def mkdir(self, path: str, owner: str | None = "xrootd") -> Path:
        """A folder on the server (owned by `owner`: None leaves it root's, so unwritable)."""
        folder = self.local(path)
        folder.mkdir(parents=True, exist_ok=True)
        if owner and os.geteuid() == 0:
            shutil.chown(folder, owner, owner)
        return folder


def missing() -> str | None:
    """Why the server cannot run here, or None."""
    if shutil.which("xrootd") is None:
        return "xrootd binary not installed (apt-get install xrootd-server)"
    try:
        import fsspec_xrootd  # noqa: F401
        import XRootD.client  # noqa: F401
    except ImportError as exc:
        return f"XRootD Python client not installed ({exc.name})"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("xrootd")
        except KeyError:
            return "no xrootd user to run the server as"
    return None


@contextlib.contextmanager
def running_server(timeout: float = 30.0):
    """Start xrootd on a free loopback port; stop it and remove its folder afterwards."""
    why = missing()
    if why:
        raise RuntimeError(why)
    base = Path(tempfile.mkdtemp(prefix="raff-xrootd-"))
    data, admin = base / "data", base / "admin"
    data.mkdir()
    admin.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        for path in (base, data, admin):
            shutil.chown(path, "xrootd", "xrootd")
    proc = None
    try:
        for attempt in range(3):
            port = free_port()
            config = base / "xrootd.cfg"
            config.write_text(CONFIG.format(data=data, admin=admin, port=port))
            command = ["xrootd", "-c", str(config), "-I", "v4", "-l", str(admin / "xrootd.log")]
            if as_root:
                command += ["-R", "xrootd"]
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None and not listening(port):
                time.sleep(0.05)
            if proc.poll() is None and listening(port):
                break
            _stop(proc)
            proc = None
        if proc is None:
            log = admin / "xrootd.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"xrootd did not start:\n{tail}")
        yield XRootDServer(port, data, base, proc)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def xrootd_server():
    why = missing()
    if why:
        pytest.skip(why)
    with running_server() as server:
        yield server
