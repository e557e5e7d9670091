"""Process tuning for the commands that move data: glibc's allocator.

A point's numpy temporaries are a few MB each. glibc hands out blocks above
its mmap threshold (128 kB at start, adapting upwards only slowly) with a
fresh mmap and returns them with munmap, so every run page-faults its
arrays in anew: measured here, that made a 1000-event point cost 20 ms
instead of 12 ms, in the emulator and in raff alike. Keeping such blocks in
the heap (up to 32 MB, glibc's largest threshold) and returning memory to
the system only above 256 MB of free heap removes that. No-op where glibc is
not the allocator.
"""

from __future__ import annotations

import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # from <malloc.h>
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024


def tune_allocator() -> bool:
    """Whether glibc took the settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
