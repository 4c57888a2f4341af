"""Curve features and the blind test that labels unlabelled RNN/LSTM/GRU curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradlab.analysis.curves import blind_test, curve_features

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
SHAPES = {"RNN_TANH": (0.6, 30.0), "LSTM": (0.85, 20.0), "GRU": (0.9, 6.0)}  # final level, time constant


def _history(shapes, epochs=100, seeds=5, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    rows, summary = [], []
    for speaker in SPEAKERS:
        for s in range(seeds):
            for cell, (level, tau) in shapes.items():
                run_id = f"{cell}-{speaker}-s{s}"
                summary.append({"run_id": run_id, "cell": cell, "seed": s, "test_speaker": speaker})
                for epoch in range(epochs):
                    accuracy = 1 / 3 + (level - 1 / 3) * (1 - np.exp(-(epoch + 1) / tau)) + rng.normal(0, noise)
                    for split, metric, value in (("validation", "accuracy", accuracy),
                                                 ("train", "loss", 1.1 * (1.05 - accuracy))):
                        rows.append({"run_id": run_id, "cell": cell, "seed": s, "epoch": epoch, "step": epoch + 1,
                                     "split": split, "metric": metric, "value": value})
    return pd.DataFrame(rows), pd.DataFrame(summary)


def test_features_by_hand():
    history, summary = _history({"GRU": (0.9, 6.0)}, epochs=20, seeds=1, noise=0.0)
    features = curve_features(history, summary).set_index("run_id").loc["GRU-george-s0"]
    curve = 1 / 3 + (0.9 - 1 / 3) * (1 - np.exp(-np.arange(1, 21) / 6.0))
    assert features["final"] == pytest.approx(curve[-2:].mean())
    assert features["epochs_to_90"] == 1 + np.argmax(curve >= curve[0] + 0.9 * (curve.max() - curve[0]))
    assert features["late_rise"] == pytest.approx(curve[-2:].mean() - curve[-6:-4].mean())
    assert features["test_speaker"] == "george"


def test_distinct_shapes_are_labelled_blind_and_the_halves_never_meet():
    history, summary = _history(SHAPES)
    result = blind_test(curve_features(history, summary))
    # Folds 3+3 and seeds 3+2: 3x2 + 3x3 held-out triples.
    assert result["triples"] == 15 and result["correct"] == 15 and result["runs_correct"] == 45
    # Two-sided Clopper-Pearson: the lower end of 15 of 15 is the 2.5% quantile of Beta(15, 1), 0.025^(1/15)
    # (a one-sided interval would start at 0.05^(1/15)); the one-sided p is (1/6)^15.
    assert result["ci_low"] == pytest.approx(stats.beta.ppf(0.025, 15, 1)) == pytest.approx(0.025 ** (1 / 15))
    assert result["ci_high"] == 1 and result["p"] == pytest.approx((1 / 6) ** 15)
    for round_ in result["rounds"]:
        assert not set(round_["derive_folds"]) & set(round_["test_folds"])
        assert not set(round_["derive_seeds"]) & set(round_["test_seeds"])
    rules = result["rules"].set_index(["cell", "feature"])["mean"]
    assert rules[("GRU", "epochs_to_90")] < rules[("LSTM", "epochs_to_90")]
    assert rules[("RNN_TANH", "final")] < rules[("LSTM", "final")]


def test_identical_shapes_stay_near_chance():
    same = {cell: (0.8, 10.0) for cell in SHAPES}
    rates = [blind_test(curve_features(*_history(same, epochs=30, noise=0.03, seed=k)))["rate"] for k in range(4)]
    assert np.mean(rates) < 0.45  # chance is 1/6; perfect labelling would be 1
