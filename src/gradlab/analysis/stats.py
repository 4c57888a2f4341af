"""Statistics across seeds: means with Student t intervals, training stages, vanishing ratios.

Everything here takes and returns long-format frames, so results of many runs
combine with ``pd.concat`` and plot functions only draw. Every across-seed
table carries a ``seeds`` column: the number of seeds behind each row.

Intervals of a mean over seeds are Student t intervals
(:func:`mean_interval`): with 3 to 10 seeds a percentile bootstrap cannot
reach its nominal coverage (over 3 seeds it returns about their range, which
covers the true mean about 75% of the time), while the t interval does for
roughly normal per-seed values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from gradlab.analysis.style import STAGES

#: Columns of the summary table that describe a run's configuration; runs of
#: one sweep that differ in any of them are analysed separately.
CONFIG_COLUMNS: tuple[str, ...] = (
    "dataset",
    "split",
    "test_speaker",
    "train_fraction",
    "bidirectional",
    "readout",
    "normalise",
    "hidden_size",
    "num_layers",
    "seq_len",
    "init",
    "lr",
    "clip_grad_norm",
    "pad",
    "delay",
    "param_target",
    "noise_std",
    "omega_weight",
    "floss_weight",
    "dtype",
)


def interval_label(confidence: float = 0.95) -> str:
    """How every figure and table names the interval of :func:`mean_interval`."""
    return f"{confidence:.0%} t interval over seeds"


def _run_keys(frame: pd.DataFrame) -> list[str]:
    return ["sweep", "run_id"] if "sweep" in frame.columns else ["run_id"]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _t_bounds(mean: np.ndarray, std: np.ndarray, n: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Student t bounds from group means, sample standard deviations and sizes (NaN below 2 values).

    The vectorised form of ``scipy.stats.ttest_1samp(values).confidence_interval()`` for many groups at once:
    :meth:`scipy.stats.t.interval` around each mean with scale ``s / sqrt(n)``.
    """
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = scipy_stats.t.interval(confidence, np.where(n > 1, n - 1, np.nan), loc=mean,
                                           scale=np.where(std > 0, std, np.nan) / np.sqrt(n))
        # Equal values have standard deviation 0: the interval is that value, not NaN.
        point = (std == 0) & (n > 1)
        finite = np.isfinite(mean)
        low = np.where(finite, np.where(point, mean, low), np.nan)
        high = np.where(finite, np.where(point, mean, high), np.nan)
    return low, high


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student t confidence interval for the mean of per-seed values.

    ``mean ± t_{(1+confidence)/2, n-1} · s / sqrt(n)``, from
    :func:`scipy.stats.ttest_1samp`'s ``confidence_interval``. NaN values are dropped. Its coverage is exact for
    normal values at any n >= 2, where a bootstrap over a handful of seeds
    cannot leave the sample's range.

    Args:
        values: one value per seed.
        confidence: coverage, in (0, 1).

    Returns:
        ``(low, high)``; both NaN with fewer than two values, or when a value
        is infinite (a log10 norm that underflowed to 0 is -inf: its mean is
        -inf and no interval exists).

    Raises:
        ValueError: if ``confidence`` is outside (0, 1).
    """
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) < 2 or not np.isfinite(values).all():
        return float("nan"), float("nan")
    if np.all(values == values[0]):  # no spread: the interval is the value (scipy's would be NaN)
        return float(values[0]), float(values[0])
    interval = scipy_stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    return float(interval.low), float(interval.high)


def log10(values: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """log10 that maps a norm of exactly 0 (float underflow) to -inf without a warning."""
    with np.errstate(divide="ignore"):
        return np.log10(values)


def summarise(frame: pd.DataFrame, value: str, by: Sequence[str], *, confidence: float = 0.95) -> pd.DataFrame:
    """Mean and Student t interval (:func:`mean_interval`) of ``value`` within groups.

    Each row is one observation, typically one seed. NaN values are dropped.

    Args:
        frame: long-format table.
        value: column to summarise.
        by: grouping columns.
        confidence: coverage of the interval, in (0, 1).

    Returns:
        One row per group: the ``by`` columns, ``mean``, ``ci_low``,
        ``ci_high`` and ``seeds`` (observations in the group). The interval
        is NaN for a group of one, or whose values include an infinity.
    """
    _check_confidence(confidence)
    by = list(by)
    data = frame.loc[frame[value].notna(), by + [value]]
    out_columns = by + ["mean", "ci_low", "ci_high", "seeds"]
    if data.empty:
        return pd.DataFrame({name: [] for name in out_columns})
    data = data.assign(**{value: data[value].astype("float64")})
    grouped = data.groupby(by, sort=True, dropna=False, observed=True)[value]
    with np.errstate(invalid="ignore"):
        table = grouped.agg(["mean", "std", "size"]).reset_index()
        table["finite"] = grouped.apply(lambda group: bool(np.isfinite(group).all())).to_numpy()
    low, high = _t_bounds(table["mean"].to_numpy(), table["std"].to_numpy(), table["size"].to_numpy(), confidence)
    finite = table["finite"].to_numpy()
    table["ci_low"] = np.where(finite, low, np.nan)
    table["ci_high"] = np.where(finite, high, np.nan)
    table["seeds"] = table["size"].astype("int64")
    return table[out_columns]


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
    recorded = [int(step) for step in np.unique(np.asarray(steps))]  # a run records each step on many rows
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
) -> pd.DataFrame:
    """Mean and t interval across seeds of log10 gradient norm, per timestep and stage.

    Args:
        gradients: a gradients table (:data:`gradlab.store.schema.GRADIENTS`).
        value: ``grad_norm`` or ``grad_norm_per_sample``.
        by: grouping columns; ``stage`` is added by :func:`select_stages`.

    Returns:
        :func:`summarise`'s output; ``mean``, ``ci_low`` and ``ci_high`` are in log10 units.
    """
    if "stage" in by and "stage" not in gradients.columns:
        gradients = select_stages(gradients)
    logged = gradients.assign(log10_norm=log10(gradients[value].astype("float64")))
    return summarise(logged, "log10_norm", by, confidence=confidence)


def accuracy_table(
    summary: pd.DataFrame,
    *,
    metric: str = "test_accuracy",
    by: Sequence[str] = ("cell",),
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean and t interval across seeds of an accuracy column of the summary table.

    Runs without a value (a diverged run, for instance) are left out; ``seeds`` counts the rest.
    """
    return summarise(summary, metric, by, confidence=confidence)


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
    """Split each sweep's runs by the configuration columns that vary within one of its cells.

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
        # A column splits a sweep when it varies within a cell: cells tuned to different learning
        # rates, or sized to one parameter target, still belong to one comparison.
        varying = [
            column
            for column in CONFIG_COLUMNS
            if column in runs.columns and column not in exclude
            and runs.groupby("cell", observed=True)[column].nunique(dropna=False).max() > 1
        ]
        if "param_target" in varying and "hidden_size" in varying:
            varying.remove("hidden_size")  # chosen per cell from the target
        if not varying:
            groups.append((str(sweep), runs[["sweep", "run_id"]].reset_index(drop=True)))
            continue
        for values, part in runs.groupby(varying, sort=True, dropna=False, observed=True):
            values = values if isinstance(values, tuple) else (values,)
            label = " ".join([str(sweep)] + [f"{column}={value}" for column, value in zip(varying, values)])
            groups.append((label, part[["sweep", "run_id"]].reset_index(drop=True)))
    return groups


def length_fit(ratios: pd.DataFrame) -> pd.DataFrame:
    """Least-squares line of log10 first-to-last ratio against sequence length, per cell.

    The slope is the decades of gradient lost per extra timestep (negative
    means vanishing); every run is one point. Ratios that underflowed to 0 are
    left out of the fit (see :func:`underflowed_lengths`).

    Returns:
        Columns ``cell``, ``slope``, ``intercept`` and ``seeds`` (runs in the fit);
        cells measured at a single length are absent.
    """
    rows = []
    for cell, part in ratios.groupby("cell", observed=True):
        part = part[part["ratio"] > 0]
        if part["seq_len"].nunique() > 1:
            slope, intercept = np.polyfit(part["seq_len"].astype(float), log10(part["ratio"].astype(float)), 1)
            rows.append({"cell": cell, "slope": float(slope), "intercept": float(intercept), "seeds": len(part)})
    return pd.DataFrame(rows, columns=["cell", "slope", "intercept", "seeds"])


def length_slopes(ratios: pd.DataFrame) -> pd.Series:
    """:func:`length_fit`'s slope per cell, as a Series indexed by cell."""
    fit = length_fit(ratios)
    return pd.Series(fit["slope"].to_numpy(), index=fit["cell"].to_numpy(), dtype="float64")


def underflowed_lengths(ratios: pd.DataFrame) -> dict[str, list[int]]:
    """Per cell, the sequence lengths at which some run's ratio was exactly 0 (below float range)."""
    zero = ratios[ratios["ratio"] == 0]
    return {cell: sorted(set(rows["seq_len"].astype(int))) for cell, rows in zero.groupby("cell", observed=True)}
