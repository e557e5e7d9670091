"""The analysis worker processes: each leads a process group, which ends with its job and with raff.

A distillery may start processes and leave them running, call os._exit, or
outlive a raff killed with -9: none of it may outlast the build.
"""

from __future__ import annotations

import os
import time

from raffinerie.lifetime import die_with_parent


def worker_init(parent: int | None = None) -> None:
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


_LEADS_GROUP = False  # this process is a worker that `worker_init` made a group leader
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

