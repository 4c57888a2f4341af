"""Answer 3: which training curve is the RNN, the LSTM and the GRU, with a blind test of the rules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradlab.analysis.curves import FEATURES, TRIPLE, blind_test, curve_features
from gradlab.analysis.folds import (
    paired_difference,
)
from gradlab.analysis.report.answers.common import (
    FIGURES,
    difference_text,
    figure_lines,
    fold_series,
    interval_text,
    limits_line,
    number,
    p_text,
    percent,
    points,
    signed,
    speaker_rows,
)
from gradlab.analysis.report.format import table
from gradlab.analysis.report.study import Study
from gradlab.analysis.style import cell_label

# ---------------------------------------------------------------- question 3


def curve_settings(study: Study) -> dict[str, pd.DataFrame]:
    """The long curves' features by setting: ``tuned`` (each cell's own learning rate) and ``shared`` (one rate)."""
    part = study.curves
    if part.summary.empty or part.history.empty:
        return {}
    features = curve_features(part.history, part.summary)
    if features.empty:
        return {}
    cells_per_sweep = part.summary.groupby("sweep", observed=True)["cell"].nunique()
    shared = set(cells_per_sweep[cells_per_sweep >= len(TRIPLE)].index)
    features = features.assign(setting=np.where(features["sweep"].isin(shared), "shared", "tuned"))
    return {setting: frame for setting, frame in features.groupby("setting")}


def answer_curves(study: Study, figures: Sequence[str] = ()) -> list[str]:
    """Question 3."""
    lines = figure_lines(FIGURES[2], figures, "training loss and validation accuracy over 100 epochs")
    settings = curve_settings(study)
    if not settings:
        return lines + ["No long training curves were recorded: this question cannot be answered from these runs.",
                        ""]
    everything = pd.concat(settings.values(), ignore_index=True)
    epochs = int(everything["epochs"].max())
    lr = study.curves.summary.groupby("sweep")["lr"].first() if "lr" in study.curves.summary else pd.Series()
    rules = []
    for feature in ("final", "epochs_to_90", "train_loss", "late_rise"):
        frame = everything[everything["cell"].isin(TRIPLE)]
        table_ = speaker_rows(frame, study.curves.summary, feature)
        if table_.empty:
            continue
        fmt = percent if feature in ("final", "late_rise") else number
        rules.append([FEATURES[feature], *[
            interval_text(*table_.set_index("cell").loc[cell, ["mean", "ci_low", "ci_high"]], fmt)
            if cell in set(table_["cell"]) else "n/a" for cell in TRIPLE]])
    lines += [f"Curves of {epochs} epochs, as in the coursework, at each cell's tuned learning rate and at one shared "
              f"rate ({', '.join(sorted({number(v) for v in lr[lr.index.isin(everything['sweep'])]}))}). What tells "
              "them apart (both settings pooled; 95% t interval over test speakers):", ""]
    lines += table(["feature", *[cell_label(cell) for cell in TRIPLE]], rules)
    sentences = _curve_rules(everything, study)
    results = []
    for setting, frame in [*settings.items(), ("both", everything)]:
        group = ("setting",) if setting == "both" else ()
        result = blind_test(frame, group=group)
        if result["triples"]:
            results.append([setting, f"{result['correct']} of {result['triples']}",
                            interval_text(result["rate"], result["ci_low"], result["ci_high"], percent),
                            f"{result['runs_correct']} of {3 * result['triples']}", p_text(result["p"])])
    if sentences:
        lines += [" ".join(sentences), ""]
    if results:
        rounds = blind_test(everything, group=("setting",))["rounds"]
        split = "; ".join(f"rules from speakers {', '.join(map(str, r['derive_folds']))} x seeds "
                          f"{', '.join(map(str, r['derive_seeds']))}, tested on speakers "
                          f"{', '.join(map(str, r['test_folds']))} x seeds {', '.join(map(str, r['test_seeds']))}"
                          for r in rounds)
        lines += ["A blind test of these rules: fitted (per cell, the mean and spread of each feature) on one half of "
                  "the speakers and seeds, then used to label each unlabelled triple of the other half (one RNN, one "
                  "LSTM, one GRU with the same test speaker and seed) by the most likely of the 6 labellings, and "
                  f"the other way round ({split}). Chance labels a triple right 1 time in 6.", ""]
        lines += table(["setting", "triples right", "rate [95% Clopper-Pearson, two-sided]",
                        "curves right", "vs chance (one-sided binomial)"], results)
    coursework = _coursework_letters(everything, study)
    if coursework:
        lines += [coursework, ""]
    lines += [limits_line(study, "; curves are validation accuracy per epoch on the fold's validation speaker"), ""]
    return lines


def feature_difference(features: pd.DataFrame, study: Study, feature: str, first: str, second: str) -> dict:
    return paired_difference(fold_series(features, study.curves.summary, feature, first),
                             fold_series(features, study.curves.summary, feature, second))


def _curve_rules(features: pd.DataFrame, study: Study) -> list[str]:
    text = []
    final = {(a, b): feature_difference(features, study, "final", a, b)
             for a, b in (("LSTM", "RNN_TANH"), ("GRU", "RNN_TANH"), ("GRU", "LSTM"))}
    speed = feature_difference(features, study, "epochs_to_90", "GRU", "LSTM")
    rnn_lowest = all(final[pair]["ci_low"] > 0 for pair in (("LSTM", "RNN_TANH"), ("GRU", "RNN_TANH")))
    if rnn_lowest:
        text.append("Rule 1: the RNN's curve levels out lowest (its final level is below both gated cells' with "
                    f"paired intervals above zero: LSTM {difference_text(final[('LSTM', 'RNN_TANH')], points)}, "
                    f"GRU {difference_text(final[('GRU', 'RNN_TANH')], points)} points). "
                    "Its gradient reaches only the last frames (question 1), and on FSDD they are silence.")
    if np.isfinite(speed["ci_high"]) and speed["ci_high"] < 0:
        text.append(f"Rule 2: of the gated pair, the GRU rises sooner ({difference_text(speed, signed(1))} "
                    "epochs to 90% of its rise, GRU minus LSTM, paired over speakers). Its carry path is open from "
                    "the start and it has fewer parameters per unit; the LSTM's default forget gate (about 1/2) "
                    "loses the word's gradient until training opens it.")
    elif np.isfinite(speed["difference"]):
        text.append(f"The GRU and the LSTM do not differ clearly in speed ({difference_text(speed, signed(1))} "
                    "epochs to 90% of the rise, paired over speakers).")
    return text


def _coursework_letters(features: pd.DataFrame, study: Study) -> str | None:
    speed = feature_difference(features, study, "epochs_to_90", "GRU", "LSTM")
    final = feature_difference(features, study, "final", "LSTM", "RNN_TANH")
    if not (np.isfinite(final["difference"]) and np.isfinite(speed["difference"])):
        return None
    lowest = "C is the RNN" if final["ci_low"] > 0 else "C, lowest, is most plausibly the RNN (not clear here)"
    faster = ("A, the one that reaches the shared level sooner, is the GRU and B the LSTM" if speed["ci_high"] < 0
              else "which of A and B is the GRU is not settled by speed in these runs")
    return ("The coursework's figure, as its answer describes it: C levels out at a lower value and A and B reach "
            f"a similar level, A sooner. By the rules measured here, {lowest}; {faster}.")


