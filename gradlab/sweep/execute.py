"""Executing a sweep's runs: one picklable task per run, and executors that run tasks somewhere.

A :class:`RunTask` says everything a process needs to train one run into its
folder: :func:`run_task` does it in whatever process it is called (this one,
a local worker, a cluster job). An executor takes the pending tasks and calls
``report(task, metrics, error)`` as each one ends, from the driver's thread,
so the driver can update the summary and its progress. Every executor writes
the same run folders.

:class:`LocalExecutor` trains in this process (``workers=1``, with the data
the driver already loaded) or in a pool of spawned worker processes that exit
when the driver dies.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from gradlab.config import DataConfig, RunConfig

Report = Callable[["RunTask", "dict[str, Any] | None", "BaseException | None"], None]


@dataclass(frozen=True)
class RunTask:
    """One run to train: its config (as a dict, so it pickles anywhere), folder, command line and threads."""

    run_id: str
    config: dict[str, Any]
    run_dir: str
    command: list[str] | None = None
    threads: int = 1


@lru_cache(maxsize=4)
def _worker_data(data: DataConfig) -> Any:
    from gradlab.data.from_config import load_data

    return load_data(data, progress=False, num_workers=1)


def run_task(task: RunTask, data: Any = None, *, progress: bool = False) -> dict[str, Any]:
    """Train ``task`` in this process (its device is checked here) and return its summary row.

    Args:
        task: the run.
        data: its loaded dataset; loaded (and cached per process) when None.
        progress: a progress bar over the run's steps.
    """
    import torch

    from gradlab.training import train_run

    config = RunConfig.from_dict(task.config)
    previous = torch.get_num_threads()
    torch.set_num_threads(task.threads)
    try:
        data = data if data is not None else _worker_data(config.data)
        return train_run(config, data=data, run_dir=task.run_dir, command=task.command, progress=progress).metrics
    finally:
        torch.set_num_threads(previous)


class Executor(Protocol):
    """Runs tasks and reports each one's end; see the module docstring."""

    name: str

    def run(self, tasks: Sequence[RunTask], report: Report) -> None:
        """Run every task; call ``report`` once per task as it ends (metrics, or the error it raised)."""


class LocalExecutor:
    """Runs on this machine: in this process, or in ``workers`` spawned processes.

    Args:
        workers: runs in parallel (processes, spawn context); on one GPU they share it.
        datasets: data the driver already loaded, by DataConfig (used in-process).
        progress: per-run progress bars (in-process only).
    """

    name = "local"

    def __init__(self, workers: int = 1, *, datasets: Mapping[DataConfig, Any] | None = None,
                 progress: bool = False) -> None:
        self.workers = workers
        self.datasets = dict(datasets or {})
        self.progress = progress

    def run(self, tasks: Sequence[RunTask], report: Report) -> None:
        if self.workers == 1:
            for task in tasks:
                data = self.datasets.get(RunConfig.from_dict(task.config).data)
                try:
                    metrics = run_task(task, data, progress=self.progress)
                except Exception as error:  # noqa: BLE001 - one failed run must not stop the others
                    report(task, None, error)
                else:
                    report(task, metrics, None)
            return
        from gradlab.parent_watch import exit_with_parent

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(run_task, task): task for task in tasks}
            try:
                for future in as_completed(futures):
                    error = future.exception()
                    report(futures[future], None if error else future.result(), error)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
