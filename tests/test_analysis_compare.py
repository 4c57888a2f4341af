"""Comparisons between cells: intervals, verdicts, Holm's correction and seed-level associations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from gradlab.analysis import compare, decide, holm, seed_association
from gradlab.analysis.compare import MIN_SEEDS, verdicts


def test_holm_matches_a_hand_computation():
    # Sorted p: 0.01, 0.02, 0.03, 0.5 -> adjusted 4*0.01, max(0.04, 3*0.02), max(0.06, 2*0.03), max(0.06, 0.5).
    adjusted, rejected = holm([0.03, 0.5, 0.01, 0.02], alpha=0.05)
    assert adjusted == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert list(rejected) == [False, False, True, False]
    # Step-down: a p-value under alpha / m alone is rejected even when the next is not.
    assert list(holm([0.001, 0.04, 0.045])[1]) == [True, False, False]


def test_compare_interval_is_welch():
    a, b = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([3.0, 5.0, 4.0, 6.0, 8.0, 7.0])
    result = compare(a, b, claim="less")
    welch = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert result.difference == pytest.approx(a.mean() - b.mean())
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(welch.confidence_interval(0.95)))
    # One-sided support test; the report's p-value is twice the smaller side.
    assert result.p_value == pytest.approx(welch.pvalue)
    assert result.toward_claim
    # Probability of improvement: pairs where a seed of a is below a seed of b, ties half.
    pairs = [(x < y) + 0.5 * (x == y) for x in a for y in b]
    assert result.probability_of_improvement == pytest.approx(np.mean(pairs))


def test_verdicts_are_symmetric():
    rng = np.random.default_rng(0)
    low, high = rng.normal(0.0, 1.0, 8), rng.normal(3.0, 1.0, 8)
    assert decide([compare(low, high, claim="less")])[0][0] == "supported"
    assert decide([compare(low, high, claim="greater")])[0][0] == "contradicted"
    assert decide([compare(high, low, claim="less")])[0][0] == "contradicted"
    same = rng.normal(0.0, 1.0, 8)
    assert decide([compare(low, same)])[0][0] == "not clear"


def test_too_few_seeds_is_its_own_verdict_and_not_counted():
    few = compare([1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0, 13.0])
    assert MIN_SEEDS == 5 and not few.testable
    many = compare(np.arange(6.0), np.arange(6.0) + 10)
    result = decide([few, many])
    assert result[0] == ("too few seeds", pytest.approx(np.nan, nan_ok=True))
    # Only one check counts in the correction: its adjusted p equals its own.
    assert result[1][0] == "supported" and result[1][1] == pytest.approx(many.p_value)


def test_much_smaller_claim_needs_its_effect_size():
    # Log10 ratios half a decade apart, very precisely measured: "smaller" holds, "much smaller" (one decade) does not.
    rng = np.random.default_rng(1)
    a, b = rng.normal(-3.5, 0.05, 10), rng.normal(-3.0, 0.05, 10)
    assert decide([compare(a, b, claim="less")])[0][0] == "supported"
    assert decide([compare(a, b, claim="less", margin=1.0)])[0][0] == "not clear"
    assert decide([compare(a - 1.0, b, claim="less", margin=1.0)])[0][0] == "supported"


def _simulated_report_errors(effect: float, margins: list[float], *, correct: bool, reports: int = 4000,
                             seeds: int = 5) -> np.ndarray:
    """Per simulated report, whether any check got a verdict other than "not clear"."""
    rng = np.random.default_rng(7)
    checks = len(margins)
    first = rng.normal(0.0, 1.0, (reports, checks, seeds))
    second = rng.normal(effect, 1.0, (reports, checks, seeds))
    p_values, sides = np.empty((reports, checks)), np.empty((reports, checks), dtype=bool)
    for k, margin in enumerate(margins):
        result = compare(first[:, k], second[:, k], claim="less", margin=margin)
        p_values[:, k], sides[:, k] = result.p_value, result.toward_claim
    adjusted = holm(p_values)[0] if correct else p_values
    return verdicts(adjusted, sides)


def test_null_effects_rarely_give_a_verdict_across_many_reports():
    # Six checks per report, none with a real difference; two are "much smaller" claims.
    margins = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    wrong = (_simulated_report_errors(0.0, margins, correct=True) != "not clear").any(axis=1).mean()
    assert wrong <= 0.05
    # Without Holm's correction the same reports go wrong far more often: the test can fail.
    uncorrected = (_simulated_report_errors(0.0, margins, correct=False) != "not clear").any(axis=1).mean()
    assert uncorrected > 0.15


def test_real_effects_are_found():
    # A difference of three standard deviations, ten seeds per cell, six checks per report.
    found = _simulated_report_errors(3.0, [0.0] * 6, correct=True, reports=500, seeds=10)
    assert (found == "supported").mean() > 0.95
    assert not (found == "contradicted").any()


def test_seed_association_matches_scipy():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"cell": ["A"] * 12 + ["B"] * 12, "x": rng.normal(size=24)})
    frame["y"] = frame["x"] * 0.8 + rng.normal(scale=0.5, size=24)
    table = seed_association(frame, "x", "y").set_index("scope")
    assert list(table.index) == ["A", "B", "pooled"]
    assert list(table["seeds"]) == [12, 12, 24]
    assert table.loc["pooled", "r"] == pytest.approx(scipy_stats.spearmanr(frame["x"], frame["y"]).statistic)
    assert table.loc["A", "r"] == pytest.approx(scipy_stats.spearmanr(frame["x"][:12], frame["y"][:12]).statistic)
    assert table.loc["pooled", "ci_low"] < table.loc["pooled", "r"] < table.loc["pooled", "ci_high"]
    pearson = seed_association(frame, "x", "y", by=None, method="pearson").iloc[0]
    interval = scipy_stats.pearsonr(frame["x"], frame["y"]).confidence_interval()
    assert (pearson["ci_low"], pearson["ci_high"]) == pytest.approx((interval.low, interval.high))


def test_seed_association_needs_variation_and_seeds():
    frame = pd.DataFrame({"cell": ["A"] * 3, "x": [1.0, 1.0, 1.0], "y": [0.1, 0.2, 0.3]})
    row = seed_association(frame, "x", "y").iloc[0]
    assert np.isnan(row["r"]) and row["seeds"] == 3
