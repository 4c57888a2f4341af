"""rliable-style aggregates of accuracy from per-example predictions.

Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice")
recommend, for few seeds: the interquartile mean (IQM) over runs, a
stratified bootstrap interval, and the fraction of runs that reach a level.
Here the uncertainty has two sources, both resampled: which seeds were run,
and which test examples were drawn (90 test clips make each clip worth 1.1
accuracy points). The examples are the same for every run on the same data,
so one resample of example indices is shared by all seeds of a draw.

Input is the predictions table (:data:`gradlab.store.schema.PREDICTIONS`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

# Bootstrap resamples evaluated at once; bounds the gathered (batch, examples, runs) array at about 64 MB.
_MAX_BATCH_CELLS = 8_000_000
_MAX_BCA_EXAMPLES = 2_000


def interquartile_mean(values: Sequence[float] | np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Mean of the middle 50% of values (``scipy.stats.trim_mean`` cutting 25% at each end)."""
    return scipy_stats.trim_mean(np.asarray(values, dtype=np.float64), 0.25, axis=axis)


def correct_matrix(predictions: pd.DataFrame, split: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs x examples matrix of 0/1 correctness for one group of runs on one split.

    Returns:
        ``(correct, seeds, examples)``: ``correct`` is (runs, examples) float64,
        with rows ordered by seed and columns by example index.

    Raises:
        ValueError: if runs were evaluated on different example sets.
    """
    rows = predictions[predictions["split"] == split]
    keys = ["sweep", "run_id"] if "sweep" in rows.columns else ["run_id"]
    table = rows.pivot_table(index=[*keys, "seed"], columns="example", values="correct", aggfunc="first",
                             observed=True)
    if table.isna().any().any():
        raise ValueError(f"runs were evaluated on different {split} examples; "
                         "an aggregate over examples needs the same examples in every run")
    table = table.sort_index(level="seed")
    return table.to_numpy(dtype=np.float64), table.index.get_level_values("seed").to_numpy(), table.columns.to_numpy()


def _stratified_statistic(correct: np.ndarray):
    """IQM over resampled seeds of each seed's accuracy over resampled examples, vectorised for scipy."""
    by_example = np.ascontiguousarray(correct.T)  # (examples, runs)

    def statistic(seed_index: np.ndarray, example_index: np.ndarray, axis: int = -1) -> np.ndarray:
        seed_index = np.asarray(seed_index, dtype=np.intp)
        example_index = np.asarray(example_index, dtype=np.intp)
        # scipy may resample one sample while holding the other (BCa's jackknife): broadcast the two.
        batch = np.broadcast_shapes(seed_index.shape[:-1], example_index.shape[:-1])
        flat = example_index.reshape(-1, example_index.shape[-1])
        per_run = by_example[flat].mean(axis=1).reshape(*example_index.shape[:-1], correct.shape[0])  # (..., runs)
        per_run = np.broadcast_to(per_run, (*batch, correct.shape[0]))
        seed_index = np.broadcast_to(seed_index, (*batch, seed_index.shape[-1]))
        chosen = np.take_along_axis(per_run, seed_index, axis=-1)
        return interquartile_mean(chosen, axis=-1)

    return statistic


def iqm_interval(
    correct: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float, str]:
    """IQM accuracy over runs, with a bootstrap interval stratified over seeds and examples.

    Uses :func:`scipy.stats.bootstrap` on two index samples (seeds, examples)
    resampled independently: BCa where it is defined and affordable (up to
    2,000 examples), else percentile.

    Args:
        correct: (runs, examples) 0/1 matrix, as from :func:`correct_matrix`.
        confidence, n_resamples, seed: the bootstrap.

    Returns:
        ``(iqm, low, high, method)``: ``method`` names the interval ("BCa" or
        "percentile"); low = high = iqm when every resample agrees.
    """
    correct = np.asarray(correct, dtype=np.float64)
    runs, examples = correct.shape
    statistic = _stratified_statistic(correct)
    point = float(interquartile_mean(correct.mean(axis=1)))
    if runs < 2 or np.ptp(correct) == 0:
        return point, (float("nan") if runs < 2 else point), (float("nan") if runs < 2 else point), "none"
    data = (np.arange(runs), np.arange(examples))
    batch = max(1, min(n_resamples, _MAX_BATCH_CELLS // (examples * runs)))
    # BCa's jackknife costs one statistic per example: past a few thousand examples, percentile only.
    methods = ("BCa", "percentile") if examples <= _MAX_BCA_EXAMPLES else ("percentile",)
    for method in methods:
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            # BCa warns, then returns NaN, where its acceleration is undefined; percentile follows.
            warnings.simplefilter("ignore", scipy_stats.DegenerateDataWarning)
            result = scipy_stats.bootstrap(data, statistic, n_resamples=n_resamples, vectorized=True,
                                           confidence_level=confidence, method=method, batch=batch,
                                           rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return point, low, high, method
    return point, point, point, "none"


def accuracy_aggregate(
    predictions: pd.DataFrame,
    *,
    by: Sequence[str] = ("cell",),
    split: str = "test",
    solve_level: float = 0.9,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per group: IQM accuracy with its stratified bootstrap interval, and how many seeds solve the task.

    Args:
        predictions: a predictions table (one configuration per group).
        by: grouping columns.
        split: ``"test"`` or ``"validation"``.
        solve_level: accuracy at which a seed counts as solving the task.
        confidence, n_resamples, seed: the bootstrap.

    Returns:
        One row per group: the ``by`` columns, ``iqm``, ``ci_low``, ``ci_high``,
        ``interval`` (what the interval is), ``seeds``, ``examples``,
        ``solved`` (seeds at or above ``solve_level``), ``solved_of``
        ("k of n") and ``solved_low``/``solved_high`` (Clopper-Pearson
        interval of the fraction, :meth:`scipy.stats.binomtest` ``proportion_ci``).
    """
    columns = [*by, "iqm", "ci_low", "ci_high", "interval", "seeds", "examples", "solved", "solved_of",
               "solved_low", "solved_high"]
    chosen = predictions[predictions["split"] == split]
    rows = []
    for values, part in chosen.groupby(list(by), sort=True, observed=True):
        values = values if isinstance(values, tuple) else (values,)
        correct, seeds, examples = correct_matrix(part, split)
        iqm, low, high, method = iqm_interval(correct, confidence=confidence, n_resamples=n_resamples, seed=seed)
        solved = int((correct.mean(axis=1) >= solve_level).sum())
        fraction = scipy_stats.binomtest(solved, len(seeds)).proportion_ci(confidence, method="exact")
        label = (f"{confidence:.0%} {method} bootstrap over seeds and {split} examples" if method != "none"
                 else "no interval (one seed, or every prediction alike)")
        rows.append([*values, iqm, low, high, label, len(seeds), len(examples), solved, f"{solved} of {len(seeds)}",
                     fraction.low, fraction.high])
    return pd.DataFrame(rows, columns=columns)
