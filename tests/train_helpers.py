"""Shared helpers of the training and sweep tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from gradlab.store.io import RUN_TABLES, RunFolder
from gradlab.training import Callback

REPO = Path(__file__).resolve().parents[1]
#: Summary columns that time a run: no two runs share them.
TIMES = {"wall_time", "time_per_epoch", "train_time_per_epoch"}


def load_script(name: str) -> ModuleType:
    """An experiment script (``experiments/<name>.py``) as a module, without running it."""
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InterruptAfterEpoch(Callback):
    """Raises KeyboardInterrupt after epoch ``epoch``'s checkpoint is written, as a killed run would stop."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state) -> None:
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest |a - b| / |b| (NaN against NaN and equal infinities count as equal)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & (a == b)
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity: counted as equal below
        difference = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
    return float(np.where(both_nan | same_inf, 0.0, difference).max(initial=0.0))


def assert_runs_match(expected: Path, actual: Path, run_ids, *, rtol: float = 1e-9) -> None:
    """Every run's metrics and tables in ``actual`` equal ``expected``'s within ``rtol`` (relative)."""
    for run_id in run_ids:
        folders = [RunFolder(path / run_id) for path in (expected, actual)]
        want, got = (folder.metrics() for folder in folders)
        assert set(want) == set(got), run_id
        for key in set(want) - TIMES - {"ensemble_size"}:
            if isinstance(want[key], float) and isinstance(got[key], float):
                assert relative_difference([got[key]], [want[key]]) <= rtol, (run_id, key, want[key], got[key])
            else:
                assert got[key] == want[key], (run_id, key)
        for kind in RUN_TABLES:
            tables = [folder.table(kind) for folder in folders]
            assert list(tables[0].columns) == list(tables[1].columns) and len(tables[0]) == len(tables[1]), \
                (run_id, kind)
            for column in tables[0].columns:
                if column in TIMES:
                    continue
                left, right = tables[0][column], tables[1][column]
                if left.dtype.kind == "f":
                    assert relative_difference(right, left) <= rtol, (run_id, kind, column)
                elif left.dtype == object and len(left):  # per-class probability vectors
                    assert relative_difference(np.stack(right.to_numpy()), np.stack(left.to_numpy())) <= rtol, (run_id, kind)
                elif left.dtype != object:
                    pd.testing.assert_series_equal(left, right, obj=f"{run_id} {kind} {column}")
