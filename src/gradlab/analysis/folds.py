"""Speaker folds: one comparison repeated with each FSDD speaker as the test speaker.

Seeds within a fold share one test voice (150 clips of one speaker), so an
interval over seeds says how much training noise moves a number, and nothing
about other voices. Across folds the unit is the speaker: each fold's mean
over its seeds is one observation, and an interval over the n folds (n = 6
for FSDD) is what a claim about unseen speakers rests on. Differences between
two cells or two settings are paired by fold (the same test speaker on both
sides), so a recommendation rests on a paired t test of the difference, not on
whether two intervals overlap.

Diverged runs are never dropped silently: a run that diverged keeps the test
accuracy of the checkpoint chosen before it diverged, every table counts them
(``diverged``), and a configuration where most seeds diverged is flagged
(``mostly_diverged``) so that a report does not average it as if it trained.

Torch-free: reads the summary table only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

#: The summary column that names a run's fold.
FOLD = "test_speaker"


def has_folds(summary: pd.DataFrame) -> bool:
    """Whether ``summary`` holds more than one speaker fold."""
    return FOLD in summary.columns and summary[FOLD].nunique(dropna=True) > 1


def speaker_interval_label(confidence: float = 0.95) -> str:
    """How tables name the interval of :func:`speaker_table`."""
    return f"{confidence:.0%} t interval over test speakers (each speaker's mean over its seeds)"


def fold_means(summary: pd.DataFrame, value: str = "test_accuracy", by: Sequence[str] = ("cell",)) -> pd.DataFrame:
    """Each fold's mean of ``value`` over its seeds, per ``by`` group.

    Returns:
        One row per (``by``..., fold): ``mean``, ``seeds`` (runs with a value),
        ``diverged`` (of them, runs whose status is ``diverged``) and
        ``seed_half_width`` (half-width of the 95% t interval over that fold's
        seeds; NaN below two seeds).
    """
    by = list(by)
    missing = [column for column in [*by, FOLD, value] if column not in summary.columns]
    if missing:
        raise ValueError(f"fold_means needs columns {missing}; the summary has {list(summary.columns)}")
    runs = summary[summary[value].notna()].copy()
    runs["_diverged"] = runs["status"].eq("diverged") if "status" in runs.columns else False
    grouped = runs.groupby([*by, FOLD], sort=True, observed=True, dropna=False)
    table = grouped.agg(mean=(value, "mean"), std=(value, "std"), seeds=(value, "size"),
                        diverged=("_diverged", "sum")).reset_index()
    seeds = table["seeds"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # The upper end of the 95% t interval around 0 is its half-width.
        half_width = stats.t.interval(0.95, np.where(seeds > 1, seeds - 1, np.nan), loc=0.0,
                                      scale=table["std"].to_numpy(dtype=np.float64) / np.sqrt(seeds))[1]
    table["seed_half_width"] = np.where(seeds > 1, half_width, np.nan)
    return table.drop(columns="std").astype({"seeds": "int64", "diverged": "int64"})


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student t interval of ``values`` (NaN bounds below two values)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    if np.all(values == values[0]):  # no spread: the interval is the point
        return mean, mean, mean
    interval = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    return mean, float(interval.low), float(interval.high)


def speaker_table(
    summary: pd.DataFrame,
    value: str = "test_accuracy",
    by: Sequence[str] = ("cell",),
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per ``by`` group, the mean over speakers with its t interval, beside the seed-level spread.

    Returns:
        One row per group: ``mean`` (mean of the fold means), ``ci_low`` and
        ``ci_high`` (:func:`speaker_interval_label`), ``speakers`` (folds),
        ``seeds`` (runs in all folds), ``diverged`` (of those runs),
        ``mostly_diverged`` (more than half the runs of some fold diverged),
        and ``seed_half_width`` (the mean over folds of the 95% t interval's
        half-width over seeds within one fold: how much seeds alone move it).
    """
    by = list(by)
    folds = fold_means(summary, value, by)
    rows = []
    for key, part in folds.groupby(by, sort=True, observed=True, dropna=False):
        mean, low, high = t_interval(part["mean"], confidence)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": mean, "ci_low": low, "ci_high": high,
                     "speakers": int(part[FOLD].nunique()), "seeds": int(part["seeds"].sum()),
                     "diverged": int(part["diverged"].sum()),
                     "mostly_diverged": bool((part["diverged"] * 2 > part["seeds"]).any()),
                     "seed_half_width": float(part["seed_half_width"].mean())})
    return pd.DataFrame(rows)


def paired_difference(
    treated: pd.Series,
    control: pd.Series,
    *,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Mean of ``treated - control`` over the folds both have, with a paired t interval and p value.

    Args:
        treated, control: one value per fold (indexed by fold), e.g. each
            fold's mean test accuracy of two cells.

    Returns:
        ``difference``, ``ci_low``, ``ci_high``, ``p`` (two-sided paired t
        test, ``scipy.stats.ttest_rel``) and ``speakers`` (folds paired); NaN
        statistics below two folds.
    """
    paired = pd.concat({"treated": treated, "control": control}, axis=1).dropna()
    n = len(paired)
    if n == 0:
        return {"difference": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "speakers": 0}
    difference = float((paired["treated"] - paired["control"]).mean())
    if n < 2 or np.allclose(paired["treated"] - paired["control"], difference):
        # ttest_rel is undefined for one pair or a constant difference (zero variance).
        return {"difference": difference, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "speakers": n}
    result = stats.ttest_rel(paired["treated"], paired["control"])
    interval = result.confidence_interval(confidence)
    return {"difference": difference, "ci_low": float(interval.low), "ci_high": float(interval.high),
            "p": float(result.pvalue), "speakers": n}


def paired_cells(
    summary: pd.DataFrame,
    first: str,
    second: str,
    value: str = "test_accuracy",
    *,
    confidence: float = 0.95,
) -> dict[str, float]:
    """:func:`paired_difference` of two cells' fold means (``first - second``)."""
    folds = fold_means(summary[summary["cell"].isin([first, second])], value, ("cell",)).set_index(["cell", FOLD])
    means = folds["mean"]
    pick = {cell: means.xs(cell, level="cell") if cell in means.index.get_level_values("cell") else pd.Series(
        dtype=float) for cell in (first, second)}
    return paired_difference(pick[first], pick[second], confidence=confidence)


def paired_effects(pairs: pd.DataFrame, by: Sequence[str] = ("cell", "option", "value"), *,
                   value: str = "test_accuracy", confidence: float = 0.95) -> pd.DataFrame:
    """Intervention minus control, per ``by`` group, paired by speaker fold (or by seed off the folds).

    Args:
        pairs: :func:`gradlab.analysis.controlled.matched_pairs` (``value`` and
            ``value + "_control"`` per treated run, with its fold and seed).
        by: groups; values are compared as written (JSON-like values as text).

    Returns:
        One row per group: ``unit`` (``speaker`` or ``seed``), ``n`` (units
        paired), ``pairs`` (runs), ``treated`` and ``control`` (means over
        units), ``difference``, ``ci_low``, ``ci_high`` and ``p``
        (:func:`paired_difference`).
    """
    rows = []
    if pairs.empty:
        return pd.DataFrame(rows)
    frame = pairs.assign(**{column: pairs[column].map(str) for column in by if column == "value"})
    for key, part in frame.groupby(list(by), sort=True, observed=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        folds = part[FOLD].dropna() if FOLD in part.columns else pd.Series(dtype=object)
        unit = FOLD if folds.nunique() > 1 else "seed"
        means = part.groupby(unit, observed=True)[[value, f"{value}_control"]].mean()
        result = paired_difference(means[value], means[f"{value}_control"], confidence=confidence)
        rows.append({**dict(zip(by, key)), "unit": "speaker" if unit == FOLD else "seed", "n": result["speakers"],
                     "pairs": len(part), "treated": float(means[value].mean()),
                     "control": float(means[f"{value}_control"].mean()),
                     **{name: result[name] for name in ("difference", "ci_low", "ci_high", "p")}})
    return pd.DataFrame(rows)


def welch_difference(first: Sequence[float], second: Sequence[float], *, confidence: float = 0.95) -> dict[str, float]:
    """Mean of ``first`` minus mean of ``second`` with a Welch t interval and p value (unpaired runs).

    For one test speaker, where seeds are the only replication and nothing pairs them across cells.
    Returns the keys of :func:`paired_difference`, with ``speakers`` 1 and ``runs`` (both sides).
    """
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return {"difference": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "speakers": 0, "runs": 0}
    difference = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return {"difference": difference, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "speakers": 1,
                "runs": len(a) + len(b)}
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(confidence)
    return {"difference": difference, "ci_low": float(interval.low), "ci_high": float(interval.high),
            "p": float(result.pvalue), "speakers": 1, "runs": len(a) + len(b)}
