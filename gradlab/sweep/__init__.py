"""Sweeps: many runs of :func:`gradlab.training.train_run` into one resumable folder.

- :mod:`~gradlab.sweep.plan`: the runs a grid of options describes.
- :mod:`~gradlab.sweep.folder`: the sweep folder on disk.
- :mod:`~gradlab.sweep.execute`: tasks and executors (where runs execute).
- :mod:`~gradlab.sweep.runner`: :func:`run_sweep`, which ties them together.
"""

from gradlab.sweep.execute import EnsembleTask, LocalExecutor, RunTask, run_task, run_work
from gradlab.sweep.plan import expand_cells, hidden_for_params, plan_runs
from gradlab.sweep.runner import SweepFailed, SweepResult, draw_figures, run_sweep

__all__ = [
    "LocalExecutor",
    "EnsembleTask",
    "RunTask",
    "SweepFailed",
    "SweepResult",
    "draw_figures",
    "expand_cells",
    "hidden_for_params",
    "plan_runs",
    "run_sweep",
    "run_task",
    "run_work",
]
