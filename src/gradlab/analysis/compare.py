"""Comparisons between two cells with symmetric verdicts, and seed-level associations.

A claim such as "the tanh RNN's gradient ratio is much smaller than the
LSTM's" is checked on per-seed values of the two cells (ratios on a log10
scale). The result has four outcomes, symmetric between the two sides:

- **supported**: the interval for the difference lies wholly on the claimed
  side, beyond the claim's effect size (``margin``: one decade for "much
  smaller" gradient ratios, 0 for a plain "smaller");
- **contradicted**: it lies wholly on the other side of zero;
- **not clear**: otherwise;
- **too few seeds**: either cell has fewer than :data:`MIN_SEEDS` values.

Each check yields one p-value (twice the smaller of its two one-sided Welch t
tests, one per verdict), and :func:`decide` corrects all the checks of one
report together with Holm's step-down method, so the chance that any verdict
of a report is wrong stays at or below ``alpha`` when nothing differs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

#: Fewest seeds per cell for a verdict other than "too few seeds".
MIN_SEEDS = 5
#: Effect size of a "much smaller" claim about gradient ratios, in decades (log10 units).
MUCH_SMALLER_DECADES = 1.0
VERDICTS: tuple[str, ...] = ("supported", "contradicted", "not clear", "too few seeds")


@dataclass(frozen=True)
class Comparison:
    """One check of ``first <claim> second`` on per-seed values, before correction.

    Fields are floats, or arrays when :func:`compare` was given batches.

    Attributes:
        difference: mean of ``first`` minus mean of ``second``.
        ci_low, ci_high: Welch t interval of the difference at ``confidence``.
        probability_of_improvement: P(a seed of ``first`` beats a seed of
            ``second`` in the claimed direction), ties counting half
            (Mann-Whitney U over n_first * n_second, as in rliable).
        p_value: twice the smaller one-sided p-value (supported vs contradicted), at most 1.
        toward_claim: whether the smaller p-value is the supporting one.
        seeds_first, seeds_second: values behind each side.
        claim: ``"less"`` or ``"greater"``; margin: the claim's effect size.
        confidence: of the interval.
    """

    difference: np.ndarray | float
    ci_low: np.ndarray | float
    ci_high: np.ndarray | float
    probability_of_improvement: np.ndarray | float
    p_value: np.ndarray | float
    toward_claim: np.ndarray | bool
    seeds_first: int
    seeds_second: int
    claim: str
    margin: float
    confidence: float

    @property
    def testable(self) -> bool:
        return min(self.seeds_first, self.seeds_second) >= MIN_SEEDS


def compare(
    first: Sequence[float] | np.ndarray,
    second: Sequence[float] | np.ndarray,
    *,
    claim: str = "less",
    margin: float = 0.0,
    confidence: float = 0.95,
) -> Comparison:
    """Check the claim ``first < second`` (``claim="less"``) or ``first > second`` on per-seed values.

    The supporting test asks whether the difference lies beyond ``margin`` on
    the claimed side; the contradicting one whether it lies on the other side
    of zero. Both are Welch t tests (:func:`scipy.stats.ttest_ind`,
    ``equal_var=False``): seeds of two cells are independent samples.

    Args:
        first, second: per-seed values (log10 for ratios); the last axis holds
            seeds, leading axes are independent checks of the same sizes. NaN
            values are not allowed.
        claim: ``"less"`` or ``"greater"``.
        margin: the effect size the claim needs, >= 0, in the values' units.
        confidence: of the reported interval.

    Returns:
        A :class:`Comparison`.
    """
    if claim not in ("less", "greater"):
        raise ValueError(f"claim must be 'less' or 'greater', got {claim!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    n_first, n_second = first.shape[-1], second.shape[-1]
    sign = -1.0 if claim == "less" else 1.0
    # Nearly equal values make scipy warn of precision loss; its answer (no separation) is what the verdict needs.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if min(n_first, n_second) >= 2:
            interval = scipy_stats.ttest_ind(first, second, axis=-1, equal_var=False).confidence_interval(confidence)
            low, high = interval.low, interval.high
            # Supported: sign * (first - second) > margin; contradicted: sign * (first - second) < 0.
            shifted = first - sign * margin
            support = scipy_stats.ttest_ind(shifted, second, axis=-1, equal_var=False, alternative=claim).pvalue
            other = "greater" if claim == "less" else "less"
            contradict = scipy_stats.ttest_ind(first, second, axis=-1, equal_var=False, alternative=other).pvalue
            improvement = scipy_stats.mannwhitneyu(first, second, axis=-1, alternative="two-sided").statistic
            improvement = improvement / (n_first * n_second)
            improvement = 1.0 - improvement if claim == "less" else improvement
        else:
            shape = np.broadcast_shapes(first.shape[:-1], second.shape[:-1])
            low = high = support = contradict = improvement = np.full(shape, np.nan)
    difference = first.mean(axis=-1) - second.mean(axis=-1)
    # Equal values on both sides make t undefined: nothing separates them.
    support, contradict = np.nan_to_num(support, nan=1.0), np.nan_to_num(contradict, nan=1.0)
    p_value = np.minimum(1.0, 2.0 * np.minimum(support, contradict))
    return Comparison(
        difference=_scalar(difference), ci_low=_scalar(low), ci_high=_scalar(high),
        probability_of_improvement=_scalar(improvement), p_value=_scalar(p_value),
        toward_claim=_scalar(support <= contradict), seeds_first=n_first, seeds_second=n_second,
        claim=claim, margin=float(margin), confidence=confidence,
    )


def _scalar(value):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value


def holm(p_values: Sequence[float] | np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction over the last axis.

    The k-th smallest p-value (1-based) is compared with alpha / (m - k + 1);
    rejection stops at the first that fails. Adjusted p-values are the running
    maximum of (m - k + 1) * p_(k), capped at 1 (Holm 1979).

    Written out because scipy has no Holm: ``scipy.stats.false_discovery_control``
    is Benjamini-Hochberg/Yekutieli, which bounds the expected share of false
    verdicts, not the chance of any false verdict that the report's verdicts claim.

    Returns:
        ``(adjusted, rejected)``, in the input order.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    m = p_values.shape[-1]
    if m == 0:
        return p_values.copy(), np.zeros(p_values.shape, dtype=bool)
    order = np.argsort(p_values, axis=-1, kind="stable")
    ranked = np.take_along_axis(p_values, order, axis=-1)
    factors = m - np.arange(m)
    adjusted_ranked = np.minimum(1.0, np.maximum.accumulate(ranked * factors, axis=-1))
    adjusted = np.empty_like(adjusted_ranked)
    np.put_along_axis(adjusted, order, adjusted_ranked, axis=-1)
    return adjusted, adjusted <= alpha


def verdicts(adjusted: np.ndarray, toward_claim: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Verdict strings from Holm-adjusted p-values and the side each check leans to."""
    adjusted, toward_claim = np.asarray(adjusted), np.asarray(toward_claim, dtype=bool)
    decided = adjusted <= alpha
    return np.where(decided, np.where(toward_claim, "supported", "contradicted"), "not clear")


def decide(comparisons: Sequence[Comparison], alpha: float = 0.05) -> list[tuple[str, float]]:
    """Verdicts of every check of one report, Holm-corrected together.

    Checks with too few seeds get "too few seeds" and are not counted in the
    correction: they make no inference.

    Returns:
        ``(verdict, adjusted p-value)`` per comparison, in order (p NaN when untestable).
    """
    testable = [index for index, check in enumerate(comparisons) if check.testable]
    result: list[tuple[str, float]] = [("too few seeds", float("nan"))] * len(comparisons)
    if testable:
        adjusted, _ = holm([comparisons[index].p_value for index in testable], alpha)
        sides = [comparisons[index].toward_claim for index in testable]
        for index, verdict, p_value in zip(testable, verdicts(adjusted, np.array(sides), alpha), adjusted):
            result[index] = (str(verdict), float(p_value))
    return result


def seed_association(
    frame: pd.DataFrame,
    x: str,
    y: str,
    *,
    by: str | None = "cell",
    method: str = "spearman",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Correlation between two per-seed quantities, within each group and pooled across groups.

    Each row of ``frame`` is one seed (one run). A correlation over a handful
    of group means says little (over four means, no two-sided p-value can fall
    below 0.083); over seeds it has an interval and an honest n. It measures
    association, not cause.

    Args:
        frame: one row per run, with columns ``x``, ``y`` (and ``by``).
        x, y: the two quantities (for instance log10 first-to-last ratio and
            best validation accuracy).
        by: grouping column (``None``: pooled only).
        method: ``"spearman"`` (Pearson on ranks, Fisher-z interval; an
            approximation for ranks) or ``"pearson"`` (Fisher-z interval from
            :func:`scipy.stats.pearsonr`).
        confidence: of the interval.

    Returns:
        One row per scope (each group, then ``"pooled"``): ``scope``, ``r``,
        ``ci_low``, ``ci_high``, ``p_value`` and ``seeds``. Intervals need 4
        seeds; fewer give NaN.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    data = frame[[x, y] + ([by] if by else [])].replace([np.inf, -np.inf], np.nan).dropna()
    scopes = [(str(name), part) for name, part in data.groupby(by, sort=True, observed=True)] if by else []
    scopes.append(("pooled", data))
    rows = []
    for scope, part in scopes:
        xs, ys = part[x].to_numpy(dtype=np.float64), part[y].to_numpy(dtype=np.float64)
        if method == "spearman":
            xs, ys = scipy_stats.rankdata(xs), scipy_stats.rankdata(ys)
        r = low = high = p_value = float("nan")
        if len(xs) >= 3 and np.ptp(xs) > 0 and np.ptp(ys) > 0:
            result = scipy_stats.pearsonr(xs, ys)
            r, p_value = float(result.statistic), float(result.pvalue)
            if len(xs) >= 4:
                interval = result.confidence_interval(confidence)
                low, high = float(interval.low), float(interval.high)
        rows.append({"scope": scope, "r": r, "ci_low": low, "ci_high": high, "p_value": p_value, "seeds": len(xs)})
    return pd.DataFrame(rows, columns=["scope", "r", "ci_low", "ci_high", "p_value", "seeds"])
