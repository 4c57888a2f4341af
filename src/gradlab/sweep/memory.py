"""How a training process asks the C allocator to keep the memory it frees.

A training step allocates and frees the same few megabytes of tensors over and
over. glibc's ``malloc`` serves a block above its mmap threshold (128 KiB at
first, raised to the largest block freed so far) with fresh pages from the
kernel and returns them when it is freed, and hands the free top of its heap
back above its trim threshold: every step then touches fresh pages again, and
each first touch is a page fault. On one CPU thread that was hundreds of faults
and 1-2 ms of an LSTM step of 8-10 ms (FSDD shapes: batch 100, T 32, hidden 32).

:func:`keep_freed_memory` raises both thresholds, so that freed blocks stay in
the process for the next step to reuse (a process's memory then stays at its
peak until it ends). gradlab's sweep workers call it when they start, as does the
local executor before it trains runs in its own process (``--workers 1``). It
changes nothing on a platform without glibc. ``GRADLAB_KEEP_FREED_MEMORY=0``
leaves glibc's own settings.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

#: Blocks above this many bytes still get their own pages (glibc's largest mmap threshold on 64-bit systems).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory above this many bytes at the heap's top is handed back to the kernel.
TRIM_THRESHOLD = 256 * 2**20

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers, from glibc's malloc.h
_ENVIRONMENT = "GRADLAB_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (module docstring); whether they were set.

    False, with nothing changed, where the C library is not glibc or ``GRADLAB_KEEP_FREED_MEMORY`` is ``0``.
    """
    if os.environ.get(_ENVIRONMENT, "1").strip() == "0" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; the trim threshold first, since setting either one ends glibc's own
    # adjustment of both.
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
