"""Worker processes that exit when the process that started them is gone.

A killed sweep does not take its ``ProcessPoolExecutor`` workers with it: they
keep training and writing into the sweep folder, where a resumed sweep races
them. :func:`exit_with_parent` is a pool initializer that starts a daemon
thread in each worker; when the worker's parent process changes (the parent
died and the worker was handed to init or a subreaper), the thread ends the
worker with ``os._exit``, which needs no cooperation from the task running.

Linux's ``prctl(PR_SET_PDEATHSIG)`` is not used: it fires when the *thread*
that started the worker ends, and pools start workers from whichever thread
submits, so it could kill healthy workers of a live parent.
"""

from __future__ import annotations

import os
import sys
import threading

#: Exit status of a worker ended because its parent is gone.
ORPHAN_EXIT_STATUS = 70


def exit_with_parent(parent_pid: int | None = None, poll_every: float = 0.5) -> None:
    """Make this process exit within ``poll_every`` seconds of its parent's death.

    Use as a pool initializer, passing the parent's PID so that a parent
    that dies before the worker starts is noticed too::

        ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"),
                            initializer=exit_with_parent, initargs=(os.getpid(),))

    Args:
        parent_pid: the PID of the process that started this one; None: the
            current parent.
        poll_every: seconds between checks of the parent.
    """
    if not poll_every > 0:
        raise ValueError(f"poll_every must be > 0 seconds, got {poll_every!r}")
    parent = os.getppid() if parent_pid is None else parent_pid
    if os.getppid() != parent:
        _exit_orphaned(parent)
    threading.Thread(target=_watch, args=(parent, poll_every), name="parent watch", daemon=True).start()


def _watch(parent: int, poll_every: float) -> None:
    stop = threading.Event()  # never set: wait() is an interruptible sleep
    while not stop.wait(poll_every):
        if os.getppid() != parent:
            _exit_orphaned(parent)


def _exit_orphaned(parent: int) -> None:
    try:
        print(f"worker {os.getpid()}: parent process {parent} is gone; exiting", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr was a pipe to the dead parent
        pass
    os._exit(ORPHAN_EXIT_STATUS)
