"""The per-configuration table a sweep prints when it ends: test accuracy over seeds, and costs."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

#: Columns that tell configurations apart when they vary within a sweep.
CONFIG_COLUMNS: tuple[str, ...] = ("bidirectional", "readout", "normalise", "seq_len", "hidden_size", "num_layers",
                                   "init", "lr", "clip_grad_norm")


def cell_table(summary: pd.DataFrame, keys: Sequence[str] = ()) -> pd.DataFrame:
    """Per cell (and per any other configuration that varies): test accuracy over seeds, and costs.

    Columns: the group keys, ``seeds`` (runs behind the row), ``diverged``,
    ``test_acc_mean``, ``test_acc_std`` (sample std over seeds; NaN for one
    seed), ``test_acc_min``, ``test_acc_max`` (the range over seeds, not an
    interval), ``final_test_acc_mean``, ``best_val_acc_mean``,
    ``time_per_epoch`` (mean seconds), ``n_params``.

    Args:
        summary: SUMMARY rows.
        keys: more columns to group by (besides ``cell`` and the configuration
            columns that vary in ``summary``).
    """
    if summary.empty:
        return pd.DataFrame()
    varying = [column for column in (*CONFIG_COLUMNS, *keys)
               if column in summary.columns and summary[column].nunique(dropna=False) > 1]
    group = ["cell"] + list(dict.fromkeys(varying))
    rows = []
    for values, part in summary.groupby(group, sort=True, dropna=False, observed=True):
        values = values if isinstance(values, tuple) else (values,)
        test = part["test_accuracy"].astype(float)
        rows.append({
            **dict(zip(group, values)),
            "seeds": len(part),
            "diverged": int((part["status"] == "diverged").sum()),
            "test_acc_mean": test.mean(),
            "test_acc_std": test.std(ddof=1) if test.notna().sum() > 1 else float("nan"),
            "test_acc_min": test.min(),
            "test_acc_max": test.max(),
            "final_test_acc_mean": part["final_test_accuracy"].astype(float).mean(),
            "best_val_acc_mean": part["best_val_accuracy"].astype(float).mean(),
            "time_per_epoch": part["time_per_epoch"].astype(float).mean(),
            "n_params": int(part["n_params"].iloc[0]),
        })
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame) -> str:
    """The per-cell table as text, accuracies in percent."""
    if table.empty:
        return "(no runs ended)"
    shown = table.copy()
    for column in ("test_acc_mean", "test_acc_std", "test_acc_min", "test_acc_max", "final_test_acc_mean",
                   "best_val_acc_mean"):
        shown[column] = (100 * shown[column]).map(lambda value: "-" if pd.isna(value) else f"{value:.1f}")
    shown["time_per_epoch"] = shown["time_per_epoch"].map(lambda value: f"{value:.2f}s")
    return shown.to_string(index=False)
