"""Runs as Ray tasks, one per run, on an existing Ray cluster or on a local Ray started for the sweep.

Each task calls :func:`gradlab.sweep.executors.common.run_remote` on whichever
node Ray places it, with the CPUs and GPUs it asks for; its output and
traceback go to ``<sweep>/logs/<run id>.log``. Every node needs gradlab
installed (the same version as the driver) and the sweep folder at the same
path. A task whose worker dies (out of memory, a lost node) is retried by Ray
(three times by default), each retry continuing the run from its last epoch
checkpoint, before it is reported as failed.

Ray tasks belong to the driver that submitted them: when the driver exits,
Ray stops them. So an interrupted Ray sweep can only cancel (``--on-interrupt
detach`` is refused); keep the driver alive (``tmux``, ``nohup``, or a Ray job:
``ray job submit -- python experiments/compare_cells.py --executor ray ...``)
for a sweep that must outlive a terminal, and ``--resume`` finishes any
sweep that was stopped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradlab.sweep.execute import Report, Task
from gradlab.sweep.executors.common import EXTRAS, LOG_FOLDER, StatusLine, TaskFailed, require_engine, run_remote

#: Why ``--on-interrupt detach`` is refused for Ray.
NO_DETACH = ("--on-interrupt detach is not available with --executor ray: Ray stops a driver's tasks when the driver "
             "exits. Keep the driver running (tmux, nohup, or 'ray job submit -- <command>'), or use --executor "
             "submitit on Slurm to detach")


class RayExecutor:
    """Runs each task as one Ray task.

    Args:
        sweep_dir: the sweep folder (at the same path on every node); logs go to ``<sweep>/logs/``.
        address: the Ray cluster (e.g. ``ray://head:10001`` or ``auto``); None starts a local Ray
            (or joins the one ``RAY_ADDRESS`` names). An already initialised Ray is used as it is.
        cpus_per_task: CPUs Ray reserves for each run.
        gpus_per_task: GPUs Ray reserves for each run.
        on_interrupt: only ``cancel`` (see the module docstring).
        poll_s: the longest wait between progress updates.
        progress: print ``done / running or queued / failed`` as they change.
        stream: where notes are printed (default standard error).
    """

    name = "ray"
    description = "as Ray tasks"

    def __init__(self, sweep_dir: str | os.PathLike, *, address: str | None = None, cpus_per_task: float = 1,
                 gpus_per_task: float = 0, on_interrupt: str = "cancel", poll_s: float = 1.0, progress: bool = True,
                 stream: Any = None) -> None:
        if on_interrupt == "detach":
            raise ValueError(NO_DETACH)
        if on_interrupt != "cancel":
            raise ValueError(f"on_interrupt must be 'cancel' for Ray, got {on_interrupt!r}")
        if not cpus_per_task > 0 or not gpus_per_task >= 0:
            raise ValueError(f"cpus_per_task must be > 0 and gpus_per_task >= 0, got {cpus_per_task}, {gpus_per_task}")
        self.sweep_dir = Path(sweep_dir)
        self.log_dir = self.sweep_dir / LOG_FOLDER
        self.address, self.cpus_per_task, self.gpus_per_task = address, cpus_per_task, gpus_per_task
        self.poll_s, self.progress = poll_s, progress
        self.stream = stream or sys.stderr

    def log_path(self, task: Task) -> Path:
        """The log file of ``task``'s Ray task."""
        return self.log_dir / f"{task.run_id}.log"

    def run(self, tasks: Sequence[Task], report: Report) -> None:
        """Submit every task, then report each as it ends; see the class docstring."""
        if not tasks:
            return
        ray = require_engine("ray", EXTRAS["ray"])
        connected_here = not ray.is_initialized()
        if connected_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        try:
            self._run(ray, tasks, report)
        finally:
            if connected_here:
                ray.shutdown()  # stops a Ray started here; only disconnects from an existing cluster

    def _run(self, ray: Any, tasks: Sequence[Task], report: Report) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        remote = ray.remote(run_remote)
        pending = {remote.options(name=f"gradlab {task.run_id}", num_cpus=self.cpus_per_task,
                                  num_gpus=self.gpus_per_task).remote(task, str(self.log_path(task))): task
                   for task in tasks}
        failed = done = 0
        status = StatusLine("ray", len(tasks), enabled=self.progress, stream=self.stream)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        metrics, error = ray.get(ref), None
                    except ray.exceptions.RayError as raised:
                        metrics, error = None, TaskFailed(task.run_id, _reason(ray, raised), self.log_path(task))
                    failed, done = failed + (error is not None), done + 1
                    report(task, metrics, error)
                status.update(done, len(pending), None, failed)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            print(f"interrupted: cancelled {len(pending)} Ray tasks: {', '.join(t.run_id for t in pending.values())}; "
                  "--resume retrains them", file=self.stream)
            raise


def _reason(ray: Any, error: BaseException) -> str:
    """The run's own error for a task that raised; Ray's (worker or node lost, out of memory) otherwise."""
    cause = getattr(error, "cause", None) if isinstance(error, ray.exceptions.RayTaskError) else None
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else 'no message'}"
