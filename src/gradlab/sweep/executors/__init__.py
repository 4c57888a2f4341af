"""Executors that run a sweep beyond this machine: Slurm (through submitit) and Ray.

- :class:`SubmititExecutor`: a Slurm job array, or submitit's local processes where there is no Slurm.
- :class:`RayExecutor`: one Ray task per run, on an existing Ray cluster or a local one.
- :func:`add_executor_arguments` / :func:`executor_from_args`: ``--executor`` and its options.

Each worker trains its task (a run, or an ensemble of runs) with :func:`gradlab.sweep.run_work` and writes the
run folder itself, atomically, exactly as a local run does; the driver only
waits, reports and summarises. The engines are optional extras
(``pip install 'gradlab[slurm]'``, ``pip install 'gradlab[ray]'``), imported
only when a sweep runs on them.
"""

from gradlab.sweep.executors.common import TaskFailed, check_no_live_jobs, live_jobs, run_remote
from gradlab.sweep.executors.options import add_executor_arguments, executor_from_args
from gradlab.sweep.executors.ray_executor import RayExecutor
from gradlab.sweep.executors.submitit_executor import SubmititExecutor

__all__ = [
    "RayExecutor",
    "SubmititExecutor",
    "TaskFailed",
    "add_executor_arguments",
    "check_no_live_jobs",
    "executor_from_args",
    "live_jobs",
    "run_remote",
]
