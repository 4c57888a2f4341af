"""rliable-style aggregates on hand-built predictions tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import N_EXAMPLES, predictions_frame, run_id_of

from gradlab.analysis import accuracy_aggregate, interquartile_mean, iqm_interval
from gradlab.analysis.aggregate import correct_matrix


def test_interquartile_mean_by_hand():
    # Eight values: the middle four are 3, 4, 5, 6.
    assert interquartile_mean([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)
    assert interquartile_mean([[1, 2, 3, 4], [4, 4, 4, 40]], axis=1) == pytest.approx([2.5, 4.0])


def test_correct_matrix_rows_are_seeds_and_columns_examples():
    frame = pd.concat([predictions_frame(run_id_of("GRU", seed), "GRU", seed) for seed in (2, 0)])
    correct, seeds, examples = correct_matrix(frame)
    assert correct.shape == (2, N_EXAMPLES) and list(seeds) == [0, 2]
    assert correct.mean(axis=1) == pytest.approx([0.90, 0.92])
    with pytest.raises(ValueError, match="different test examples"):
        correct_matrix(frame[~((frame["seed"] == 0) & (frame["example"] == 3))])


def test_iqm_interval_resamples_seeds_and_examples():
    rng = np.random.default_rng(0)
    correct = (rng.random((6, 90)) < 0.7).astype(float)
    iqm, low, high, method = iqm_interval(correct, n_resamples=300, seed=1)
    assert iqm == pytest.approx(interquartile_mean(correct.mean(axis=1)))
    assert low < iqm < high and method == "BCa"
    # Test-set noise is part of the interval: identical seeds still leave the examples' uncertainty.
    same = np.repeat(correct[:1], 6, axis=0)
    _, low_same, high_same, _ = iqm_interval(same, n_resamples=300, seed=1)
    p = same[0].mean()
    assert high_same - low_same == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / 90), rel=0.35)
    # Every prediction alike: the interval is the value itself, and says so.
    assert iqm_interval(np.ones((4, 10)), n_resamples=50) == (1.0, 1.0, 1.0, "none")


def test_accuracy_aggregate_per_cell():
    frame = pd.concat([predictions_frame(run_id_of(cell, seed), cell, seed) for cell in ("RNN_TANH", "GRU")
                       for seed in range(5)])
    table = accuracy_aggregate(frame, n_resamples=200, solve_level=0.9).set_index("cell")
    # GRU seeds score 0.90..0.94: IQM over five is the trimmed mean of the middle values.
    assert table.loc["GRU", "iqm"] == pytest.approx(interquartile_mean([0.90, 0.91, 0.92, 0.93, 0.94]))
    assert table.loc["GRU", "seeds"] == 5 and table.loc["GRU", "examples"] == N_EXAMPLES
    assert table.loc["GRU", "solved_of"] == "5 of 5" and table.loc["RNN_TANH", "solved"] == 0
    assert table.loc["RNN_TANH", "solved_high"] < 0.6  # Clopper-Pearson upper bound of 0 of 5
    assert "bootstrap over seeds and test examples" in table.loc["GRU", "interval"]


def test_stratified_statistic_equals_a_loop_over_resamples():
    from gradlab.analysis.aggregate import _stratified_statistic

    rng = np.random.default_rng(2)
    correct = (rng.random((5, 20)) < 0.6).astype(float)
    seeds, examples = rng.integers(0, 5, (4, 5)), rng.integers(0, 20, (4, 20))
    statistic = _stratified_statistic(correct)
    expected = [interquartile_mean(correct[seeds[b]][:, examples[b]].mean(axis=1)) for b in range(4)]
    assert statistic(seeds, examples) == pytest.approx(expected)
    # One sample resampled, the other held whole (as in BCa's jackknife).
    assert statistic(seeds, np.arange(20)) == pytest.approx(
        [interquartile_mean(correct[seeds[b]].mean(axis=1)) for b in range(4)])
