"""What the cluster executors share: the worker-side task, failures, the job record, progress lines.

A worker (a Slurm job, a submitit local process, a Ray task) runs
:func:`run_remote`, which checks the run's device on the machine that will
train it before anything else, then calls :func:`gradlab.sweep.execute.run_work`, so
the run folder is written there exactly as a local run writes it.

A sweep whose jobs may outlive the command that submitted them records them
in ``<sweep>/executor.json``; :func:`check_no_live_jobs` asks the engine about
them before a ``--resume`` or ``--overwrite`` touches the folder.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from gradlab.config import RunConfig
from gradlab.store import schema
from gradlab.store.io import RunFolder, RunFolderError, read_json_object, write_json
from gradlab.sweep.execute import Task, run_work

#: Where a sweep records jobs that may outlive the command that submitted them.
RECORD_FILE = schema.SWEEP_FILES["executor"]
#: Where the cluster executors put per-task logs, inside the sweep folder.
LOG_FOLDER = "logs"
#: The pip extra that installs each engine.
EXTRAS: dict[str, str] = {"submitit": "slurm", "ray": "ray"}
#: Slurm job states in which a job may still write its run folder (UNKNOWN: sacct does not list it yet).
SLURM_LIVE_STATES: frozenset[str] = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "SUSPENDED",
    "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED", "UNKNOWN",
})


class TaskFailed(RuntimeError):
    """A run that raised, or whose job ended without a result (node lost, time limit, out of memory, cancelled).

    Attributes:
        run_id: the run.
        log: the path of the worker's log for that run.
    """

    def __init__(self, run_id: str, reason: str, log: str | os.PathLike | None) -> None:
        self.run_id, self.reason, self.log = run_id, reason, str(log) if log is not None else None
        super().__init__(f"{reason} (log: {self.log})" if log is not None else reason)


def require_engine(module: str, extra: str) -> ModuleType:
    """Import an optional engine, or raise ``ModuleNotFoundError`` naming the pip extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise ModuleNotFoundError(
            f"the {module!r} engine is not installed; install it with: pip install 'gradlab[{extra}]'", name=module
        ) from None


def run_remote(task: Task, log_path: str | None = None) -> list[dict[str, Any]]:
    """Train ``task`` in this (worker) process; its device is checked here first.

    Args:
        task: the run.
        log_path: a file that receives this run's output and traceback (for
            engines that keep no per-task log in the sweep folder); None leaves
            standard output and error alone.

    Returns:
        The summary row of each run of the task.
    """
    if log_path is None:
        return _run_checked(task)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            return _run_checked(task)
        except BaseException:
            traceback.print_exc()
            raise


def _run_checked(task: Task) -> list[dict[str, Any]]:
    from gradlab.training.seeding import resolve_device

    host = socket.gethostname()
    print(f"run {task.run_id} on {host} (pid {os.getpid()}) into {task.run_dir}", flush=True)
    device = RunConfig.from_dict(task.config).train.device
    try:
        resolve_device(device)  # before loading data: a missing device fails at once
    except ValueError as error:
        raise ValueError(f"run {task.run_id} on {host}: {error}, or give each task a GPU (--gpus-per-task 1)") \
            from None
    results = run_work(task)
    for run_id, metrics in zip(task.run_ids, results):
        print(f"run {run_id} ended: {metrics['status']}", flush=True)
    return results


def write_record(sweep_dir: Path, engine: str, jobs: Mapping[str, str], **details: Any) -> Path:
    """Record the jobs (run id -> job id) an executor submitted into ``<sweep>/executor.json``."""
    return write_json(Path(sweep_dir) / RECORD_FILE,
                      {"executor": engine, "host": socket.gethostname(), **details, "jobs": dict(jobs)})


def mark_detached(sweep_dir: Path) -> None:
    """Record in ``<sweep>/executor.json`` that its jobs run on without the command that holds the sweep's lock.

    Their writes then go on after that command releases the lock
    (:func:`gradlab.sweep.execute.run_work`); a ``--resume`` waits for them.
    """
    path = Path(sweep_dir) / RECORD_FILE
    record = read_json_object(path, "delete it once you know the jobs it lists have ended")
    write_json(path, {**record, "detached": True})


def forget_record(sweep_dir: Path) -> None:
    """Delete ``<sweep>/executor.json`` (every job it named has ended)."""
    (Path(sweep_dir) / RECORD_FILE).unlink(missing_ok=True)


def live_jobs(sweep_dir: str | os.PathLike) -> dict[str, str]:
    """Jobs of ``<sweep>/executor.json`` that may still write their run folders: run id -> job id and state.

    Runs whose folders already hold an ended run are not asked about.

    Raises:
        ValueError: the engine cannot be asked from this machine (naming the jobs and what to do).
    """
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / RECORD_FILE
    if not path.is_file():
        return {}
    fix = "delete it once you know the jobs it lists have ended"
    record = read_json_object(path, fix)
    if not isinstance(record.get("jobs"), dict):
        raise RunFolderError(f"{path} is damaged: its \"jobs\" entry is {record.get('jobs')!r}, not an object of "
                             f"run ids and jobs; {fix}")
    jobs = {run_id: job for run_id, job in record["jobs"].items() if not RunFolder(sweep_dir / run_id).ended}
    if not jobs:
        return {}
    named = ", ".join(f"{run_id} (job {job})" for run_id, job in jobs.items())
    if record.get("cluster") == "slurm":
        if shutil.which("sacct") is None:
            raise ValueError(f"{sweep_dir} has runs submitted to Slurm that have not ended: {named}; this machine "
                             f"cannot ask Slurm about them (no sacct): resume where Slurm runs, or delete {path} "
                             "once you know they ended")
        submitit = require_engine("submitit", EXTRAS["submitit"])
        states = {run_id: submitit.SlurmJob(record["log_dir"], job).get_info(mode="force").get("State", "UNKNOWN")
                  for run_id, job in jobs.items()}
        return {run_id: f"job {jobs[run_id]}, {state}" for run_id, state in states.items()
                if state.split()[0] in SLURM_LIVE_STATES}
    if record.get("host") != socket.gethostname():
        raise ValueError(f"{sweep_dir} has runs started as processes on {record.get('host')} that have not ended: "
                         f"{named}; resume on that machine, or delete {path} once you know they ended")
    return {run_id: f"process {job}, running" for run_id, job in jobs.items()
            if _process_alive(int(job), str(record.get("log_dir", "")))}


def _process_alive(pid: int, marker: str) -> bool:
    """Whether process ``pid`` runs and (where /proc shows it) is the job it was: its command line names ``marker``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True
    try:
        return marker.encode() in cmdline.read_bytes()
    except OSError:
        return False


def check_no_live_jobs(sweep_dir: str | os.PathLike) -> None:
    """Refuse to touch a sweep folder while jobs an earlier command left running may still write to it.

    Raises:
        ValueError: naming the runs, their jobs and states.
    """
    live = live_jobs(sweep_dir)
    if live:
        named = "; ".join(f"{run_id} ({state})" for run_id, state in live.items())
        raise ValueError(f"{sweep_dir} has runs still running from an earlier command: {named}; wait until they end "
                         "(or cancel them: scancel <job> on Slurm), then --resume")


class StatusLine:
    """Prints ``<engine>: N done, N running, N queued, N failed`` when the counts change (at most every ``every`` s)."""

    def __init__(self, engine: str, total: int, *, enabled: bool, stream: Any = None, every: float = 10.0) -> None:
        self.engine, self.total, self.enabled, self.every = engine, total, enabled, every
        self.stream = stream or sys.stderr
        self.last: tuple[int, ...] | None = None
        self.printed = -float("inf")

    def update(self, done: int, running: int, queued: int | None, failed: int) -> None:
        """Print the counts if they changed (``queued=None``: the engine does not tell running from queued)."""
        counts = (done, running, queued, failed)
        if not self.enabled or counts == self.last or time.monotonic() - self.printed < self.every:
            return
        from tqdm.auto import tqdm

        waiting = f"{running} running or queued" if queued is None else f"{running} running, {queued} queued"
        tqdm.write(f"{self.engine}: {done} of {self.total} done, {waiting}, {failed} failed", file=self.stream)
        self.last, self.printed = counts, time.monotonic()
