"""Drawing figure jobs into files, in this process or in forked worker processes.

The ``figures`` command (:mod:`gradlab.analysis.commands`) spends most of its
time drawing and rendering figures, one after another. :func:`draw_all` hands
them to worker processes while this process does other work (the findings
report), and prints what each figure wrote in the jobs' order, so the output is
the same as drawing them one by one.

Workers are forked, never spawned: a job's ``draw`` is a closure over loaded
tables, which cannot be pickled, and a forked worker inherits it (workers get
job indices). Workers only draw with matplotlib and write files; a parent that
imported torch (a sweep) is fine, as workers never call into torch. Where fork
is not available (Windows), figures are drawn in this process.

Workers ignore Ctrl-C: the parent, on Ctrl-C or any error, cancels the jobs
not started and ends the workers with SIGTERM, on which a worker removes the
temporary file it was writing. A worker whose parent was killed ends itself.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, TypeVar

from gradlab.store.atomic import write_atomic

Result = TypeVar("Result")
#: Seconds a stopped worker gets to remove its temporary file before it is killed.
STOP_GRACE = 5.0
#: Seconds between a worker's checks that its parent is alive.
PARENT_POLL = 0.5


@dataclass(frozen=True)
class FigureJob:
    """One figure: ``draw()`` returns a matplotlib ``Figure``, written as ``<name>.<format>`` per format.

    A ``ValueError`` or ``KeyError`` from ``draw`` means the data cannot make this figure: it is skipped
    with the note ``skipped <what>: <error>``.
    """

    name: str
    draw: Callable[[], object]
    what: str  # the figure as a skip note names it
    section: str | None = None  # the report section that links the figure; None: an answer's figure
    expected: bool = True  # False: the data is known not to make it (the report is not written as if drawn)


@dataclass(frozen=True)
class Drawn:
    """What drawing one job did: whether the figure was drawn, and the files it wrote."""

    drawn: bool
    paths: tuple[Path, ...] = ()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform says, else every CPU)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_jobs(jobs: int | None) -> None:
    """Raise ``ValueError`` unless ``jobs`` is None (every available CPU) or a whole number of at least 1."""
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a whole number of at least 1 (1 draws in this process) or None for "
                         f"every available CPU, got {jobs!r}")


def worker_count(jobs: int | None, figures: int) -> int:
    """How many processes draw ``figures`` figures; 1 draws them in this process.

    Args:
        jobs: processes asked for; None: :func:`available_cpus`.
        figures: the number of figure jobs (more processes than jobs would idle).
    """
    check_jobs(jobs)
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(available_cpus() if jobs is None else jobs, figures))


def draw_one(job: FigureJob, out: Path, formats: Sequence[str], dpi: int, say: Callable[[str], None]) -> Drawn:
    """Draw ``job`` and write it in every format into ``out``, calling ``say`` with each line to print."""
    try:
        figure = job.draw()
    except (ValueError, KeyError) as error:
        say(f"skipped {job.what}: {error}")
        return Drawn(False)
    paths = []
    for fmt in formats:
        path = out / f"{job.name}.{fmt}"
        write_atomic(path, lambda temporary, k=fmt: figure.savefig(temporary, format=k, dpi=dpi))
        paths.append(path)
        say(f"wrote {path}")
    return Drawn(True, tuple(paths))


def draw_all(
    jobs: Sequence[FigureJob],
    out: Path,
    *,
    formats: Sequence[str],
    dpi: int,
    workers: int,
    stream: TextIO,
    meanwhile: Callable[[], Result],
) -> tuple[list[Drawn], Result]:
    """Draw every job into ``out`` and run ``meanwhile``; print each job's lines to ``stream`` in job order.

    With one worker the jobs are drawn here, then ``meanwhile`` runs. With more, forked workers draw them
    while ``meanwhile`` runs here; the output (files, printed lines and their order) is the same.

    Args:
        jobs: the figures to draw.
        out: the folder the figures are written to (it exists).
        formats, dpi: see :func:`draw_one`.
        workers: processes that draw (see :func:`worker_count`).
        stream: where the ``wrote ...`` and ``skipped ...`` lines are printed.
        meanwhile: work of this process that needs no figure.

    Returns:
        What each job did, in job order, and what ``meanwhile`` returned.

    Raises:
        Whatever a ``draw`` raises other than ``ValueError`` and ``KeyError``, or a write (the first job's
        in job order), then whatever ``meanwhile`` raises. On any error or Ctrl-C the workers are stopped.
    """
    if workers <= 1:
        drawn = [draw_one(job, out, formats, dpi, lambda line: print(line, file=stream)) for job in jobs]
        return drawn, meanwhile()
    stream.flush()  # a forked worker must not hold a copy of unwritten output
    context = multiprocessing.get_context("fork")
    before = set(multiprocessing.active_children())
    # Forked workers take the jobs as initargs: fork passes them on without pickling.
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(os.getpid(), jobs, out, tuple(formats), dpi))
    try:
        # Workers fork at the first submit. Frozen objects are never scanned by a worker's garbage collector,
        # which would otherwise write to (and so copy) every page of the parent's objects it visits.
        gc.freeze()
        try:
            futures = [pool.submit(_draw_job, index) for index in range(len(jobs))]
        finally:
            gc.unfreeze()
        try:
            result, failure = meanwhile(), None
        except Exception as error:  # the figures' lines are printed first, as when drawing here
            result, failure = None, error
        drawn = [_collect(future, stream) for future in futures]
        if failure is not None:
            raise failure
    except BaseException:
        _stop(pool, before)
        raise
    pool.shutdown()
    return drawn, result


def _collect(future: Future, stream: TextIO) -> Drawn:
    drawn, lines = future.result()
    for line in lines:
        print(line, file=stream)
    return drawn


def _stop(pool: ProcessPoolExecutor, before: set[multiprocessing.process.BaseProcess]) -> None:
    """Cancel the jobs not started and end the workers (each removes the temporary file it was writing).

    The workers are the children started since ``before`` was taken (the pool has no public handle on them).
    """
    processes = [process for process in multiprocessing.active_children() if process not in before]
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(STOP_GRACE)
        if process.is_alive():  # stuck in C code, where the signal handler cannot run
            process.kill()
            process.join()
    pool.shutdown(wait=True)


# The worker's share of the parent's state, set in each forked worker by _start_worker.
_WORKER: tuple[Sequence[FigureJob], Path, tuple[str, ...], int] | None = None


class _Stopped(SystemExit):
    """Raised in a worker by SIGTERM: a write in progress removes its temporary file on the way out."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(1)


def _start_worker(parent: int, jobs: Sequence[FigureJob], out: Path, formats: tuple[str, ...], dpi: int) -> None:
    global _WORKER
    _WORKER = (jobs, out, formats, dpi)
    # Ctrl-C reaches the whole process group: the parent stops the workers, which must not die mid-write.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_stopped)
    threading.Thread(target=_stop_with_parent, args=(parent,), name="parent watch", daemon=True).start()


def _stop_with_parent(parent: int) -> None:
    """End this worker once ``parent`` is gone (killed): forked workers hold the pool's pipes open themselves,
    so without this they would wait for the next job for ever (as gradlab.sweep.parent_watch does for sweeps)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os.kill(os.getpid(), signal.SIGTERM)  # the main thread removes its temporary file and exits


def _draw_job(index: int) -> tuple[Drawn, list[str]]:
    """In a worker: draw job ``index``; returns what it did and the lines to print."""
    assert _WORKER is not None, "_draw_job runs in a worker started by _start_worker"
    jobs, out, formats, dpi = _WORKER
    lines: list[str] = []
    try:
        return draw_one(jobs[index], out, formats, dpi, lines.append), lines
    except _Stopped:
        os._exit(1)  # the pool would catch the exception and wait for the next job
