"""Speaker folds: fold means, intervals with the speaker as the unit, and paired differences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gradlab.analysis.folds import fold_means, has_folds, paired_cells, paired_difference, speaker_table

SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]


def _summary(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for f, speaker in enumerate(SPEAKERS):
        voice = rng.normal(0, 0.1)  # the speaker moves every cell alike
        for cell, level in (("GRU", 0.8), ("LSTM", 0.74)):
            for s in range(5):
                rows.append({"cell": cell, "test_speaker": speaker, "seed": s, "status": "finished",
                             "test_accuracy": level + voice + rng.normal(0, 0.02)})
    return pd.DataFrame(rows)


def test_fold_means_and_speaker_interval_equal_a_direct_computation():
    summary = _summary()
    assert has_folds(summary) and not has_folds(summary[summary.test_speaker == "theo"])
    table = speaker_table(summary).set_index("cell")
    for cell in ("GRU", "LSTM"):
        runs = summary[summary.cell == cell]
        means = runs.groupby("test_speaker")["test_accuracy"].mean().to_numpy()
        low, high = stats.t.interval(0.95, 5, loc=means.mean(), scale=stats.sem(means))
        assert table.loc[cell, "mean"] == pytest.approx(means.mean(), rel=1e-12)
        assert (table.loc[cell, "ci_low"], table.loc[cell, "ci_high"]) == pytest.approx((low, high), rel=1e-12)
        assert table.loc[cell, "speakers"] == 6 and table.loc[cell, "seeds"] == 30
        within = [stats.t.ppf(0.975, 4) * stats.sem(runs[runs.test_speaker == s]["test_accuracy"])
                  for s in SPEAKERS]
        assert table.loc[cell, "seed_half_width"] == pytest.approx(np.mean(within), rel=1e-12)
    # The speaker varies more than the seeds here, and the speaker-level interval shows it.
    assert table.loc["GRU", "ci_high"] - table.loc["GRU", "ci_low"] > 2 * table.loc["GRU", "seed_half_width"]


def test_paired_difference_is_scipys_paired_t_test():
    summary = _summary()
    result = paired_cells(summary, "GRU", "LSTM")
    gru = summary[summary.cell == "GRU"].groupby("test_speaker")["test_accuracy"].mean()
    lstm = summary[summary.cell == "LSTM"].groupby("test_speaker")["test_accuracy"].mean()
    differences = (gru - lstm).to_numpy()
    low, high = stats.t.interval(0.95, 5, loc=differences.mean(), scale=stats.sem(differences))
    assert result["difference"] == pytest.approx(differences.mean(), rel=1e-12)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high), rel=1e-10)
    assert result["p"] == pytest.approx(stats.ttest_1samp(differences, 0).pvalue, rel=1e-10)
    assert result["speakers"] == 6
    # Pairing removes the speaker's shared effect: the unpaired (Welch) interval is far wider.
    welch = stats.ttest_ind(gru, lstm, equal_var=False).confidence_interval()
    assert high - low < (welch.high - welch.low) / 2


def test_paired_difference_pairs_only_common_folds_and_degrades_gracefully():
    treated = pd.Series([0.9, 0.8, 0.7], index=["a", "b", "c"])
    control = pd.Series([0.5, 0.6], index=["a", "c"])
    result = paired_difference(treated, control)
    assert result["speakers"] == 2 and result["difference"] == pytest.approx((0.4 + 0.1) / 2)
    one = paired_difference(treated.iloc[:1], control.iloc[:1])
    assert one["speakers"] == 1 and math.isnan(one["ci_low"]) and math.isnan(one["p"])
    constant = paired_difference(pd.Series([1.0, 2.0]), pd.Series([0.0, 1.0]))
    assert constant["difference"] == 1.0 and math.isnan(constant["p"])


def test_diverged_runs_are_counted_and_a_mostly_diverged_configuration_is_flagged():
    summary = _summary()
    lstm_theo = (summary.cell == "LSTM") & (summary.test_speaker == "theo")
    summary.loc[lstm_theo & (summary.seed < 3), "status"] = "diverged"
    summary.loc[(summary.cell == "GRU") & (summary.seed == 0) & (summary.test_speaker == "lucas"), "status"] = "diverged"
    table = speaker_table(summary).set_index("cell")
    assert table.loc["LSTM", "diverged"] == 3 and table.loc["LSTM", "mostly_diverged"]
    assert table.loc["GRU", "diverged"] == 1 and not table.loc["GRU", "mostly_diverged"]
    folds = fold_means(summary).set_index(["cell", "test_speaker"])
    assert folds.loc[("LSTM", "theo"), "seeds"] == 5  # diverged runs keep their pre-divergence checkpoint
    with pytest.raises(ValueError, match="test_speaker"):
        fold_means(summary.drop(columns="test_speaker"))
