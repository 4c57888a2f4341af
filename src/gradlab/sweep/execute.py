"""Executing a sweep's runs: one picklable task per run, and executors that run tasks somewhere.

A :class:`RunTask` says everything a process needs to train one run into its
folder, an :class:`EnsembleTask` the same for runs that train together as one
ensemble: :func:`run_work` trains either in whatever process it is called (this
one, a local worker, a cluster job). An executor takes the pending tasks and calls
``report(task, metrics, error)`` as each one ends (one metrics row per run of
the task), from the driver's thread,
so the driver can update the summary and its progress. Every executor writes
the same run folders.

:class:`LocalExecutor` trains in this process (``workers=1``, with the data
the driver already loaded) or in a pool of worker processes, forked by a fork
server that did their imports once (spawned where the platform has none), that
exit when the driver dies (:mod:`gradlab.sweep.workers`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from gradlab.config import CHECKPOINT_EVERY, DataConfig, RunConfig

Report = Callable[["Task", "list[dict[str, Any]] | None", "BaseException | None"], None]

#: The ``status`` of a result row for a run that failed inside an ensemble whose other runs ended.
FAILED = "failed"


def failed_row(run_id: str, error: BaseException) -> dict[str, Any]:
    """The result row of a run that failed alone in its ensemble: its id, :data:`FAILED` and the error."""
    return {"run_id": run_id, "status": FAILED, "error": f"{type(error).__name__}: {error}"}


@dataclass(frozen=True)
class RunTask:
    """One run to train: its config (as a dict, so it pickles anywhere), folder, command line and threads."""

    run_id: str
    config: dict[str, Any]
    run_dir: str
    command: list[str] | None = None
    threads: int = 1
    # (lock file, token) of the sweep lock: every write of the run first checks it is still held
    lock: tuple[str, str] | None = None
    tensorboard: str | None = None  # the run's TensorBoard log folder (TensorBoardLogger); None: no logging
    checkpoint_every: float = CHECKPOINT_EVERY  # seconds of training between epoch checkpoints (0: every epoch)

    @property
    def run_ids(self) -> tuple[str, ...]:
        """The runs this task trains (one)."""
        return (self.run_id,)


@dataclass(frozen=True)
class EnsembleTask:
    """Runs that train together as one ensemble (:func:`gradlab.training.train_ensemble`), each into its folder."""

    members: tuple[RunTask, ...]

    @property
    def run_id(self) -> str:
        """A label for logs and job names: the first member's id and how many more there are."""
        return f"{self.members[0].run_id}+{len(self.members) - 1}"

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(member.run_id for member in self.members)

    @property
    def config(self) -> dict[str, Any]:
        """The first member's config (members share everything but seed, learning rate, clipping and init)."""
        return self.members[0].config

    @property
    def run_dir(self) -> str:
        return self.members[0].run_dir

    @property
    def threads(self) -> int:
        return self.members[0].threads

    @property
    def command(self) -> list[str] | None:
        return self.members[0].command

    @property
    def lock(self) -> tuple[str, str] | None:
        return self.members[0].lock

    @property
    def checkpoint_every(self) -> float:
        return self.members[0].checkpoint_every


Task = RunTask | EnsembleTask


@lru_cache(maxsize=4)
def _worker_data(data: DataConfig) -> Any:
    from gradlab.data.from_config import load_data

    return load_data(data, progress=False, num_workers=1)


def run_task(task: RunTask, data: Any = None, *, progress: bool = False) -> dict[str, Any]:
    """Train one run in this process (its device is checked here) and return its summary row.

    Args:
        task: the run.
        data: its loaded dataset; loaded (and cached per process) when None.
        progress: a progress bar over the run's steps.
    """
    return run_work(task, data, progress=progress)[0]


def run_work(task: Task, data: Any = None, *, progress: bool = False) -> list[dict[str, Any]]:
    """Train a task (one run, or an ensemble of runs) in this process; one summary row per run, in order.

    An ensemble member that fails alone gets a :func:`failed_row` while the
    others' rows are their summaries; an error that stops the whole task is
    raised. With ``task.lock``, every write first checks that the sweep lock
    is still held (:class:`gradlab.store.locking.SweepLockLost` stops the task).
    """
    import torch

    from gradlab.store.atomic import checked_writes
    from gradlab.training import train_ensemble, train_run
    from gradlab.training.ensemble_run import MemberFailures

    members = task.members if isinstance(task, EnsembleTask) else (task,)
    configs = [RunConfig.from_dict(member.config) for member in members]
    loggers = [_loggers(member) for member in members]  # made here, in the process that trains
    lock = task.lock
    writes = checked_writes(lambda path: _check_owner(lock, task.run_dir)) if lock is not None \
        else contextlib.nullcontext()
    previous = torch.get_num_threads()
    torch.set_num_threads(task.threads)
    try:
        with writes:
            data = data if data is not None else _worker_data(configs[0].data)
            if isinstance(task, RunTask):
                return [train_run(configs[0], data=data, run_dir=task.run_dir, command=task.command,
                                  progress=progress, callbacks=loggers[0],
                                  checkpoint_every=task.checkpoint_every).metrics]
            try:
                results = train_ensemble(configs, data=data, run_dirs=[member.run_dir for member in members],
                                         command=task.command, progress=progress, callbacks=loggers,
                                         checkpoint_every=task.checkpoint_every)
            except MemberFailures as failures:
                return [failed_row(config.run_id, failures.errors[config.run_id]) if result is None else result.metrics
                        for config, result in zip(configs, failures.results)]
            return [result.metrics for result in results]
    finally:
        torch.set_num_threads(previous)


def _loggers(task: RunTask) -> list[Any]:
    """The loggers a run's task asks for (a :class:`~gradlab.training.loggers.TensorBoardLogger`, or none)."""
    if task.tensorboard is None:
        return []
    from gradlab.training.loggers import TensorBoardLogger

    return [TensorBoardLogger(task.tensorboard)]


def _check_owner(lock: tuple[str, str], run_dir: str) -> None:
    """Raise :class:`~gradlab.store.locking.SweepLockLost` unless the sweep's lock is still the one the task was given.

    A job its command left running on purpose (``--on-interrupt detach``, so
    marked in ``<sweep>/executor.json``) writes on without that command's lock.
    """
    from gradlab.store import schema
    from gradlab.store.io import read_json
    from gradlab.store.locking import SweepLockLost, check_lock

    try:
        check_lock(*lock)
    except SweepLockLost:
        record = Path(run_dir).parent / schema.SWEEP_FILES["executor"]
        try:
            detached = record.is_file() and read_json(record).get("detached") is True
        except Exception:  # noqa: BLE001 - an unreadable record proves nothing: the lost lock stands
            detached = False
        if not detached:
            raise


def ensemble_min_members(runs: Sequence[RunConfig], executor: Executor | None) -> int:
    """Fewest members an ensemble of ``runs`` gets under ``executor`` (None: a :class:`LocalExecutor`).

    :data:`~gradlab.training.ensemble.grouping.CPU_MIN_MEMBERS` where the runs train on this machine's
    CPU (device ``cpu``, or ``auto`` without CUDA), where small ensembles cost more than they save;
    :data:`~gradlab.training.ensemble.grouping.DEFAULT_MIN_MEMBERS` elsewhere (a GPU, or a cluster's
    machines, whose devices this one cannot see).
    """
    from gradlab.training.ensemble.grouping import CPU_MIN_MEMBERS, DEFAULT_MIN_MEMBERS

    if executor is not None and not isinstance(executor, LocalExecutor):
        return DEFAULT_MIN_MEMBERS
    devices = {run.train.device for run in runs}
    if devices - {"cpu", "auto"}:
        return DEFAULT_MIN_MEMBERS
    if "auto" in devices:
        import torch

        if torch.cuda.is_available():
            return DEFAULT_MIN_MEMBERS
    return CPU_MIN_MEMBERS


class Executor(Protocol):
    """Runs tasks and reports each one's end; see the module docstring."""

    name: str

    def run(self, tasks: Sequence[Task], report: Report) -> None:
        """Run every task; call ``report`` once per task as it ends (its runs' metrics, or the error it raised)."""


class LocalExecutor:
    """Runs on this machine: in this process, or in ``workers`` worker processes (:mod:`gradlab.sweep.workers`).

    Args:
        workers: runs in parallel (processes from a fork server, else spawned); on one GPU they share it.
        datasets: data the driver already loaded, by DataConfig (used in-process).
        progress: per-run progress bars (in-process only).
    """

    name = "local"

    def __init__(self, workers: int = 1, *, datasets: Mapping[DataConfig, Any] | None = None,
                 progress: bool = False) -> None:
        self.workers = workers
        self.datasets = dict(datasets or {})
        self.progress = progress

    def run(self, tasks: Sequence[Task], report: Report) -> None:
        if self.workers == 1:
            from gradlab.sweep.memory import keep_freed_memory

            keep_freed_memory()  # as a worker process does (gradlab.sweep.workers.start_worker)
            for task in tasks:
                data = self.datasets.get(RunConfig.from_dict(task.config).data)
                try:
                    metrics = run_work(task, data, progress=self.progress)
                except Exception as error:  # noqa: BLE001 - one failed run must not stop the others
                    report(task, None, error)
                else:
                    report(task, metrics, None)
            return
        from gradlab.sweep.workers import start_worker, start_worker_server, stop_worker_server, worker_context

        start_worker_server()  # running already where the command started it early
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=worker_context(), initializer=start_worker,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(run_work, task): task for task in tasks}
            try:
                for future in as_completed(futures):
                    error = future.exception()
                    report(futures[future], None if error else future.result(), error)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        stop_worker_server()  # its workers have ended: the next sweep's see that sweep's environment
