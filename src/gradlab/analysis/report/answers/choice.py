"""Answer 4: when to use each cell, every recommendation resting on a test of the difference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gradlab.analysis.compare import holm
from gradlab.analysis.curves import TRIPLE
from gradlab.analysis.folds import (
    FOLD,
    has_folds,
    paired_difference,
    speaker_table,
    welch_difference,
)
from gradlab.analysis.report.answers.common import (
    FIGURES,
    difference_text,
    figure_lines,
    interval_text,
    limits_line,
    number,
    p_text,
    percent,
    points,
    signed,
    speaker_rows,
)
from gradlab.analysis.report.answers.curves import curve_settings, feature_difference
from gradlab.analysis.report.answers.lstm import fold_accuracy
from gradlab.analysis.report.format import table
from gradlab.analysis.report.study import Study
from gradlab.analysis.style import cell_label

# ---------------------------------------------------------------- question 4


def _headline_difference(study: Study, first: str, second: str, summary: pd.DataFrame | None = None) -> dict:
    """First minus second cell's test accuracy: paired over speaker folds, or Welch over seeds with one speaker."""
    summary = study.headline.summary if summary is None else summary
    if FOLD in summary.columns and summary[FOLD].nunique() > 1:
        return paired_difference(fold_accuracy(summary, summary, first), fold_accuracy(summary, summary, second))
    return welch_difference(summary.loc[summary["cell"] == first, "test_accuracy"],
                            summary.loc[summary["cell"] == second, "test_accuracy"])


def differences(study: Study) -> pd.DataFrame:
    """The paired test-accuracy differences question 4 rests on (one row per comparison)."""
    rows = []

    def add(condition: str, first: str, second: str, result: dict) -> None:
        if result["speakers"]:
            rows.append({"condition": condition, "first": first, "second": second, **result})

    headline = study.headline.summary
    for first, second in (("GRU", "LSTM"), ("LSTM", "RNN_TANH"), ("GRU", "RNN_RELU"), ("RNN_RELU", "RNN_TANH")):
        add("tuned, last-step readout", first, second, _headline_difference(study, first, second))
    matched = study.matched.summary
    if not matched.empty:
        for target, part in matched.groupby("param_target"):
            for first, second in (("GRU", "LSTM"), ("LSTM", "RNN_TANH")):
                add(f"about {int(target):,} parameters each", first, second,
                    _headline_difference(study, first, second, part))
    pairs = study.pairs
    if not pairs.empty:
        for option, value, condition, comparisons in (
                ("model.readout", "mean", "mean readout", (("GRU", "RNN_RELU"), ("LSTM", "RNN_TANH"))),
                ("data.delay", "64", "64 frames of silence after the word", (("GRU", "LSTM"),)),
                ("data.train_fraction", "0.25", "25% of the training clips", (("GRU", "LSTM"),)),
                ("data.train_fraction", "0.5", "50% of the training clips", (("GRU", "LSTM"),))):
            chosen = pairs[(pairs["option"] == option) & (pairs["value"].map(str) == value)]
            if chosen.empty or FOLD not in chosen:
                continue
            for first, second in comparisons:
                ahead, behind = (chosen[chosen["cell"] == cell].groupby(FOLD)["test_accuracy"].mean()
                                 for cell in (first, second))
                gap = ahead - behind
                add(condition, first, second, paired_difference(ahead, behind))
                if option == "data.train_fraction":  # does less data change the gap? (an interaction)
                    full = (fold_accuracy(headline, headline, first) - fold_accuracy(headline, headline, second))
                    add(f"gap at {condition} minus the gap with all clips", first, second,
                        paired_difference(gap, full))
        chrono = pairs[(pairs["option"] == "model.init") & (pairs["value"].map(str) == "chrono")
                       & (pairs["cell"] == "LSTM")]
        if not chrono.empty and FOLD in chrono:
            add("LSTM with chrono init against the tuned GRU", "GRU", "LSTM (chrono)", paired_difference(
                fold_accuracy(headline, headline, "GRU"), chrono.groupby(FOLD)["test_accuracy"].mean()))
    return pd.DataFrame(rows)


def _verdict(row: Mapping[str, object]) -> str:
    if not np.isfinite(row["ci_low"]):
        return "not testable"
    if row["ci_low"] > 0:
        return f"{cell_label(str(row['first']))} better"
    if row["ci_high"] < 0:
        return f"{cell_label(str(row['second']))} better"
    return "no clear difference"


def accuracy_lines(study: Study) -> list[str]:
    """Each cell's test accuracy at its tuned settings, with the speaker as the unit (nothing without folds)."""
    headline = study.headline.summary
    if headline.empty or not has_folds(headline):
        return []
    accuracy = speaker_table(headline).sort_values("mean", ascending=False)
    rows = [[cell_label(row.cell), interval_text(row.mean, row.ci_low, row.ci_high, percent), row.speakers,
             f"{row.seeds} ({row.diverged} diverged)",
             "n/a" if not np.isfinite(row.seed_half_width) else f"+/- {100 * row.seed_half_width:.1f}"]
            for row in accuracy.itertuples()]
    return (["Test accuracy at each cell's tuned settings (95% t interval over test speakers, each speaker's mean "
             "over its seeds; the last column is how far seeds alone move one speaker's mean, the mean half-width "
             "of the 95% t interval over seeds within a fold, in points):", ""]
            + table(["cell", "test accuracy", "speakers", "runs", "seed interval within a fold"], rows))


def answer_choice(study: Study, figures: Sequence[str] = ()) -> list[str]:
    """Question 4."""
    lines = figure_lines(FIGURES[3], figures, "paired test-accuracy differences between cells, by condition")
    lines += accuracy_lines(study)
    table_ = differences(study)
    if table_.empty:
        return lines + ["No paired cell comparisons could be made from these runs.", ""]
    # Each row answers its own question, so its verdict is its own test; the Holm column shows which verdicts
    # would also survive treating the whole table as one family.
    testable = table_["p"].notna().to_numpy()
    adjusted = np.full(len(table_), np.nan)
    adjusted[testable], _ = holm(table_.loc[testable, "p"].to_numpy())
    rows = [[row.condition, f"{cell_label(row.first)} - {cell_label(row.second)}",
             interval_text(row.difference, row.ci_low, row.ci_high, points), row.speakers, p_text(row.p),
             p_text(held), f"**{_verdict(row._asdict())}**"] for row, held in zip(table_.itertuples(), adjusted)]
    folds = study.speakers > 1
    test = ("a paired test of the difference (95% t interval over test speakers, each speaker's mean over its "
            "seeds)" if folds else "a Welch t test of the difference over seeds (one test speaker)")
    decided = [index for index, row in enumerate(table_.itertuples()) if _verdict(row._asdict()).endswith("better")]
    surviving = sum(bool(adjusted[index] < 0.05) for index in decided)
    lines += [f"Each recommendation rests on {test}, in test accuracy points, first minus second, never on whether "
              "two intervals overlap. A verdict names a winner when the row's own interval excludes 0 (its p "
              f"below 0.05); {surviving} of those {len(decided)} verdicts also "
              f"{'holds' if surviving == 1 else 'hold'} with Holm's correction over all "
              f"{int(testable.sum())} comparisons of the table (the Holm p column), the ones to lean on if the "
              "table is read as one family:", ""]
    lines += table(["condition", "difference", "points", "speakers", "paired t test", "Holm p", "verdict"], rows)
    lines += [" ".join(_recommendations(table_, study)), ""]
    lines += [limits_line(study, "; cost is measured as epochs to 90% of the curve's rise (question 3), which no "
                             "machine load changes; seconds come only from isolated benchmarks (benchmarks/)"), ""]
    return lines


def _find(table_: pd.DataFrame, condition: str, first: str, second: str) -> Mapping[str, object] | None:
    rows = table_[(table_["condition"] == condition) & (table_["first"] == first) & (table_["second"] == second)]
    return None if rows.empty else rows.iloc[0].to_dict()


def _recommendations(table_: pd.DataFrame, study: Study) -> list[str]:
    text = []
    gru_lstm = _find(table_, "tuned, last-step readout", "GRU", "LSTM")
    if gru_lstm:
        verdict = _verdict(gru_lstm)
        if verdict == "GRU better":
            text.append("Short clips read out at the last step, tuned: use the GRU; it beats the LSTM by "
                        f"{difference_text(gru_lstm, points)} points.")
        elif verdict == "LSTM better":
            text.append("Short clips read out at the last step, tuned: use the LSTM; it beats the GRU.")
        else:
            text.append("Between the GRU and the LSTM at their tuned settings the test finds no clear difference: "
                        "choose on cost.")
    mean = _find(table_, "mean readout", "GRU", "RNN_RELU")
    if mean and _verdict(mean) == "no clear difference":
        # No difference found is not equivalence: state how large a lead the interval still allows.
        text.append("When every frame reaches the loss directly (a mean readout), the test finds no clear GRU lead "
                    f"over a relu RNN ({difference_text(mean, points)} points): the interval allows a lead of at "
                    f"most {number(mean['ci_high'])} points, so where that is acceptable the cheaper RNN is a "
                    "defensible choice.")
    chrono = _find(table_, "LSTM with chrono init against the tuned GRU", "GRU", "LSTM (chrono)")
    if chrono and _verdict(chrono) == "no clear difference":
        text.append("An LSTM with chrono init shows no clear difference from the tuned GRU "
                    f"({difference_text(chrono, points)} points, GRU minus LSTM; the interval does not rule out a "
                    "gap of that size either way)"
                    + (", where at default init the GRU led clearly: much of the LSTM's deficit goes with its default "
                       "forget gate" if gru_lstm and _verdict(gru_lstm) == "GRU better" else "")
                    + ". Use chrono (or forget-bias) init whenever you use an LSTM.")
    delay = _find(table_, "64 frames of silence after the word", "GRU", "LSTM")
    if delay and _verdict(delay) == "GRU better":
        text.append("For long gaps between the evidence and the loss, the GRU is the cell that survives here.")
    for target in ("4,000", "16,000"):
        matched = _find(table_, f"about {target} parameters each", "GRU", "LSTM")
        if matched:
            text.append(f"At equal size (about {target} parameters each) the GRU-LSTM difference is "
                        f"{difference_text(matched, points)} points: "
                        + ("size does not explain the GRU's lead." if matched["ci_low"] > 0 else
                           "the lead is not clear at that size." if matched["ci_high"] >= 0 else
                           "at that size the LSTM is ahead."))
    settings = curve_settings(study)
    if settings:
        features = pd.concat(settings.values(), ignore_index=True)
        speed = feature_difference(features, study, "epochs_to_90", "GRU", "LSTM")
        table_speed = speaker_rows(features[features["cell"].isin(TRIPLE)], study.curves.summary, "epochs_to_90")
        if not table_speed.empty and np.isfinite(speed["difference"]):
            epochs = "; ".join(f"{cell_label(row.cell)} {number(row.mean)}" for row in table_speed.itertuples())
            text.append(f"Cost, as training time to a target: epochs to 90% of the validation curve's rise: "
                        f"{epochs} (GRU minus LSTM "
                        f"{difference_text(speed, signed(1))}, "
                        "paired over speakers). An epoch's cost per cell is measured in isolation by "
                        "benchmarks/bench_models.py, not from the sweeps' shared-machine wall times.")
    change = _find(table_, "gap at 25% of the training clips minus the gap with all clips", "GRU", "LSTM")
    if change:
        verdict = ("the GRU's lead grows with less data" if change["ci_low"] > 0 else
                   "the GRU's lead shrinks with less data" if change["ci_high"] < 0 else
                   "the data cannot tell whether the gap changes with the amount of data")
        text.append("\"GRUs do better with less data\": with a quarter of the training clips the GRU-LSTM gap moves "
                    f"by {difference_text(change, points)} points "
                    f"(paired over {change['speakers']} speakers, {p_text(change['p'])}): {verdict}.")
    return text


