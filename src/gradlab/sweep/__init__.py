"""Sweeps: many runs of :func:`gradlab.training.train_run` into one resumable folder.

- :mod:`~gradlab.sweep.plan`: the runs a grid of options describes.
- :mod:`~gradlab.sweep.folder`: the sweep folder on disk.
- :mod:`~gradlab.sweep.execute`: tasks and executors (where runs execute).
- :mod:`~gradlab.sweep.runner`: :func:`run_sweep`, which ties them together.
- :mod:`~gradlab.sweep.parent_watch`: pool workers that exit with their parent.

The names below load on first use, so that a worker process can import
:mod:`~gradlab.sweep.parent_watch` (and start watching its parent) before torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "EnsembleTask": "execute", "LocalExecutor": "execute", "RunTask": "execute", "run_task": "execute",
    "run_work": "execute",
    "expand_cells": "plan", "hidden_for_params": "plan", "plan_runs": "plan",
    "SweepFailed": "runner", "SweepResult": "runner", "draw_figures": "runner", "run_sweep": "runner",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'gradlab.sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gradlab.sweep.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
