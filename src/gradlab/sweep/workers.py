"""How local worker processes start and end, and how a sweep command ends.

A spawned worker imports torch, pandas and gradlab's training code before its
first run: about 1.3 s of one CPU, paid again by every worker. Where the platform has the
``forkserver`` start method, one server process pays it once and forks every
worker of a sweep from itself (:func:`worker_context`). The local executor
starts the server before its pool and stops it when the pool has ended
(:func:`stop_worker_server`), so that each sweep's workers see that sweep's
environment and standard streams; a command line starts it first thing
(:func:`start_worker_server`), so that its imports overlap the command's own
imports and planning.

The server does not import ``torch._dynamo`` (1 s): ``torch.optim`` imports it
when a run makes its optimiser, and an ensemble makes none
(:meth:`gradlab.training.ensemble.EnsembleOptimiser.member_state_dict`), so a
worker that trains single runs pays it at its first run's set-up, outside the
run's time per epoch, while the workers of ensembles never do.

Workers and commands end without tearing their modules down, once every file
is written (:func:`exit_quickly`): with torch, dynamo, pandas and matplotlib
loaded, the teardown takes 0.6-0.9 s.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.context
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

#: What a worker imports before its first task; a fork server imports them once for all the workers it forks.
WORKER_MODULES: tuple[str, ...] = ("torch", "pandas", "pyarrow.parquet", "gradlab.sweep.execute", "gradlab.training",
                                   "gradlab.training.ensemble_run", "gradlab.data.from_config")


def has_fork_server() -> bool:
    """Whether this platform starts processes from a fork server (Linux and macOS do; Windows does not)."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def worker_context() -> multiprocessing.context.BaseContext:
    """The context local workers start in: the fork server (importing :data:`WORKER_MODULES`), else spawn.

    Either way a worker starts from a fresh interpreter, never from a copy of the driver (which may hold
    threads, CUDA or OpenMP state that a plain fork would copy half-made).
    """
    if not has_fork_server():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", *WORKER_MODULES])
    return context


def start_worker_server() -> None:
    """Start the fork server now, where the platform has one (else do nothing); no-op if it runs already.

    Call it as early as a command knows it will start local workers. It returns at once; the server imports
    :data:`WORKER_MODULES` (and the main module, as a spawned worker does) in the background.
    """
    if has_fork_server():
        from multiprocessing import forkserver

        worker_context()  # sets what the server imports
        forkserver.ensure_running()


def stop_worker_server() -> None:
    """Stop the fork server once a sweep's workers have ended; the next sweep starts its own.

    A server keeps the environment and standard streams it started with: a later sweep's workers, forked
    by a new one, see that sweep's. Other code that starts processes from a fork server starts it again.

    The server is killed before it is stopped: asked to stop, it exits through the interpreter's teardown of
    torch, dynamo and pandas (0.7 s, which the sweep waited for). It holds nothing to save: it only forks,
    and the workers it forked have ended.
    """
    if not has_fork_server():
        return
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)  # CPython's own, used by its tests
    if stop is None:
        return
    pid = getattr(server, "_forkserver_pid", None)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    stop()  # closes its pipe, reaps it and removes its socket


def start_worker(parent_pid: int) -> None:
    """Start-up of a local worker process: exit with the driver, keep freed memory for reuse
    (:func:`gradlab.sweep.memory.keep_freed_memory`), and skip the interpreter's teardown when the pool ends it
    (:func:`_end_quickly`)."""
    from gradlab.sweep.memory import keep_freed_memory
    from gradlab.sweep.parent_watch import exit_with_parent

    exit_with_parent(parent_pid)
    keep_freed_memory()
    atexit.register(_end_quickly)


def _end_quickly() -> None:
    """End a pool worker without tearing its modules down: with torch and dynamo loaded that took 0.5-0.7 s.

    A worker exits by itself only after the pool sent it the end sentinel: its last result is sent, every
    run's files are written and renamed, and its exit status would be 0 (a task's exception, SystemExit
    included, goes back to the driver). Nothing is left to flush but the standard streams. Registered last,
    this runs before other exit handlers.
    """
    _flush_streams()
    os._exit(0)


def exit_quickly(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's ``main`` and exit with its status as ``sys.exit(main())`` would, without the teardown.

    For a script's ``if __name__ == "__main__":`` block. gradlab closes (and renames into place) every file it
    writes before its functions return; the exit handlers run and the standard streams are flushed here,
    and only the modules' teardown (0.6-0.9 s with torch, pandas and matplotlib loaded) is skipped. An
    exception other than ``SystemExit`` propagates, and the interpreter exits as usual.
    """
    try:
        status = main()
    except SystemExit as stop:
        status = stop.code
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:  # as sys.exit: any other object is printed to stderr, and the status is 1
        print(status, file=sys.stderr)
        code = 1
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython: what a normal exit runs first
    if run_exit_handlers is not None:
        run_exit_handlers()
    _flush_streams()
    os._exit(code)


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
