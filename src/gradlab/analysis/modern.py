"""The modern recurrences against the classic cells: gradient kept over T, accuracy, and the curse of memory.

Three measurements, each with the inference it rests on:

- :func:`ratio_comparisons`: the first-to-last gradient ratio (log10, one value per seed) of each modern cell
  against the classic cell that keeps the most gradient at the same length T, at initialisation and at the
  end of training; a Welch t test per (cell, T, stage) with the claim "keeps at least ten times more"
  (:data:`gradlab.analysis.compare.MUCH_SMALLER_DECADES`), decided by Holm over all of them.
- :func:`accuracy_comparisons`: test accuracy against the classic cell with the best mean *validation*
  accuracy at the same T (test data never picks the opponent); Welch over seeds, Holm.
- :func:`memory_association`: per run, the Spearman correlation over units between a memory parameter's
  gradient norm and the unit's memory (|lambda|, |u|, mean retention), at the first and last recorded step;
  a t interval over runs and a one-sample t test per (cell, stage), Holm.

FSDD with the delay intervention is in :func:`delay_comparisons`: speaker folds paired where they exist
(:mod:`gradlab.analysis.folds`), seeds otherwise. Torch-free.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from gradlab.analysis.compare import MUCH_SMALLER_DECADES, compare, decide, holm
from gradlab.analysis.folds import FOLD, fold_means, has_folds, paired_difference, welch_difference
from gradlab.analysis.stats import first_to_last_ratio, log10, mean_interval
from gradlab.config import BASE_MODES, MODERN_MODES

#: Classic cells the modern ones are compared with (``RNN_SIGMOID`` and other RNN activations count too).
CLASSIC_KINDS: tuple[str, ...] = ("RNN", "LSTM", "GRU")
#: Stages of a run compared: initialisation and the end of training (stats.STAGES' ``init`` and ``late``).
STAGES: dict[str, str] = {"init": "at initialisation", "late": "after training"}
#: Sweeps the FSDD delay comparison reads: the delay sweeps, and the tuned sweeps for delay 0.
DELAY_SWEEPS, TUNED_SWEEPS = "fsdd-delay", ("fsdd-tuned", "fsdd-tuned-modern")
#: Where a ratio underflowed to exactly 0, it enters the log10 tests as this (below any measurable ratio).
UNDERFLOW_LOG10 = float(np.log10(np.finfo(np.float64).tiny))


def is_modern(cell: str) -> bool:
    """Whether ``cell`` (a normalised mode) is one of :data:`gradlab.config.MODERN_MODES`."""
    return str(cell) in MODERN_MODES


def is_classic(cell: str) -> bool:
    """Whether ``cell`` is a classic RNN, LSTM or GRU mode."""
    return str(cell) in BASE_MODES or str(cell).startswith("RNN_")


def length_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows of the default-setting distance runs trained for more than one epoch.

    Other distance sweeps change one thing (an init, a regulariser) or measure at initialisation only, and
    would mix conditions into one cell's seeds.
    """
    if summary.empty or "dataset" not in summary.columns:
        return summary.iloc[:0]
    keep = summary["dataset"].eq("distance")
    for column, default in (("init", "default"), ("omega_weight", 0.0), ("floss_weight", 0.0)):
        if column in summary.columns:
            keep &= summary[column].fillna(default).eq(default)
    if "epochs" in summary.columns:
        keep &= summary["epochs"].fillna(0) > 1
    return summary[keep]


def ratios(gradients: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """log10 first-to-last ratio of each run at each :data:`STAGES` stage (layer 0, forward, state h).

    Returns:
        One row per run and stage: ``sweep``, ``run_id``, ``cell``, ``seed``, ``seq_len``, ``stage``, ``ratio``,
        ``log_ratio`` (:data:`UNDERFLOW_LOG10` where the ratio underflowed) and ``underflowed``.
    """
    runs = summary[["sweep", "run_id"]]
    chosen = gradients.merge(runs, on=["sweep", "run_id"]) if "sweep" in gradients.columns else gradients
    frames = []
    for stage in STAGES:
        found = first_to_last_ratio(chosen, summary, stage=stage)
        frames.append(found.assign(stage=stage))
    table = pd.concat(frames, ignore_index=True)
    if table.empty:
        return table.assign(log_ratio=pd.Series(dtype=float), underflowed=pd.Series(dtype=bool))
    table["cell"] = table["cell"].astype(str)
    table["underflowed"] = table["ratio"].eq(0)
    table["log_ratio"] = np.where(table["underflowed"], UNDERFLOW_LOG10, log10(table["ratio"].astype(float)))
    return table


def _comparison_row(first: np.ndarray, second: np.ndarray, claim: str, margin: float) -> dict[str, object]:
    result = compare(first, second, claim=claim, margin=margin)
    return {"difference": result.difference, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "p": result.p_value, "seeds_modern": result.seeds_first, "seeds_classic": result.seeds_second,
            "_check": result}


def _decided(rows: list[dict[str, object]], columns: list[str]) -> pd.DataFrame:
    """Rows with Holm-corrected ``verdict`` and ``p_adjusted`` (:func:`gradlab.analysis.compare.decide`)."""
    if not rows:
        return pd.DataFrame(columns=[*columns, "verdict", "p_adjusted"])
    table = pd.DataFrame(rows)
    decided = decide(list(table.pop("_check")))
    table["verdict"] = [verdict for verdict, _ in decided]
    table["p_adjusted"] = [p for _, p in decided]
    return table


def ratio_comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """Each modern cell's log10 ratio against the best classic cell's at the same T and stage.

    "Best" is the classic cell with the largest mean log10 ratio there: the modern cell must beat the classic
    cell that keeps the most gradient, by at least :data:`MUCH_SMALLER_DECADES` decades, for "supported".

    Returns:
        One row per (stage, seq_len, cell): ``classic`` (the opponent), ``difference`` (decades) with its
        Welch t interval, ``seeds_modern``, ``seeds_classic``, ``p``, ``verdict``, ``p_adjusted``.
    """
    rows = []
    for (stage, seq_len), part in table.groupby(["stage", "seq_len"], sort=True):
        classic = part[part["cell"].map(is_classic)]
        if classic.empty:
            continue
        best = classic.groupby("cell")["log_ratio"].mean().idxmax()
        opponent = classic.loc[classic["cell"] == best, "log_ratio"].to_numpy()
        for cell, runs in part[part["cell"].map(is_modern)].groupby("cell", sort=True):
            rows.append({"stage": stage, "seq_len": int(seq_len), "cell": cell, "classic": best,
                         **_comparison_row(runs["log_ratio"].to_numpy(), opponent, "greater", MUCH_SMALLER_DECADES)})
    return _decided(rows, ["stage", "seq_len", "cell", "classic"])


def accuracy_comparisons(summary: pd.DataFrame, value: str = "test_accuracy") -> pd.DataFrame:
    """Each modern cell's ``value`` against the classic cell with the best mean validation accuracy, per T.

    Returns:
        One row per (seq_len, cell), columns as :func:`ratio_comparisons` (the difference in accuracy fraction;
        claim: the modern cell is more accurate, margin 0).
    """
    rows = []
    runs = summary[summary[value].notna()].assign(cell=summary["cell"].astype(str))
    for seq_len, part in runs.groupby("seq_len", sort=True):
        classic = part[part["cell"].map(is_classic)]
        if classic.empty:
            continue
        best = classic.groupby("cell")["best_val_accuracy"].mean().idxmax()
        opponent = classic.loc[classic["cell"] == best, value].to_numpy(dtype=float)
        for cell, cell_runs in part[part["cell"].map(is_modern)].groupby("cell", sort=True):
            rows.append({"seq_len": int(seq_len), "cell": cell, "classic": best,
                         **_comparison_row(cell_runs[value].to_numpy(dtype=float), opponent, "greater", 0.0)})
    return _decided(rows, ["seq_len", "cell", "classic"])


def memory_association(parameters: pd.DataFrame) -> pd.DataFrame:
    """Per run, Spearman's correlation over units of log10 gradient norm with memory; summarised per cell.

    Layer 0, forward direction, and the cell's first memory parameter (``weight_hh`` for DIAGONAL and INDRNN,
    ``nu_log`` for the LRU, gate ``z`` or ``f`` for minGRU/minLSTM). Stages: each run's first and last
    recorded step (``init``, ``late``).

    Returns:
        One row per (cell, stage): ``parameter``, ``mean`` correlation with its t interval over runs
        (``ci_low``, ``ci_high``), ``runs``, ``p`` (one-sample t test against 0), ``verdict`` (Holm over all
        rows: ``grows with memory``, ``shrinks with memory`` or ``not clear``) and ``p_adjusted``.
    """
    columns = ["cell", "stage", "parameter", "mean", "ci_low", "ci_high", "runs", "p", "verdict", "p_adjusted"]
    chosen = parameters[parameters["memory"].notna() & (parameters["layer"] == 0)
                        & (parameters["direction"] == "forward")]
    if chosen.empty:
        return pd.DataFrame(columns=columns)
    chosen = chosen.assign(cell=chosen["cell"].astype(str), parameter=chosen["parameter"].astype(str))
    first_parameter = chosen.groupby("cell", sort=True)["parameter"].first()
    per_run = []
    for (sweep, run_id), run in chosen.groupby(["sweep", "run_id"], sort=True, observed=True):
        cell = run["cell"].iloc[0]
        run = run[run["parameter"] == first_parameter[cell]]
        for stage, step in (("init", run["step"].min()), ("late", run["step"].max())):
            at = run[run["step"] == step]
            if at["memory"].nunique() < 3 or at["grad_norm"].nunique() < 3:
                continue  # a correlation over units needs units that differ
            rho = scipy_stats.spearmanr(at["memory"], at["grad_norm"]).statistic
            per_run.append({"cell": cell, "stage": stage, "parameter": first_parameter[cell], "rho": rho})
    if not per_run:
        return pd.DataFrame(columns=columns)
    rows = []
    for (cell, stage, parameter), part in pd.DataFrame(per_run).groupby(["cell", "stage", "parameter"], sort=True):
        values = part["rho"].dropna().to_numpy()
        low, high = mean_interval(values)
        if len(values) < 2:
            p = np.nan
        elif np.ptp(values) == 0:  # every run the same correlation: no spread to test, the sign is certain
            p = 0.0 if values[0] != 0 else 1.0
        else:
            p = scipy_stats.ttest_1samp(values, 0.0).pvalue
        rows.append({"cell": cell, "stage": stage, "parameter": parameter, "mean": float(values.mean()),
                     "ci_low": low, "ci_high": high, "runs": len(values), "p": p})
    table = pd.DataFrame(rows)
    tested = table["p"].notna().to_numpy()
    adjusted = np.full(len(table), np.nan)
    if tested.any():
        adjusted[tested] = holm(table.loc[tested, "p"].to_numpy())[0]
    table["p_adjusted"] = adjusted
    decided = np.nan_to_num(adjusted, nan=1.0) <= 0.05
    table["verdict"] = np.where(decided, np.where(table["mean"] > 0, "grows with memory", "shrinks with memory"),
                                "not clear")
    return table[columns]


def delay_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """FSDD runs of the delay sweeps (:data:`DELAY_SWEEPS`) and, for delay 0, of the tuned sweeps."""
    if summary.empty or "delay" not in summary.columns:
        return summary.iloc[:0]
    sweep = summary["sweep"].astype(str)
    delayed = sweep.str.startswith(DELAY_SWEEPS + "-") & summary["delay"].fillna(0).gt(0)
    tuned = sweep.isin(TUNED_SWEEPS) & summary["delay"].fillna(0).eq(0)
    return summary[summary["dataset"].eq("fsdd") & (delayed | tuned)].assign(cell=summary["cell"].astype(str))


def delay_comparisons(summary: pd.DataFrame) -> pd.DataFrame:
    """Each modern cell's FSDD test accuracy against the best classic cell (by validation) at each delay.

    With speaker folds, each fold's mean over seeds is one observation and the two cells are paired by fold
    (:func:`gradlab.analysis.folds.paired_difference`); without, seeds are compared by Welch's test. Holm
    over every row.

    Returns:
        One row per (delay, cell): ``classic``, ``difference`` with ``ci_low``/``ci_high``, ``unit``
        (``speakers`` or ``seeds``), ``n``, ``p``, ``p_adjusted``, ``verdict`` (``more accurate``,
        ``less accurate``, ``not clear``).
    """
    columns = ["delay", "cell", "classic", "difference", "ci_low", "ci_high", "unit", "n", "p", "p_adjusted",
               "verdict"]
    runs = delay_runs(summary)
    if runs.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    folds = has_folds(runs)
    for delay, part in runs.groupby("delay", sort=True):
        classic = part[part["cell"].map(is_classic)]
        if classic.empty:
            continue
        best = classic.groupby("cell")["best_val_accuracy"].mean().idxmax()
        for cell in sorted(set(part["cell"][part["cell"].map(is_modern)])):
            pair = part[part["cell"].isin([cell, best])]
            if folds:
                means = fold_means(pair, by=("cell",)).pivot(index=FOLD, columns="cell", values="mean")
                result = paired_difference(means[cell], means[best]) if cell in means and best in means else {}
                unit, n = "speakers", int(result.get("speakers", 0) or 0)
            else:
                result = welch_difference(pair.loc[pair["cell"] == cell, "test_accuracy"],
                                          pair.loc[pair["cell"] == best, "test_accuracy"])
                unit, n = "seeds", int(result.get("runs", 0))
            rows.append({"delay": int(delay), "cell": cell, "classic": best, "unit": unit, "n": n,
                         **{key: result.get(key, np.nan) for key in ("difference", "ci_low", "ci_high", "p")}})
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows)
    tested = table["p"].notna().to_numpy()
    adjusted = np.full(len(table), np.nan)
    if tested.any():
        adjusted[tested] = holm(table.loc[tested, "p"].to_numpy(dtype=float))[0]
    table["p_adjusted"] = adjusted
    decided = np.nan_to_num(adjusted, nan=1.0) <= 0.05
    table["verdict"] = np.where(decided, np.where(table["difference"] > 0, "more accurate", "less accurate"),
                                "not clear")
    return table[columns]
