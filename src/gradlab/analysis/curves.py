"""Telling RNN, LSTM and GRU apart from their training curves, and testing the rules blind.

:func:`curve_features` describes each run's curves by a few numbers (how high
validation accuracy ends, how soon it gets there, where training loss ends,
how much the curve still rises at the end). :func:`blind_test` derives rules
from one half of the runs and applies them to the other: a Gaussian model of
each feature per cell is fitted on the derivation half (its means are the
rules in words: "the GRU reaches 90% of its gain by epoch ..., the RNN ends
lowest ..."), and each held-out triple of unlabelled curves (one RNN, one LSTM
and one GRU trained with the same test speaker and seed) gets the labelling,
of the 6 possible, with the highest likelihood. Chance is 1 in 6.

The halves split both speakers and seeds: the rules are derived on folds F1 x
seeds S1 and tested on F2 x S2, then the other way round, so no held-out
triple shares a voice or a seed with the runs its rules came from. Torch-free.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gradlab.analysis.folds import FOLD
from gradlab.analysis.learning import epoch_accuracy

#: The three cells of the coursework's question, in the order it names them.
TRIPLE: tuple[str, ...] = ("RNN_TANH", "LSTM", "GRU")
#: Features the rules use, with their description.
FEATURES: dict[str, str] = {
    "final": "validation accuracy over the last 10% of epochs",
    "epochs_to_90": "epochs until validation accuracy first reaches 90% of its rise from epoch 1 to its best",
    "train_loss": "training loss over the last 10% of epochs",
    "late_rise": "validation accuracy gained over the last 20% of epochs",
}
#: Share of epochs the end-of-curve features average over.
FINAL_SHARE = 0.1


def _epoch_means(history: pd.DataFrame, split: str, metric: str) -> pd.DataFrame:
    rows = history[(history["split"] == split) & (history["metric"] == metric) & (history["step"] > 0)]
    keys = ["sweep", "run_id"] if "sweep" in rows.columns else ["run_id"]
    return rows.groupby([*keys, "epoch"], observed=True)["value"].mean().reset_index()


def curve_features(history: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per run, the :data:`FEATURES` of its validation-accuracy and training-loss curves.

    Returns:
        Run keys, ``cell``, ``seed``, the fold column when present, ``epochs``
        and one column per feature.
    """
    keys = ["sweep", "run_id"] if "sweep" in summary.columns else ["run_id"]
    accuracy = epoch_accuracy(history)
    loss = _epoch_means(history, "train", "loss")
    losses = {key if isinstance(key, tuple) else (key,): run for key, run in loss.groupby(keys, observed=True)}
    extra = [FOLD] if FOLD in summary.columns else []
    info = summary[[*keys, *extra]]
    rows = []
    for key, run in accuracy.groupby(keys, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        values = run.sort_values("epoch")["value"].to_numpy(dtype=float)
        if len(values) < 3:
            continue
        tail = max(1, math.ceil(FINAL_SHARE * len(values)))
        rise = max(2, math.ceil(2 * FINAL_SHARE * len(values)))
        start, best = values[0], values.max()
        reached = values >= start + 0.9 * (best - start)
        train = losses.get(key)
        train_values = train.sort_values("epoch")["value"].to_numpy(dtype=float) if train is not None else []
        rows.append({**dict(zip(keys, key)), "cell": run["cell"].iloc[0], "seed": int(run["seed"].iloc[0]),
                     "epochs": len(values), "final": float(values[-tail:].mean()),
                     "epochs_to_90": float(np.argmax(reached) + 1),
                     "train_loss": float(np.mean(train_values[-tail:])) if len(train_values) else np.nan,
                     "late_rise": float(values[-tail:].mean() - values[-rise - tail:-rise].mean())
                     if len(values) > rise + tail else np.nan})
    table = pd.DataFrame(rows)
    return table.merge(info, on=keys, how="left") if not table.empty else table


def fit_rules(features: pd.DataFrame, cells: Sequence[str] = TRIPLE,
              names: Sequence[str] = tuple(FEATURES)) -> pd.DataFrame:
    """Per cell and feature, the mean and standard deviation on the derivation runs (the rules)."""
    rows = []
    for cell in cells:
        part = features[features["cell"] == cell]
        for name in names:
            values = part[name].dropna().to_numpy(dtype=float)
            rows.append({"cell": cell, "feature": name, "mean": float(values.mean()) if len(values) else np.nan,
                         "std": float(values.std(ddof=1)) if len(values) > 1 else np.nan, "runs": len(values)})
    return pd.DataFrame(rows)


def assign(triple: pd.DataFrame, rules: pd.DataFrame) -> dict[str, str]:
    """The labelling of one triple of runs (run_id -> cell) with the highest Gaussian likelihood under ``rules``.

    Each feature's spread is pooled over cells (the derivation runs' mean
    standard deviation, floored at 1% of its range) so that one tight cell
    cannot dominate; a feature missing in a run is left out of its score.
    """
    cells = list(rules["cell"].unique())
    means = rules.pivot(index="cell", columns="feature", values="mean")
    spread = rules.groupby("feature")["std"].mean()
    spread = spread.fillna(1.0).clip(lower=1e-9)
    runs = list(triple["run_id"])
    best, best_score = None, -math.inf
    for labels in itertools.permutations(cells, len(runs)):
        score = 0.0
        for run_id, cell in zip(runs, labels):
            row = triple.set_index("run_id").loc[run_id]
            for feature in means.columns:
                value = row[feature]
                if pd.notna(value) and pd.notna(means.loc[cell, feature]):
                    score -= 0.5 * ((value - means.loc[cell, feature]) / spread[feature]) ** 2
        if score > best_score:
            best, best_score = dict(zip(runs, labels)), score
    return best or {}


def _halves(values: Sequence) -> tuple[list, list]:
    ordered = sorted(set(values))
    middle = (len(ordered) + 1) // 2
    return ordered[:middle], ordered[middle:]


def blind_test(features: pd.DataFrame, cells: Sequence[str] = TRIPLE, *,
               group: Sequence[str] = (), confidence: float = 0.95) -> dict[str, object]:
    """Derive rules on one half of speakers and seeds, label the other half's triples blind, and swap.

    Args:
        features: :func:`curve_features` of runs with a fold column (or one
            fold: then only seeds are split).
        cells: the cells of a triple.
        group: further columns a triple must share (e.g. ``sweep``: the same
            learning-rate setting).

    Returns:
        ``triples`` (held-out triples labelled), ``correct`` (all three right),
        ``rate`` and its two-sided Clopper-Pearson ``ci_low``/``ci_high``, ``p`` (one-sided
        binomial test against chance 1/6), ``runs_correct`` (single curves
        labelled right, of ``3 x triples``), ``rules`` (the rules fitted on all
        runs, for the text) and ``rounds`` (per round: derivation and test
        folds and seeds).
    """
    features = features[features["cell"].isin(cells)]
    folds = sorted(features[FOLD].dropna().unique()) if FOLD in features.columns else []
    fold_halves = _halves(folds) if len(folds) > 1 else (folds, folds)
    seed_halves = _halves(features["seed"])
    keys = [*group, *([FOLD] if folds else []), "seed"]
    outcomes, rounds = [], []
    for derive, test in ((0, 1), (1, 0)):
        in_derive = features["seed"].isin(seed_halves[derive])
        in_test = features["seed"].isin(seed_halves[test])
        if folds:
            in_derive &= features[FOLD].isin(fold_halves[derive])
            in_test &= features[FOLD].isin(fold_halves[test])
        rules = fit_rules(features[in_derive], cells)
        rounds.append({"derive_folds": fold_halves[derive], "derive_seeds": seed_halves[derive],
                       "test_folds": fold_halves[test], "test_seeds": seed_halves[test]})
        for _, triple in features[in_test].groupby(keys, observed=True):
            if sorted(triple["cell"]) != sorted(cells):
                continue  # a triple needs exactly one run of each cell
            labels = assign(triple, rules)
            hits = [labels[run] == cell for run, cell in zip(triple["run_id"], triple["cell"])]
            outcomes.append((all(hits), sum(hits)))
    triples = len(outcomes)
    correct = sum(all_right for all_right, _ in outcomes)
    result: dict[str, object] = {"triples": triples, "correct": correct, "runs_correct": sum(n for _, n in outcomes),
                                 "rules": fit_rules(features, cells), "rounds": rounds}
    if triples:
        test = stats.binomtest(correct, triples, 1 / math.factorial(len(cells)), alternative="greater")
        # The test is one-sided (better than chance); the interval is two-sided, as its caption says
        # (the one-sided test's own interval would end at 100%).
        interval = stats.binomtest(correct, triples).proportion_ci(confidence, method="exact")
        result.update(rate=correct / triples, ci_low=interval.low, ci_high=interval.high, p=test.pvalue)
    else:
        result.update(rate=np.nan, ci_low=np.nan, ci_high=np.nan, p=np.nan)
    return result
