"""The intervals now taken from scipy.stats equal the textbook formulas gradlab computed by hand before."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradlab.analysis.compare import holm
from gradlab.analysis.folds import FOLD, fold_means, paired_difference, t_interval, welch_difference
from gradlab.analysis.stats import mean_interval, summarise

SAMPLES = [np.array([0.61, 0.55, 0.70]), np.array([0.2, 0.9, 0.4, 0.35, 0.5, 0.45, 0.8, 0.3, 0.6, 0.1]),
           np.array([3.0, 3.5])]


def _t_formula(values, confidence=0.95):
    """mean ± t_{(1+c)/2, n-1} s / sqrt(n), written out."""
    n = len(values)
    mean = sum(values) / n
    s = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * s / n ** 0.5
    return mean - half, mean + half


@pytest.mark.parametrize("values", SAMPLES)
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_one_sample_t_intervals_match_the_formula(values, confidence):
    low, high = _t_formula(values, confidence)
    assert mean_interval(values, confidence) == pytest.approx((low, high), rel=1e-12)
    mean, t_low, t_high = t_interval(values, confidence)
    assert (t_low, t_high) == pytest.approx((low, high), rel=1e-12) and mean == pytest.approx(values.mean())
    table = summarise(pd.DataFrame({"g": "a", "v": values}), "v", ["g"], confidence=confidence)
    assert (table.loc[0, "ci_low"], table.loc[0, "ci_high"]) == pytest.approx((low, high), rel=1e-12)


def test_one_sample_edges_keep_their_meaning():
    assert mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)  # no spread: the value itself
    assert all(np.isnan(mean_interval([0.5])))
    assert all(np.isnan(mean_interval([0.5, -np.inf, 0.2])))
    table = summarise(pd.DataFrame({"g": ["a", "a", "b"], "v": [1.0, 1.0, 2.0]}), "v", ["g"])
    assert table.loc[0, ["ci_low", "ci_high"]].tolist() == [1.0, 1.0]
    assert table.loc[1, ["ci_low", "ci_high"]].isna().all()


def test_fold_half_width_matches_the_formula():
    rows = [{"cell": "GRU", FOLD: fold, "seed": seed, "test_accuracy": value, "status": "finished"}
            for fold, values in (("s1", SAMPLES[0]), ("s2", SAMPLES[1]), ("s3", [0.4])) for seed, value in
            enumerate(values)]
    table = fold_means(pd.DataFrame(rows)).set_index(FOLD)
    for fold, values in (("s1", SAMPLES[0]), ("s2", SAMPLES[1])):
        low, high = _t_formula(values)
        assert table.loc[fold, "seed_half_width"] == pytest.approx((high - low) / 2, rel=1e-12)
    assert np.isnan(table.loc["s3", "seed_half_width"])


def test_welch_interval_matches_the_welch_satterthwaite_formula():
    a, b = SAMPLES[1], SAMPLES[0]
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * (va + vb) ** 0.5
    difference = a.mean() - b.mean()
    result = welch_difference(a, b)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((difference - half, difference + half), rel=1e-12)
    t = difference / (va + vb) ** 0.5
    assert result["p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-10)


def test_paired_interval_matches_the_one_sample_interval_of_differences():
    treated = pd.Series([0.7, 0.8, 0.65, 0.9], index=["s1", "s2", "s3", "s4"])
    control = pd.Series([0.6, 0.75, 0.66, 0.7], index=["s1", "s2", "s3", "s4"])
    result = paired_difference(treated, control)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(_t_formula((treated - control).to_numpy()),
                                                                 rel=1e-12)


def _holm_by_hand(p_values, alpha=0.05):
    """Holm (1979) step by step: adjusted p of the k-th smallest is max over j <= k of (m - j + 1) p_(j)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda index: p_values[index])
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@pytest.mark.parametrize("p_values", [[0.01, 0.04, 0.03, 0.005], [0.2, 0.01], [0.5], list(itertools.repeat(0.01, 5))])
def test_holm_matches_the_step_down_procedure(p_values):
    adjusted, rejected = holm(p_values)
    assert adjusted.tolist() == pytest.approx(_holm_by_hand(p_values))
    assert rejected.tolist() == [value <= 0.05 for value in _holm_by_hand(p_values)]
