"""The findings' table of controlled comparisons (interventions against matched controls)."""

from __future__ import annotations

import math

from gradlab.analysis.controlled import controlled_comparisons
from gradlab.analysis.load import RunData
from gradlab.analysis.report.format import format_percent, table
from gradlab.analysis.style import cell_label


def _ratio(value: float, underflowed: int) -> str:
    text = "-" if math.isnan(value) else f"{value:.2f}"
    return f"{text} ({underflowed} underflowed)" if underflowed else text


def controlled_section(data: RunData) -> list[str]:
    """Markdown lines: each intervention against its matched control runs (empty when there is none)."""
    pairs = controlled_comparisons(data)
    if pairs.empty:
        return []
    lines = ["### Controlled comparisons", "",
             "Each row: runs that differ from control runs (in any loaded sweep) in one option only, seed for seed. "
             "Test accuracy, control -> intervention, and the difference with its 95% Welch t interval; log10 "
             "first-to-last gradient ratio at initialisation (mean over seeds), control -> intervention.", ""]
    rows = []
    for row in pairs.sort_values(["option", "cell", "sweep"]).itertuples():
        interval = "" if math.isnan(row.ci_low) else f" [{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}]"
        rows.append([f"{row.option}: {row.reference} -> {row.value}", cell_label(row.cell), row.sweep, row.seeds,
                     f"{format_percent(row.accuracy_control)} -> {format_percent(row.accuracy)}",
                     f"{100 * row.difference:+.1f}{interval}",
                     f"{_ratio(row.log10_ratio_control, row.log10_ratio_control_underflowed)} -> "
                     f"{_ratio(row.log10_ratio, row.log10_ratio_underflowed)}"])
    return lines + table(["intervention", "cell", "sweep", "seeds", "test accuracy", "difference (points)",
                          "log10 ratio at init"], rows)

