"""Learning metrics that mean what they say, and model selection on validation only.

- A run *learns* when its best validation accuracy beats chance by a one-sided
  binomial test (:func:`scipy.stats.binomtest`) at the validation set's size,
  Bonferroni-corrected for picking the best of its epochs.
- *Epochs to learn* is defined only for runs that learn: the first epoch whose
  validation accuracy covers 90% of the way from chance to the run's best.
  Tables give it with "k of n learned".
- The *final level* is the mean validation accuracy over the last 10% of
  epochs (at least 3), with its least-squares slope per epoch, so a run still
  rising is not mistaken for one that has levelled off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from gradlab.analysis.stats import CONFIG_COLUMNS, summarise

#: Options that define what is compared rather than how a model is fitted: ``--select-by``
#: tunes the other grid options (learning rate, clipping ...) separately for each value of these.
CONDITIONS: frozenset[str] = frozenset({
    "dataset", "split", "test_speaker", "train_fraction", "bidirectional", "readout", "normalise", "seq_len",
    "init", "pad", "delay", "param_target", "noise_std", "omega_weight", "floss_weight", "dtype",
})

#: Classes of datasets whose class count older runs did not record and their
#: configuration does not imply: the distance task's default of 3. (FSDD and
#: Speech Commands classify the configured ``words``: see :func:`classes_from_configs`.)
KNOWN_CLASSES: dict[str, int] = {"distance": 3}
#: Fraction of the way from chance to a run's best at which it has "learnt".
LEARNT_FRACTION = 0.9
#: Share of the last epochs averaged into the final level.
FINAL_SHARE = 0.1
ALPHA = 0.05


def chance_level(summary: pd.DataFrame) -> pd.Series:
    """Chance accuracy of each summary row: 1 / ``num_classes``, else from :data:`KNOWN_CLASSES`, else NaN."""
    classes = pd.Series(np.nan, index=summary.index, dtype="float64")
    if "num_classes" in summary.columns:
        classes = pd.to_numeric(summary["num_classes"], errors="coerce").astype("float64")
    if "dataset" in summary.columns:
        known = summary["dataset"].astype("object").map(KNOWN_CLASSES).astype("float64")
        classes = classes.fillna(known)
    return 1.0 / classes


def classes_from_configs(configs: Iterable[Mapping]) -> dict[str, int]:
    """Run id -> number of classes, from run configurations (the ``runs`` list of a sweep.json).

    A recorded ``data.num_classes`` wins; else word datasets classify their
    ``data.words``. Runs whose count cannot be told are left out.
    """
    found = {}
    for config in configs:
        data = config.get("data") or {}
        if isinstance(data.get("num_classes"), int):
            found[str(config.get("run_id"))] = data["num_classes"]
        elif data.get("words") and data.get("dataset") in ("fsdd", "speech-commands", "speech_commands"):
            found[str(config.get("run_id"))] = len(data["words"])
    return found


def beats_chance(
    accuracy: float, examples: float, chance: float, *, tries: int = 1, alpha: float = ALPHA
) -> bool | None:
    """Whether ``accuracy`` on ``examples`` examples is above ``chance`` (one-sided binomial test).

    ``tries`` is how many accuracies the value was the best of (epochs): the
    test's level is divided by it (Bonferroni). None when a number is missing.
    """
    if any(value is None or (isinstance(value, float) and math.isnan(value)) for value in (accuracy, examples, chance)):
        return None
    examples = int(examples)
    correct = int(round(accuracy * examples))
    p_value = scipy_stats.binomtest(correct, examples, chance, alternative="greater").pvalue
    return bool(p_value < alpha / max(tries, 1))


def epoch_accuracy(history: pd.DataFrame, split: str = "validation") -> pd.DataFrame:
    """One accuracy per run and epoch: the last recorded in that epoch (the step-0 record left out)."""
    rows = history[(history["split"] == split) & (history["metric"] == "accuracy") & (history["step"] > 0)]
    keys = ["sweep", "run_id"] if "sweep" in rows.columns else ["run_id"]
    return (rows.sort_values("step").groupby([*keys, "cell", "seed", "epoch"], observed=True)["value"]
            .last().reset_index())


def smallest_denominator(accuracies: np.ndarray, *, largest: int = 100_000) -> float:
    """The smallest n for which every accuracy is a whole number of correct answers out of n (NaN if none).

    gradlab's accuracies are exact fractions correct / examples, so this is
    the validation set's size or a divisor of it: a binomial test at it is at
    worst conservative. Used only for runs that did not record their size.
    """
    values = np.asarray(accuracies, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan")
    for start in range(1, largest + 1, 4096):
        sizes = np.arange(start, min(start + 4096, largest + 1), dtype=np.float64)[:, None]
        scaled = values[None, :] * sizes
        whole = (np.abs(scaled - np.round(scaled)) < 1e-6).all(axis=1)
        if whole.any():
            return float(sizes[np.argmax(whole), 0])
    return float("nan")


def _validation_size(summary: pd.DataFrame, predictions: pd.DataFrame | None) -> pd.Series:
    sizes = pd.Series(np.nan, index=summary.index, dtype="float64")
    if "n_validation" in summary.columns:
        sizes = pd.to_numeric(summary["n_validation"], errors="coerce").astype("float64")
    if predictions is not None and not predictions.empty:
        keys = [key for key in ("sweep", "run_id") if key in summary.columns and key in predictions.columns]
        counted = (predictions[predictions["split"] == "validation"].groupby(keys, observed=True).size()
                   .rename("counted").reset_index())
        counted = summary[keys].merge(counted, on=keys, how="left")["counted"].to_numpy(dtype="float64")
        sizes = sizes.fillna(pd.Series(counted, index=summary.index))
    return sizes


def run_learning(history: pd.DataFrame, summary: pd.DataFrame, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per run: chance, whether it learns, epochs to learn, final level and its slope.

    Args:
        history: history table (validation accuracy per epoch).
        summary: summary table; ``n_validation`` and ``num_classes`` are used
            where present (else the validation predictions' count, or
            :func:`smallest_denominator` of the run's accuracies, and
            :data:`KNOWN_CLASSES`).
        predictions: optional predictions table.

    Returns:
        One row per run in ``summary``: run keys, ``cell``, ``seed``,
        ``chance``, ``best``, ``learns`` (boolean; NA where chance or the
        validation size is unknown), ``epochs_to_learn`` (NaN unless it
        learns), ``final`` and ``slope`` (accuracy per epoch over the final
        epochs), ``epochs``.
    """
    keys = ["sweep", "run_id"] if "sweep" in summary.columns else ["run_id"]
    epochs = epoch_accuracy(history)
    base = summary[[*keys, "cell", "seed"]].assign(chance=chance_level(summary).to_numpy(),
                                                  examples=_validation_size(summary, predictions).to_numpy())
    rows = []
    curves = {key if isinstance(key, tuple) else (key,): run for key, run in epochs.groupby(keys, observed=True)}
    for record in base.itertuples(index=False):
        run_key = tuple(getattr(record, key) for key in keys)
        curve = curves.get(run_key)
        row = {**{key: getattr(record, key) for key in keys}, "cell": record.cell, "seed": record.seed,
               "chance": record.chance, "best": np.nan, "learns": pd.NA, "epochs_to_learn": np.nan,
               "final": np.nan, "slope": np.nan, "epochs": 0}
        if curve is not None and not curve.empty:
            values = curve.sort_values("epoch")["value"].to_numpy()
            best = float(values.max())
            tail = max(3, math.ceil(FINAL_SHARE * len(values)))
            last = values[-tail:]
            row.update(best=best, final=float(last.mean()), epochs=len(values),
                       slope=float(np.polyfit(np.arange(len(last)), last, 1)[0]) if len(last) > 1 else np.nan)
            examples = record.examples if np.isfinite(record.examples) else smallest_denominator(values)
            learns = beats_chance(best, examples, record.chance, tries=len(values))
            if learns is not None:
                row["learns"] = learns
                if learns:
                    level = record.chance + LEARNT_FRACTION * (best - record.chance)
                    row["epochs_to_learn"] = float(np.argmax(values >= level) + 1)
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.astype({"learns": "boolean", "seed": "int64"}) if not table.empty else table


def _trend(low: float, high: float) -> str:
    if np.isnan(low) or np.isnan(high):
        return "unknown"
    return "rising" if low > 0 else "falling" if high < 0 else "flat"


def learning_table(runs: pd.DataFrame, *, by: Sequence[str] = ("cell",), confidence: float = 0.95) -> pd.DataFrame:
    """Per cell: seeds, "k of n learned", epochs to learn (learning runs only), final level and trend.

    Args:
        runs: :func:`run_learning`'s output.
        by: grouping columns.
        confidence: of the t intervals.

    Returns:
        The ``by`` columns, ``seeds``, ``learned`` (k), ``learned_of``
        ("k of n learned"), ``epochs_to_learn`` with ``epochs_to_learn_low/high``,
        ``final`` with ``final_low/high``, ``slope`` with ``slope_low/high``,
        ``trend`` ("rising", "flat" or "falling": where the slope's interval
        lies) and ``chance``.
    """
    by = list(by)
    groups = runs.groupby(by, sort=True, observed=True)
    table = groups.agg(seeds=("seed", "size"), chance=("chance", "first")).reset_index()
    learned = groups["learns"].agg(lambda values: int(values.fillna(False).sum())).to_numpy()
    known = groups["learns"].agg(lambda values: int(values.notna().sum())).to_numpy()
    table["learned"] = learned
    table["learned_of"] = [f"{k} of {n} learned" if n else "unknown (no chance level or validation size)"
                           for k, n in zip(learned, known)]
    for name in ("epochs_to_learn", "final", "slope"):
        stats = summarise(runs, name, by, confidence=confidence)
        stats = stats.rename(columns={"mean": name, "ci_low": f"{name}_low", "ci_high": f"{name}_high"})
        table = table.merge(stats.drop(columns="seeds"), on=by, how="left")
    table["trend"] = [_trend(low, high) for low, high in zip(table["slope_low"], table["slope_high"])]
    return table


def most_accurate(accuracy: pd.DataFrame, chance: float) -> pd.Series | None:
    """The row of :func:`gradlab.analysis.stats.accuracy_table` with the highest mean among those above chance.

    A cell counts as above chance when its interval's low end is (one seed:
    its mean). None when no cell is above chance.
    """
    low = accuracy["ci_low"].fillna(accuracy["mean"])
    above = accuracy[low > chance]
    return None if above.empty else above.loc[above["mean"].idxmax()]


def select_by_validation(
    summary: pd.DataFrame,
    group: Sequence[str] = ("cell",),
    grid: Sequence[str] = ("lr",),
    *,
    metric: str = "best_val_accuracy",
) -> pd.DataFrame:
    """Per group, the grid point with the best mean validation accuracy over seeds.

    Only ``metric`` (a validation column) is read: test accuracies cannot
    influence the choice. Ties go to the first grid point in sorted order.

    Args:
        summary: summary table holding the ``group`` and ``grid`` columns.
        group: what is compared (one choice per group), e.g. ``("cell",)``.
        grid: the tuned configuration columns, e.g. ``("lr", "hidden_size")``.
        metric: the validation column to maximise.

    Returns:
        One row per group: ``group`` and ``grid`` columns, ``validation_accuracy``
        (mean over seeds), ``seeds`` and ``candidates`` (grid points tried).

    Raises:
        ValueError: naming columns that are missing.
    """
    group, grid = list(group), list(grid)
    missing = [name for name in [*group, *grid, metric] if name not in summary.columns]
    if missing:
        raise ValueError(f"select_by_validation needs columns {missing}; the summary has {list(summary.columns)}")
    means = (summary.groupby([*group, *grid], sort=True, observed=True, dropna=False)[metric]
             .agg(validation_accuracy="mean", seeds="count").reset_index())
    means["candidates"] = means.groupby(group, observed=True)["seeds"].transform("size")
    best = means.loc[means.groupby(group, sort=True, observed=True)["validation_accuracy"].idxmax()]
    return best.reset_index(drop=True)[[*group, *grid, "validation_accuracy", "seeds", "candidates"]]


def selection_groups(runs: pd.DataFrame, grid: Sequence[str]) -> tuple[list[str], list[str]]:
    """How a tuned sweep is selected: ``(group, tuned)`` columns for :func:`select_by_validation`.

    ``tuned`` is the grid minus :data:`CONDITIONS`; ``group`` is ``cell`` plus
    every condition that varies among ``runs`` (a speaker fold, a length, an
    init), so each fold or length gets its own learning rate, chosen on its own
    validation data.
    """
    tuned = [column for column in grid if column not in CONDITIONS]
    varying = [column for column in CONFIG_COLUMNS if column in runs.columns and column not in tuned
               and column in CONDITIONS and runs[column].nunique(dropna=False) > 1]
    return ["cell", *varying], tuned


def selected_runs(summary: pd.DataFrame, selection: pd.DataFrame, grid: Sequence[str]) -> pd.DataFrame:
    """The summary rows of the grid points chosen by :func:`select_by_validation`."""
    keys = [column for column in selection.columns if column in summary.columns and
            column not in ("validation_accuracy", "seeds", "candidates")]
    return summary.merge(selection[keys], on=keys, how="inner")
