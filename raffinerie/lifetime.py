"""A child process that ends with raff: the one leaf every layer that starts processes may use.

Linux's PR_SET_PDEATHSIG (linux/prctl.h: option 1) has the kernel send a signal
to this process when its parent thread exits, even by kill -9, where no
clean-up of raff's can run. Elsewhere it is a no-op, and the callers keep a
second way (a watchdog, stdin's EOF).
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> bool:
    """Ask the kernel for `sig` when the parent exits. Returns False when `parent` (the pid it
    expects) is already gone: raff died before the request was made, and no signal will come."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return parent is None or os.getppid() == parent
