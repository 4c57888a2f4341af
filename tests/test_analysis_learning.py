"""Learning metrics and validation-only model selection on hand-built tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import all_frames, summary_row
from scipy import stats as scipy_stats

from gradlab.analysis import (
    beats_chance,
    chance_level,
    learning_table,
    most_accurate,
    run_learning,
    select_by_validation,
    selected_runs,
)
from gradlab.analysis.learning import classes_from_configs, smallest_denominator
from gradlab.analysis.stats import mean_interval
from gradlab.store import schema


def _history(run_id: str, cell: str, seed: int, accuracies: list[float]) -> pd.DataFrame:
    rows = [{"run_id": run_id, "cell": cell, "activation": "tanh", "seed": seed, "step": epoch + 1, "epoch": epoch,
             "split": "validation", "metric": "accuracy", "value": value, "wall_time": 0.0}
            for epoch, value in enumerate(accuracies)]
    return schema.conform(pd.DataFrame(rows), "history")


def _summary(rows: list[tuple[str, str, int]], **columns) -> pd.DataFrame:
    return schema.conform(pd.DataFrame([summary_row(run_id, cell, seed, **columns) for run_id, cell, seed in rows]),
                          "summary")


def test_beats_chance_is_a_one_sided_binomial_test():
    # 0.2 on 100 examples against chance 0.1: P(X >= 20) under Binomial(100, 0.1).
    p_value = scipy_stats.binom.sf(19, 100, 0.1)
    assert p_value < 0.05 and beats_chance(0.2, 100, 0.1)
    # The same accuracy on 10 examples is two correct answers: not distinguishable from chance.
    assert not beats_chance(0.2, 10, 0.1)
    # The best of 30 epochs must clear alpha / 30.
    assert beats_chance(0.17, 100, 0.1) and not beats_chance(0.17, 100, 0.1, tries=30)
    assert beats_chance(0.5, float("nan"), 0.1) is None


def test_chance_from_num_classes_or_known_dataset():
    summary = pd.DataFrame({"dataset": ["fsdd", "distance", "other", "fsdd"], "num_classes": [np.nan, np.nan, np.nan, 5]})
    chance = chance_level(summary)
    # FSDD's classes are its configured words: unknown without num_classes (see classes_from_configs).
    assert np.isnan(chance[0]) and chance[1] == pytest.approx(1 / 3)
    assert np.isnan(chance[2]) and chance[3] == 0.2
    assert chance_level(pd.DataFrame({"dataset": ["distance"]}))[0] == pytest.approx(1 / 3)  # no num_classes column


def test_a_run_that_never_learns_has_no_epochs_to_learn():
    # Two LSTM seeds: one rises to 0.9, one stays at chance (0.1 of 10 classes) for 20 epochs.
    rising = [0.1, 0.3, 0.6, 0.85] + [0.9] * 16
    flat = [0.1, 0.12, 0.09, 0.11] * 5
    history = pd.concat([_history("a", "LSTM", 0, rising), _history("b", "LSTM", 1, flat)])
    summary = _summary([("a", "LSTM", 0), ("b", "LSTM", 1)])
    runs = run_learning(history, summary).set_index("run_id")
    assert runs.loc["a", "learns"] and not runs.loc["b", "learns"]
    # 90% of the way from chance 0.1 to best 0.9 is 0.82, first reached at epoch 4.
    assert runs.loc["a", "epochs_to_learn"] == 4.0 and np.isnan(runs.loc["b", "epochs_to_learn"])
    # Final level: the last 10% of 20 epochs is 2, raised to the minimum of 3 epochs.
    assert runs.loc["b", "final"] == pytest.approx(np.mean(flat[-3:]))
    assert runs.loc["a", "slope"] == pytest.approx(0.0)
    table = learning_table(runs.reset_index()).iloc[0]
    assert table["seeds"] == 2 and table["learned"] == 1 and table["learned_of"] == "1 of 2 learned"
    assert table["epochs_to_learn"] == 4.0 and np.isnan(table["epochs_to_learn_low"])  # one learning run


def test_validation_size_from_predictions_or_the_accuracies_themselves():
    history = _history("a", "GRU", 0, [0.2] * 10)
    summary = _summary([("a", "GRU", 0)]).drop(columns=["n_validation"])
    # 0.2 alone is 1 of 5: at n = 5, 0.2 does not beat chance 0.1.
    assert not run_learning(history, summary)["learns"].iloc[0]
    predictions = pd.DataFrame({"run_id": ["a"] * 100, "split": ["validation"] * 100})
    assert bool(run_learning(history, summary, predictions)["learns"].iloc[0])
    # Accuracies of an old run on 90 clips: 17/90, 23/90, 31/90 have no smaller common denominator.
    assert smallest_denominator(np.array([17, 23, 31]) / 90) == 90
    assert bool(run_learning(_history("a", "GRU", 0, list(np.array([17, 23, 31]) / 90)), summary)["learns"].iloc[0])
    assert np.isnan(smallest_denominator([np.pi / 10], largest=1000))


def test_trend_says_rising_only_when_the_slope_interval_is_above_zero():
    histories, rows = [], []
    noise = np.random.default_rng(0).normal(0.0, 0.005, (4, 18))
    for seed in range(4):
        histories.append(_history(f"r{seed}", "RNN_RELU", seed, list(np.linspace(0.2, 0.6, 20) + 0.01 * seed)))
        histories.append(_history(f"f{seed}", "GRU", seed, [0.8, 0.9] + list(0.9 + noise[seed])))
        rows += [(f"r{seed}", "RNN_RELU", seed), (f"f{seed}", "GRU", seed)]
    runs = run_learning(pd.concat(histories), _summary(rows))
    table = learning_table(runs).set_index("cell")
    assert table.loc["RNN_RELU", "trend"] == "rising" and table.loc["GRU", "trend"] == "flat"
    slope = 0.4 / 19
    assert table.loc["RNN_RELU", "slope"] == pytest.approx(slope)
    assert (table.loc["GRU", "final_low"], table.loc["GRU", "final_high"]) == pytest.approx(
        mean_interval(runs.loc[runs["cell"] == "GRU", "final"]))


def test_most_accurate_only_among_cells_above_chance():
    table = pd.DataFrame({"cell": ["RNN_TANH", "GRU"], "mean": [0.36, 0.342], "ci_low": [0.30, 0.33],
                          "ci_high": [0.42, 0.344], "seeds": [5, 5]})
    assert most_accurate(table, chance=1 / 3) is None  # both intervals reach below chance
    assert most_accurate(table, chance=0.2)["cell"] == "RNN_TANH"


def test_select_by_validation_never_reads_test_accuracy():
    frames = []
    for lr, shift in ((0.01, 0.0), (0.1, 0.05)):
        summary = all_frames(seeds=(0, 1, 2))["summary"].assign(lr=lr)
        summary["best_val_accuracy"] += shift if lr == 0.1 else 0.0
        summary.loc[summary["cell"] == "LSTM", "best_val_accuracy"] -= 2 * shift  # LSTM prefers lr 0.01
        frames.append(summary.assign(run_id=summary["run_id"] + f"-lr{lr}"))
    summary = pd.concat(frames, ignore_index=True)
    selection = select_by_validation(summary, ("cell",), ("lr",)).set_index("cell")
    assert selection.loc["GRU", "lr"] == 0.1 and selection.loc["LSTM", "lr"] == 0.01
    assert (selection["seeds"] == 3).all() and (selection["candidates"] == 2).all()
    # Scrambling every test accuracy (and the last epoch's) changes no choice.
    rng = np.random.default_rng(0)
    scrambled = summary.assign(test_accuracy=rng.random(len(summary)), final_test_accuracy=rng.random(len(summary)))
    pd.testing.assert_frame_equal(select_by_validation(scrambled, ("cell",), ("lr",)).set_index("cell"), selection)
    chosen = selected_runs(summary, selection.reset_index(), ("lr",))
    assert len(chosen) == 12 and set(chosen.loc[chosen["cell"] == "GRU", "lr"]) == {0.1}
    with pytest.raises(ValueError, match="hidden"):
        select_by_validation(summary, ("cell",), ("hidden",))


def test_classes_from_run_configs():
    configs = [
        {"run_id": "a", "data": {"dataset": "fsdd", "words": ["one", "two", "three"]}},
        {"run_id": "b", "data": {"dataset": "speech-commands", "words": ["yes", "no"], "num_classes": 12}},
        {"run_id": "c", "data": {"dataset": "distance"}},
    ]
    assert classes_from_configs(configs) == {"a": 3, "b": 12}
