"""The findings' table of controlled comparisons (interventions against matched controls).

Pairs come from :func:`gradlab.analysis.controlled.matched_pairs` (same seed,
same test speaker, every other option equal). They are read per cell,
intervention and dataset across all the sweeps that ran them, with the test
speaker as the unit where the runs span speaker folds (a paired t test over
folds) and the seed otherwise (a paired t test over seeds on one data set).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradlab.analysis.controlled import matched_pairs
from gradlab.analysis.folds import paired_effects
from gradlab.analysis.load import RunData
from gradlab.analysis.report.format import format_percent, table
from gradlab.analysis.style import cell_label, cell_order


def _decades(row: pd.Series) -> str:
    if not np.isfinite(row["difference"]):
        return "-"
    interval = "" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    return f"{row['difference']:+.2f}{interval}"


def controlled_section(data: RunData) -> list[str]:
    """Markdown lines: each intervention against its matched control runs (empty when there is none)."""
    pairs = matched_pairs(data)
    if pairs.empty:
        return []
    if "dataset" in data.summary.columns:
        pairs = pairs.merge(data.summary[["sweep", "run_id", "dataset", "seq_len"]], on=["sweep", "run_id"],
                            how="left")
    else:
        pairs = pairs.assign(dataset="unknown", seq_len=np.nan)
    by = ("dataset", "seq_len", "option", "value", "cell")
    accuracy = paired_effects(pairs, by)
    finite = pairs[np.isfinite(pairs["log10_ratio"].astype(float)) & np.isfinite(
        pairs["log10_ratio_control"].astype(float))]
    ratio = paired_effects(finite, by, value="log10_ratio") if not finite.empty else pd.DataFrame()
    lines = ["### Controlled comparisons", "",
             "Each row: runs that differ from control runs in one option only, with the same seed and test speaker. "
             "Test accuracy, control -> intervention, and the difference (points) with its 95% paired t interval: "
             "over test speakers (each speaker's mean over its seeds) where the runs span speaker folds, over seeds "
             "otherwise; the change of the log10 first-to-last gradient ratio at initialisation (decades), paired "
             "the same way.", ""]
    rows = []
    order = {cell: k for k, cell in enumerate(cell_order(accuracy["cell"]))}
    accuracy = accuracy.assign(_order=accuracy["cell"].map(order)).sort_values(
        ["option", "dataset", "seq_len", "value", "_order"])
    for row in accuracy.itertuples():
        match = ratio[(ratio["option"] == row.option) & (ratio["value"] == row.value) & (ratio["cell"] == row.cell)
                      & (ratio["dataset"] == row.dataset) & (ratio["seq_len"] == row.seq_len)] \
            if not ratio.empty else ratio
        interval = "" if math.isnan(row.ci_low) else f" [{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}]"
        option = row.option.split(".", 1)[1]
        reference = pairs.loc[pairs["option"] == row.option, "reference"].iloc[0]
        length = "" if pd.isna(row.seq_len) else f", T = {int(row.seq_len)}"
        rows.append([f"{option}: {reference} -> {row.value}", f"`{row.dataset}`{length}", cell_label(row.cell),
                     f"{row.n} {'speakers' if row.unit == 'speaker' else 'seeds'} ({row.pairs} runs)",
                     f"{format_percent(row.control)} -> {format_percent(row.treated)}",
                     f"{100 * row.difference:+.1f}{interval}",
                     _decades(match.iloc[0]) if len(match) else "-"])
    return lines + table(["intervention", "data", "cell", "unit", "test accuracy", "difference (points)",
                          "log10 ratio change"], rows)
