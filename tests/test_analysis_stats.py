"""Statistics across seeds, checked against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import FACTOR, all_frames, gradients_frame
from scipy import stats as scipy_stats

from gradlab.analysis import (
    accuracy_table,
    config_groups,
    first_to_last_ratio,
    log_gradient_profile,
    mean_interval,
    select_stages,
    stage_steps,
    summarise,
)


def test_mean_interval_is_the_student_t_interval():
    values = [1.0, 2.0, 6.0]
    # Hand computation: mean 3, s = sqrt(7), t_{0.975, 2} = 4.302653.
    low, high = mean_interval(values)
    half = 4.302652729749464 * np.sqrt(7.0) / np.sqrt(3.0)
    assert (low, high) == pytest.approx((3.0 - half, 3.0 + half), rel=1e-12)
    # Wider than the sample's range, unlike a bootstrap over three values.
    assert low < min(values) and high > max(values)
    assert mean_interval(values, confidence=0.5) == pytest.approx(
        scipy_stats.t.interval(0.5, 2, loc=3.0, scale=np.sqrt(7.0 / 3.0)), rel=1e-12)


def test_mean_interval_degenerate_cases():
    assert all(np.isnan(mean_interval([3.0])))  # one seed: no interval, never a zero-width one
    assert all(np.isnan(mean_interval([])))
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert mean_interval([1.0, np.nan, 3.0]) == pytest.approx(mean_interval([1.0, 3.0]))
    assert all(np.isnan(mean_interval([-np.inf, 1.0, 2.0])))
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=95)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_mean_interval_coverage_is_nominal(n):
    # 4,000 simulated experiments of n seeds from a normal with known mean.
    rng = np.random.default_rng(n)
    samples = rng.normal(loc=2.0, scale=3.0, size=(4000, n))
    covered = [low <= 2.0 <= high for low, high in map(mean_interval, samples)]
    assert 0.93 <= np.mean(covered) <= 0.97


def test_summarise_groups_match_mean_interval():
    frame = pd.DataFrame({"cell": ["A", "A", "A", "B", "B", "C"], "value": [1.0, 2.0, 6.0, 4.0, 4.0, 7.0]})
    result = summarise(frame, "value", ["cell"]).set_index("cell")
    assert list(result.columns) == ["mean", "ci_low", "ci_high", "seeds"]
    assert result.loc["A", "mean"] == 3.0 and result.loc["A", "seeds"] == 3
    assert (result.loc["A", "ci_low"], result.loc["A", "ci_high"]) == pytest.approx(mean_interval([1.0, 2.0, 6.0]))
    assert (result.loc["B", "ci_low"], result.loc["B", "ci_high"]) == (4.0, 4.0)
    assert np.isnan(result.loc["C", "ci_low"]) and result.loc["C", "seeds"] == 1


def test_summarise_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        summarise(pd.DataFrame({"g": [0], "v": [1.0]}), "v", ["g"], confidence=95)


def test_accuracy_table_by_cell():
    summary = all_frames(seeds=(0, 1, 2))["summary"]
    table = accuracy_table(summary).set_index("cell")
    # Seeds 0, 1, 2 add 0.00, 0.01, 0.02 to the base accuracy.
    assert table.loc["GRU", "mean"] == pytest.approx(0.91)
    assert table.loc["RNN_TANH", "mean"] == pytest.approx(0.41)
    assert (table.loc["GRU", "ci_low"], table.loc["GRU", "ci_high"]) == pytest.approx(mean_interval([0.90, 0.91, 0.92]))
    assert (table["seeds"] == 3).all()


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([0, 4, 8, 12], {"init": 0, "early": 4, "late": 12}),
        ([12, 0, 8, 8], {"init": 0, "early": 8, "late": 12}),
        ([0, 5], {"init": 0, "late": 5}),
        ([0], {"init": 0}),
        ([3, 9], {"early": 3, "late": 9}),
    ],
)
def test_stage_steps(steps, expected):
    assert stage_steps(steps) == expected


def test_select_stages_per_run():
    # Runs recorded at different steps get their own early/late steps.
    frame = pd.concat([gradients_frame("a", "GRU", 0, steps=(0, 2, 6)), gradients_frame("b", "GRU", 1, steps=(0, 3))])
    staged = select_stages(frame)
    stages = staged.groupby(["run_id", "stage"], observed=True)["step"].unique().map(list).to_dict()
    assert stages == {("a", "init"): [0], ("a", "early"): [2], ("a", "late"): [6], ("b", "init"): [0], ("b", "late"): [3]}


def test_log_gradient_profile_is_mean_of_log10():
    frame = pd.concat([gradients_frame(f"r{seed}", "RNN_TANH", seed, seq_len=3) for seed in (0, 1)])
    profile = log_gradient_profile(frame)
    row = profile[(profile["stage"] == "init") & (profile["timestep"] == 0)].iloc[0]
    # grad_norm = 0.1 * (1 + 0.1 seed) * 0.5 ** 2 at step 0, timestep 0.
    expected = np.mean([np.log10(0.1 * 1.0 * 0.25), np.log10(0.1 * 1.1 * 0.25)])
    assert row["mean"] == pytest.approx(expected)
    assert row["seeds"] == 2


def test_first_to_last_ratio_closed_form():
    frames = all_frames(seeds=(0, 1), seq_len=5)
    ratios = first_to_last_ratio(frames["gradients"], frames["summary"])
    assert len(ratios) == 8 and set(ratios["seq_len"]) == {5}
    for row in ratios.itertuples():
        assert row.ratio == pytest.approx(FACTOR[(row.cell, "h")] ** 4)
    cell_state = first_to_last_ratio(frames["gradients"], state="c", stage="late")
    assert list(cell_state["cell"]) == ["LSTM", "LSTM"]
    assert cell_state["ratio"].to_numpy() == pytest.approx(FACTOR[("LSTM", "c")] ** 4)


def test_first_to_last_ratio_backward_direction():
    frame = gradients_frame("a", "GRU", 0, seq_len=4).assign(direction="backward")
    ratio = first_to_last_ratio(frame, direction="backward")["ratio"].iloc[0]
    # Backward: first = timestep T-1, last = timestep 0.
    assert ratio == pytest.approx(0.9 ** -3)


def test_config_groups_split_varying_columns():
    summary = all_frames(cells=("GRU",), seeds=(0, 1))["summary"]
    both = pd.concat([summary, summary.assign(run_id=summary["run_id"] + "-mean", readout="mean")])
    both = both.assign(sweep="s")
    groups = dict(config_groups(both))
    assert sorted(groups) == ["s readout=last", "s readout=mean"]
    assert list(groups["s readout=mean"]["run_id"]) == ["gru-s0-mean", "gru-s1-mean"]
    assert [label for label, _ in config_groups(both, exclude=("readout",))] == ["s"]


def test_underflowed_norm_gives_minus_infinity_not_nan():
    import warnings

    from gradlab.analysis.stats import log10

    frame = pd.DataFrame({"cell": ["A"] * 3 + ["B"] * 3, "value": [0.0, 1e-3, 1e-2, 1e-3, 1e-2, 1e-1]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or invalid-value warnings
        stats = summarise(frame.assign(log=log10(frame["value"])), "log", ["cell"])
    a, b = stats.set_index("cell").loc["A"], stats.set_index("cell").loc["B"]
    assert a["mean"] == -np.inf and np.isnan(a["ci_low"]) and np.isnan(a["ci_high"])
    assert b["mean"] == pytest.approx(-2.0)


def test_length_slopes_leave_out_underflowed_ratios():
    from gradlab.analysis.stats import length_fit, length_slopes, underflowed_lengths

    ratios = pd.DataFrame({"cell": ["RNN_TANH"] * 3, "seq_len": [10, 20, 40], "ratio": [1e-2, 1e-4, 0.0]})
    assert length_slopes(ratios)["RNN_TANH"] == pytest.approx(-0.2)  # two decades per 10 steps
    assert underflowed_lengths(ratios) == {"RNN_TANH": [40]}
    fit = length_fit(ratios).iloc[0]
    assert fit["intercept"] == pytest.approx(0.0) and fit["seeds"] == 2
