"""Worker processes that exit when the process that started them is gone.

A killed sweep does not take its ``ProcessPoolExecutor`` workers with it: they
keep training and writing into the sweep folder, where a resumed sweep races
them. :func:`exit_with_parent` is a pool initializer that starts a daemon
thread in each worker; when the process that started the pool is gone, the
thread ends the worker with ``os._exit``, which needs no cooperation from the
task running. A spawned worker is that process's child: it watches for its
parent to change (the parent died and the worker was handed to init or a
subreaper). A worker forked by a fork server is the server's child, and the
server outlives the driver while workers hold it: such a worker watches for
the driver's process to end.

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
        parent_pid: the PID of the process that started the pool (this
            process's parent, or the driver a fork server forked it for);
            None: the current parent.
        poll_every: seconds between checks of the parent.
    """
    if not poll_every > 0:
        raise ValueError(f"poll_every must be > 0 seconds, got {poll_every!r}")
    parent = os.getppid() if parent_pid is None else parent_pid
    child = os.getppid() == parent  # else a fork server's child, or the parent is already gone
    if not child and not running(parent):
        _exit_orphaned(parent)
    threading.Thread(target=_watch, args=(parent, poll_every, child), name="parent watch", daemon=True).start()


def _watch(parent: int, poll_every: float, child: bool = True) -> None:
    stop = threading.Event()  # never set: wait() is an interruptible sleep
    while not stop.wait(poll_every):
        if (os.getppid() != parent) if child else not running(parent):
            _exit_orphaned(parent)


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie, ended but not yet reaped, has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc (macOS): a zombie counts as running until its parent reaps it
        return True


def _exit_orphaned(parent: int) -> None:
    try:
        print(f"worker {os.getpid()}: parent process {parent} is gone; exiting", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr was a pipe to the dead parent
        pass
    os._exit(ORPHAN_EXIT_STATUS)
