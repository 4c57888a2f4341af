"""Runs as Slurm jobs through submitit, or as submitit's local processes where there is no Slurm.

submitit's ``AutoExecutor`` picks the engine: a Slurm job array (one array
element per task, at most ``array_parallelism`` at once) when Slurm is
present, else one local process per task (at most ``array_parallelism`` at
once, submitted as earlier ones end). A task is one run, or an ensemble of
runs that train together (:mod:`gradlab.training.ensemble.grouping`). Either way each
task is pickled into ``<sweep>/logs/``, unpickled by a fresh Python process,
and trained by :func:`gradlab.sweep.executors.common.run_remote`; that
process's standard output and error are ``<sweep>/logs/<job id>_0_log.out``
and ``.err``.

``time_limit`` is what each run may take, so a job that trains an ensemble
of N runs is given N times as long (:meth:`SubmititExecutor.job_time_limit`):
an ensemble never does more work than its runs would alone. Tasks with
different limits go into separate job arrays, since an array has one limit.
Where the Slurm partition caps a job's time (``MaxTime``), ensembles are cut
to as many runs as fit (:meth:`SubmititExecutor.members_that_fit`), since a
job asking for more would wait in the queue for ever.

The jobs are recorded in ``<sweep>/executor.json`` while any may run, so a
driver that dies or detaches leaves enough behind for ``--resume`` to ask
Slurm (or this machine) whether they still run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gradlab.sweep.execute import Report, Task
from gradlab.sweep.executors.common import (
    EXTRAS,
    LOG_FOLDER,
    StatusLine,
    TaskFailed,
    forget_record,
    mark_detached,
    require_engine,
    run_remote,
    write_record,
)

ON_INTERRUPT: tuple[str, ...] = ("cancel", "detach")
#: Seconds between checks on the jobs by default: locally, and on Slurm (where each check may ask sacct).
POLL_S: dict[str, float] = {"local": 0.2, "slurm": 10.0}


class SubmititExecutor:
    """Runs each task as a submitit job: a Slurm array element, or a local process without Slurm.

    Args:
        sweep_dir: the sweep folder (on a filesystem the workers share); logs go to ``<sweep>/logs/``.
        cluster: ``None`` (Slurm when present, else local), ``"slurm"`` or ``"local"``.
        partition: Slurm partition (default: the cluster's).
        time_limit: minutes each run may take; a job that trains an ensemble of N runs may take N times as
            long before Slurm (or submitit locally) stops it.
        cpus_per_task: CPUs per job (one run or one ensemble); it trains with the task's own torch threads.
        gpus_per_task: GPUs per job (locally: the first N visible GPUs; 0 hides them).
        mem_gb: memory per job in GB (Slurm; default: the cluster's).
        array_parallelism: jobs at once (default: Slurm's 256; locally the number of CPUs).
        sbatch: more ``#SBATCH`` settings, e.g. ``{"account": "lab", "qos": "short"}``.
        on_interrupt: on Ctrl-C, ``cancel`` the submitted jobs or ``detach`` (leave them running).
        poll_s: seconds between checks on the jobs (default 0.2 locally, 10 on Slurm).
        progress: print ``done / running / queued / failed`` as they change.
        stream: where notes are printed (default standard error).
    """

    name = "submitit"
    description = "as submitit jobs (a Slurm job array, or local processes where there is no Slurm)"

    def __init__(self, sweep_dir: str | os.PathLike, *, cluster: str | None = None, partition: str | None = None,
                 time_limit: int = 60, cpus_per_task: int = 1, gpus_per_task: int = 0, mem_gb: float | None = None,
                 array_parallelism: int | None = None, sbatch: Mapping[str, str] | None = None,
                 on_interrupt: str = "cancel", poll_s: float | None = None, progress: bool = True,
                 stream: Any = None) -> None:
        if cluster not in (None, "slurm", "local"):
            raise ValueError(f"cluster must be None (automatic), 'slurm' or 'local', got {cluster!r}")
        if on_interrupt not in ON_INTERRUPT:
            raise ValueError(f"on_interrupt must be one of {ON_INTERRUPT}, got {on_interrupt!r}")
        for label, value, least in (("time_limit", time_limit, 1), ("cpus_per_task", cpus_per_task, 1),
                                    ("gpus_per_task", gpus_per_task, 0),
                                    ("array_parallelism", array_parallelism or 1, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{label} must be an integer >= {least}, got {value!r}")
        if mem_gb is not None and not mem_gb > 0:
            raise ValueError(f"mem_gb must be positive, got {mem_gb!r}")
        self.sweep_dir = Path(sweep_dir)
        self.log_dir = self.sweep_dir / LOG_FOLDER
        self.cluster, self.partition, self.time_limit = cluster, partition, time_limit
        self.cpus_per_task, self.gpus_per_task, self.mem_gb = cpus_per_task, gpus_per_task, mem_gb
        self.array_parallelism, self.sbatch = array_parallelism, dict(sbatch or {})
        self.on_interrupt, self.poll_s, self.progress = on_interrupt, poll_s, progress
        self.stream = stream or sys.stderr

    def _engine(self) -> Any:
        """submitit's AutoExecutor with this executor's settings (creates ``<sweep>/logs/``)."""
        submitit = require_engine("submitit", EXTRAS["submitit"])
        engine = submitit.AutoExecutor(folder=self.log_dir, cluster=self.cluster)
        # signal_delay_s=0: submitit asks Slurm to warn a job 90 s before its limit and then stops it, which
        # only serves jobs that checkpoint through submitit; gradlab's runs checkpoint every epoch themselves,
        # so each job keeps its whole limit (a 2-minute job ended after 30 s).
        slurm = {"slurm_partition": self.partition, "slurm_array_parallelism": self.array_parallelism,
                 "slurm_additional_parameters": self.sbatch or None, "slurm_signal_delay_s": 0}
        engine.update_parameters(name=f"gradlab-{self.sweep_dir.name}", timeout_min=self.time_limit,
                                 cpus_per_task=self.cpus_per_task, gpus_per_node=self.gpus_per_task,
                                 mem_gb=self.mem_gb, **{key: value for key, value in slurm.items() if value is not None})
        return engine

    def job_time_limit(self, runs: int) -> int:
        """Minutes the job of a task with ``runs`` runs may take: ``time_limit`` for each of them."""
        return self.time_limit * runs

    def members_that_fit(self, max_members: int) -> int:
        """Most runs per ensemble whose job fits the Slurm partition's time cap (``max_members`` where none caps it).

        Raises:
            ValueError: even one run's ``time_limit`` exceeds the partition's cap.
        """
        cap = None if self.cluster == "local" else partition_time_limit(self.partition)
        if cap is None:
            return max_members
        name = f"Slurm partition {self.partition}" if self.partition else "the default Slurm partition"
        if self.time_limit > cap:
            raise ValueError(f"--time-limit {self.time_limit} is more than {name} allows a job ({cap} min); "
                             f"give at most --time-limit {cap}, or another --partition")
        return min(max_members, cap // self.time_limit)

    def _submit(self, engine: Any, batch: Sequence[Task]) -> list[Any]:
        """Submit ``batch`` (one job array per distinct time limit); its jobs, in the order of ``batch``."""
        by_limit: dict[int, list[int]] = {}
        for index, task in enumerate(batch):
            by_limit.setdefault(self.job_time_limit(len(task.run_ids)), []).append(index)
        jobs: list[Any] = [None] * len(batch)
        for limit, indices in by_limit.items():
            engine.update_parameters(timeout_min=limit)
            try:
                submitted = engine.map_array(run_remote, [batch[index] for index in indices])
            except (RuntimeError, OSError) as error:  # sbatch refused: partition, account, limits
                raise ValueError(f"submitting {len(indices)} jobs (time limit {limit} min) to {engine.cluster} "
                                 f"failed: {error}") from error
            for index, job in zip(indices, submitted):
                jobs[index] = job
        return jobs

    def run(self, tasks: Sequence[Task], report: Report) -> None:
        """Submit every task, then report each as its job ends; see the class docstring."""
        if not tasks:
            return
        engine = self._engine()
        local = engine.cluster != "slurm"
        # Slurm takes the whole array at once and throttles it itself; submitit's local
        # executor would start every process at once, so it is fed as slots free up.
        window = (self.array_parallelism or os.cpu_count() or 1) if local else len(tasks)
        poll = self.poll_s if self.poll_s is not None else POLL_S["local" if local else "slurm"]
        queue, active, submitted = list(tasks), {}, {}
        failed = done = 0
        status = StatusLine(f"submitit ({engine.cluster})", len(tasks), enabled=self.progress, stream=self.stream)
        try:
            while queue or active:
                if queue and len(active) < window:
                    batch, queue = queue[:window - len(active)], queue[window - len(active):]
                    for task, job in zip(batch, self._submit(engine, batch)):
                        active[task.run_id] = (task, job)
                        submitted.update(dict.fromkeys(task.run_ids, job.job_id))
                    write_record(self.sweep_dir, "submitit", submitted, cluster=engine.cluster,
                                 log_dir=str(self.log_dir))
                for run_id, (task, job) in list(active.items()):
                    if job.done():
                        del active[run_id]
                        error = _job_error(task, job, local, self.time_limit)
                        failed, done = failed + (error is not None), done + 1
                        report(task, job.result() if error is None else None, error)
                running = sum(job.state == "RUNNING" for _, job in active.values())
                status.update(done, running, len(active) - running + len(queue), failed)
                if active:
                    time.sleep(poll)
        except KeyboardInterrupt:
            self._interrupted(engine.cluster, {run_id: job for run_id, (_, job) in active.items()}, len(queue))
            raise
        forget_record(self.sweep_dir)

    def _interrupted(self, cluster: str, jobs: Mapping[str, Any], never_submitted: int) -> None:
        """Cancel or leave running what was submitted, and say which."""
        later = f"; {never_submitted} runs were never submitted" if never_submitted else ""
        if not jobs:
            print(f"interrupted: no job was running{later}", file=self.stream)
            return
        named = ", ".join(f"{run_id} (job {job.job_id})" for run_id, job in jobs.items())
        if self.on_interrupt == "cancel":
            for job in jobs.values():
                job.cancel(check=False)
            print(f"interrupted: cancelled {len(jobs)} submitted runs: {named}{later}; --resume retrains them",
                  file=self.stream)
            return
        if cluster != "slurm":
            time.sleep(1.0)  # a Ctrl-C typed at a terminal reaches local job processes too: see which survived
            stopped = [run_id for run_id, job in jobs.items() if job.done()]
            if stopped:
                print(f"interrupted: runs {', '.join(stopped)} stopped with this command (local jobs share its "
                      "terminal)", file=self.stream)
            jobs = {run_id: job for run_id, job in jobs.items() if run_id not in stopped}
            named = ", ".join(f"{run_id} (job {job.job_id})" for run_id, job in jobs.items())
        if jobs:
            mark_detached(self.sweep_dir)  # before this command releases the lock the jobs' writes check
            print(f"interrupted: left {len(jobs)} runs running on {cluster}: {named}{later}; their logs are in "
                  f"{self.log_dir}, they are recorded in {self.sweep_dir / 'executor.json'}, and --resume waits "
                  "until they end", file=self.stream)


def partition_time_limit(partition: str | None) -> int | None:
    """Minutes Slurm partition ``partition`` (None: the default one) allows a job; None where nothing caps it.

    None also where this machine cannot ask Slurm (no ``sinfo``, or it fails): the jobs then meet the
    partition's own check when they are submitted.
    """
    if shutil.which("sinfo") is None:
        return None
    try:
        answer = subprocess.run(["sinfo", "--noheader", "--format", "%P %l"], capture_output=True, text=True,
                                timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if answer.returncode != 0:
        return None
    for line in answer.stdout.splitlines():
        name, _, limit = line.strip().partition(" ")
        if (partition is None and name.endswith("*")) or name.rstrip("*") == partition:
            return slurm_minutes(limit.strip())
    return None


def slurm_minutes(limit: str) -> int | None:
    """Slurm's time format (``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in whole minutes.

    Raises:
        ValueError: text that is none of these.
    """
    text = limit.strip().lower()
    if text in ("infinite", "unlimited"):
        return None
    days, dash, clock = text.rpartition("-")
    try:
        parts = [int(part) for part in clock.split(":")]
        day_count = int(days) if dash else 0
    except ValueError:
        raise ValueError(f"not a Slurm time limit: {limit!r}") from None
    if dash:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:  # minutes[:seconds]
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    if len(parts) > 3 or min(parts + [day_count]) < 0:
        raise ValueError(f"not a Slurm time limit: {limit!r}")
    return day_count * 1440 + hours * 60 + minutes + seconds // 60


def _job_error(task: Task, job: Any, local: bool, time_limit: int) -> TaskFailed | None:
    """Why ``job`` ended without a result (its Python error, or how the job ended), or None.

    ``time_limit`` is the minutes each run may take (the executor's ``time_limit``).
    """
    from submitit.core.utils import FailedJobError

    error = job.exception()
    if error is None:
        return None
    runs = len(task.run_ids)
    if isinstance(error, FailedJobError):  # the run raised: its trace sits between two rules; keep its last line
        trace = str(error).split("----------------------")[1]
        reason = [line for line in trace.splitlines() if line.strip()][-1].strip()
        # submitit stops a job that Slurm warns of its time limit with "Job not requeued because: timed-out ..."
        timed_out = "UncompletedJobError" in reason and "timed-out" in reason
    else:
        timed_out = not local and str(job.state).startswith("TIMEOUT")
    if timed_out:
        each = f"--time-limit {time_limit} min for each of its {runs} runs" if runs > 1 else \
            f"--time-limit {time_limit} min"
        reason = f"job {job.job_id} reached its time limit ({time_limit * runs} min: {each}); --resume continues " \
                 "from the last epoch checkpoint, and a larger --time-limit lets a run end in one job"
    elif not isinstance(error, FailedJobError):
        reason = f"job {job.job_id} ended without a result (its process was killed: out of memory, time limit " \
                 "or a signal)" if local else \
            f"job {job.job_id} ended without a result (Slurm state {job.state}: time limit, out of memory, node " \
            "lost or cancelled)"
    return TaskFailed(task.run_id, reason, job.paths.stderr)
