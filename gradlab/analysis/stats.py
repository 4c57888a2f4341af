"""Statistics across seeds: means, bootstrap intervals, training stages, vanishing ratios.

Everything here takes and returns long-format frames, so results of many runs
combine with ``pd.concat`` and plot functions only draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradlab.analysis.style import STAGES

#: Columns of the summary table that describe a run's configuration; runs of
#: one sweep that differ in any of them are analysed separately.
CONFIG_COLUMNS: tuple[str, ...] = (
    "dataset",
    "bidirectional",
    "readout",
    "normalise",
    "hidden_size",
    "num_layers",
    "seq_len",
)

# Rows of resample means computed at once; bounds memory at ~16 MB per chunk.
_CHUNK_GROUPS = 1024


def _run_keys(frame: pd.DataFrame) -> list[str]:
    return ["sweep", "run_id"] if "sweep" in frame.columns else ["run_id"]


def _bootstrap_rows(values: np.ndarray, confidence: float, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Percentile intervals of the mean of each row of ``values`` (groups, n) -> (groups, 2)."""
    groups, n = values.shape
    if n == 1:
        return np.repeat(values, 2, axis=1)
    # One resampling plan shared by every group of this size, as a weight matrix:
    # resample means are then a single matrix product.
    picks = rng.integers(0, n, size=(n_resamples, n))
    weights = np.zeros((n_resamples, n))
    np.add.at(weights, (np.arange(n_resamples)[:, None], picks), 1.0 / n)
    tail = (1.0 - confidence) / 2.0
    intervals = np.empty((groups, 2))
    for start in range(0, groups, _CHUNK_GROUPS):
        chunk = values[start : start + _CHUNK_GROUPS]
        # A norm that underflowed to 0 has log10 -inf, and -inf * 0 weight is NaN in
        # the product: resample such rows explicitly (-inf then stays -inf).
        odd = ~np.isfinite(chunk).all(axis=1)
        with np.errstate(invalid="ignore"):
            means = chunk @ weights.T  # (chunk, n_resamples)
            if odd.any():
                means[odd] = chunk[odd][:, picks].mean(axis=2)
        bounds = np.empty((len(chunk), 2))
        bounds[~odd] = np.quantile(means[~odd], [tail, 1.0 - tail], axis=1).T
        if odd.any():
            # Linear interpolation between two -inf is NaN; take order statistics there.
            bounds[odd] = np.quantile(means[odd], [tail, 1.0 - tail], axis=1, method="inverted_cdf").T
        intervals[start : start + _CHUNK_GROUPS] = bounds
    return intervals


def log10(values: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """log10 that maps a norm of exactly 0 (float underflow) to -inf without a warning."""
    with np.errstate(divide="ignore"):
        return np.log10(values)


def summarise(
    frame: pd.DataFrame,
    value: str,
    by: Sequence[str],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean and percentile-bootstrap confidence interval of ``value`` within groups.

    Each row is one observation (typically one seed). NaN values are dropped.
    The result does not depend on row order: values are sorted within each
    group before resampling, and the resampling plan depends only on ``seed``
    and the group size.

    Args:
        frame: long-format table.
        value: column to summarise.
        by: grouping columns.
        confidence: coverage of the interval, in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seed of the resampling plan.

    Returns:
        One row per group: the ``by`` columns, ``mean``, ``ci_low``, ``ci_high``
        and ``n`` (observations in the group).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    by = list(by)
    data = frame.loc[frame[value].notna(), by + [value]]
    out_columns = by + ["mean", "ci_low", "ci_high", "n"]
    if data.empty:
        return pd.DataFrame({name: [] for name in out_columns})
    data = data.assign(**{value: data[value].astype("float64")}).sort_values(by + [value], kind="stable")
    grouped = data.groupby(by, sort=True, dropna=False, observed=True)[value]
    keys = grouped.size().reset_index(name="n")
    lists = [np.asarray(group, dtype=np.float64) for _, group in grouped]
    sizes = keys["n"].to_numpy()
    means = np.array([values.mean() for values in lists])
    intervals = np.empty((len(lists), 2))
    for size in np.unique(sizes):
        rows = np.flatnonzero(sizes == size)
        rng = np.random.default_rng([seed, int(size)])
        intervals[rows] = _bootstrap_rows(np.stack([lists[row] for row in rows]), confidence, n_resamples, rng)
    return keys.assign(mean=means, ci_low=intervals[:, 0], ci_high=intervals[:, 1])[out_columns]


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval of ``values``.

    Returns:
        ``(mean, low, high)``; all NaN when there are no finite values.
    """
    frame = pd.DataFrame({"group": 0, "value": np.asarray(values, dtype=np.float64)})
    result = summarise(frame, "value", ["group"], confidence=confidence, n_resamples=n_resamples, seed=seed)
    if result.empty:
        return (float("nan"),) * 3
    row = result.iloc[0]
    return float(row["mean"]), float(row["ci_low"]), float(row["ci_high"])


def stage_steps(steps: Sequence[int] | np.ndarray) -> dict[str, int]:
    """Which recorded steps of one run are its training stages.

    The rule: ``init`` is step 0; ``late`` is the last recorded step; ``early``
    is the first recorded step after step 0, when that is not also the last.
    A stage whose step was not recorded is absent.

    Args:
        steps: the steps recorded for one run, in any order, repeats allowed.

    Returns:
        Stage name -> step.
    """
    recorded = sorted(set(int(step) for step in steps))
    stages: dict[str, int] = {}
    if 0 in recorded:
        stages["init"] = 0
    later = [step for step in recorded if step > 0]
    if later:
        if len(later) > 1:
            stages["early"] = later[0]
        stages["late"] = later[-1]
    return stages


def select_stages(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the rows recorded at each run's training stages and add a ``stage`` column.

    See :func:`stage_steps` for the rule. ``stage`` is an ordered categorical
    (init < early < late).
    """
    keys = _run_keys(frame)
    rows = []
    for run, steps in frame.groupby(keys, sort=False, observed=True)["step"]:
        run = run if isinstance(run, tuple) else (run,)
        for stage, step in stage_steps(steps.to_numpy()).items():
            rows.append((*run, step, stage))
    table = pd.DataFrame(rows, columns=[*keys, "step", "stage"])
    table = table.astype({key: frame[key].dtype for key in keys} | {"step": frame["step"].dtype})
    staged = frame.merge(table, on=[*keys, "step"], how="inner")
    staged["stage"] = pd.Categorical(staged["stage"], categories=list(STAGES), ordered=True)
    return staged


def log_gradient_profile(
    gradients: pd.DataFrame,
    *,
    value: str = "grad_norm",
    by: Sequence[str] = ("cell", "stage", "layer", "direction", "state", "timestep"),
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean and bootstrap CI across seeds of log10 gradient norm, per timestep and stage.

    Args:
        gradients: a gradients table (:data:`gradlab.schema.GRADIENTS`).
        value: ``grad_norm`` or ``grad_norm_per_sample``.
        by: grouping columns; ``stage`` is added by :func:`select_stages`.

    Returns:
        :func:`summarise`'s output; ``mean``, ``ci_low`` and ``ci_high`` are in log10 units.
    """
    if "stage" in by and "stage" not in gradients.columns:
        gradients = select_stages(gradients)
    logged = gradients.assign(log10_norm=log10(gradients[value].astype("float64")))
    return summarise(logged, "log10_norm", by, confidence=confidence, n_resamples=n_resamples, seed=seed)


def accuracy_table(
    summary: pd.DataFrame,
    *,
    metric: str = "test_accuracy",
    by: Sequence[str] = ("cell",),
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean and bootstrap CI across seeds of an accuracy column of the summary table.

    Runs without a value (a diverged run, for instance) are left out; ``n`` counts the rest.
    """
    return summarise(summary, metric, by, confidence=confidence, n_resamples=n_resamples, seed=seed)


def first_to_last_ratio(
    gradients: pd.DataFrame,
    summary: pd.DataFrame | None = None,
    *,
    stage: str = "init",
    layer: int = 0,
    direction: str = "forward",
    state: str = "h",
    value: str = "grad_norm",
) -> pd.DataFrame:
    """The first-to-last gradient ratio of each run, the vanishing measure of Pascanu et al. (2013).

    For the forward direction it is ``|dL/dh_0| / |dL/dh_{T-1}|``: how much of
    the gradient at the state where the loss attaches last reaches the first
    state. For the backward direction the roles of timestep 0 and T-1 swap.
    Values well below 1 mean vanishing, above 1 exploding.

    Args:
        gradients: a gradients table.
        summary: optional summary table; its ``seq_len`` is joined on the run
            keys. Without it, ``seq_len`` is the number of recorded timesteps.
        stage: ``init``, ``early`` or ``late`` (see :func:`stage_steps`).
        layer, direction, state: which recorded state to measure.
        value: ``grad_norm`` or ``grad_norm_per_sample``.

    Returns:
        One row per run: run keys, ``cell``, ``activation``, ``seed``, ``step``,
        ``seq_len`` and ``ratio``.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    keys = _run_keys(gradients)
    columns = [*keys, "cell", "activation", "seed", "step", "seq_len", "ratio"]
    chosen = gradients[
        (gradients["layer"] == layer) & (gradients["direction"] == direction) & (gradients["state"] == state)
    ]
    if chosen.empty:
        return pd.DataFrame({name: [] for name in columns})
    chosen = select_stages(chosen)
    chosen = chosen[chosen["stage"] == stage]
    first_is_zero = direction == "forward"
    rows = []
    for _, run in chosen.groupby(keys, sort=True, observed=True):
        norms = run.groupby("timestep")[value].mean()
        first, last = (norms.iloc[0], norms.iloc[-1]) if first_is_zero else (norms.iloc[-1], norms.iloc[0])
        head = run.iloc[0]
        rows.append([*(head[key] for key in keys), head["cell"], head["activation"], head["seed"],
                     head["step"], int(norms.index.max()) + 1, first / last])
    table = pd.DataFrame(rows, columns=columns)
    if summary is not None and "seq_len" in summary.columns and not summary.empty:
        lengths = summary[[*keys, "seq_len"]].drop_duplicates(keys)
        table = table.drop(columns="seq_len").merge(lengths, on=keys, how="left")
        table = table[columns]
    return table.astype({"seq_len": "int64", "ratio": "float64", "seed": "int64", "step": "int64"})


def config_groups(summary: pd.DataFrame, *, exclude: Sequence[str] = ()) -> list[tuple[str, pd.DataFrame]]:
    """Split each sweep's runs by the configuration columns that vary within it.

    Seeds of one configuration belong together; runs that differ in readout,
    normalisation, size or length must not share a seed band.

    Args:
        summary: a summary table with a ``sweep`` column.
        exclude: configuration columns not to split on (``seq_len`` for a
            sequence-length sweep, which is the x axis there).

    Returns:
        ``(label, runs)`` pairs: ``label`` names the sweep and the varying
        values (``"sweep"`` or ``"sweep readout=mean normalise=True"``), ``runs``
        holds the ``sweep`` and ``run_id`` of its runs.
    """
    groups = []
    for sweep, runs in summary.groupby("sweep", sort=True, observed=True):
        varying = [
            column
            for column in CONFIG_COLUMNS
            if column in runs.columns and column not in exclude and runs[column].nunique(dropna=False) > 1
        ]
        if not varying:
            groups.append((str(sweep), runs[["sweep", "run_id"]].reset_index(drop=True)))
            continue
        for values, part in runs.groupby(varying, sort=True, dropna=False, observed=True):
            values = values if isinstance(values, tuple) else (values,)
            label = " ".join([str(sweep)] + [f"{column}={value}" for column, value in zip(varying, values)])
            groups.append((label, part[["sweep", "run_id"]].reset_index(drop=True)))
    return groups
