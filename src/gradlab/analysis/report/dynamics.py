"""The findings' dynamics section: Lyapunov spectra, and the largest exponent against measured gradient decay."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from gradlab.analysis.dynamics import agreement, exponent_vs_slope, spectrum_stages
from gradlab.analysis.load import RunData
from gradlab.analysis.report.format import format_number, table, with_interval
from gradlab.analysis.stats import interval_label, summarise
from gradlab.analysis.style import cell_label

#: The label under which the dynamics figures are linked.
LABEL = "dynamics"


def _largest(spectra: pd.DataFrame) -> pd.DataFrame:
    top = spectra[spectra["index"] == 0]
    by = ["sweep", "cell", "stage"] if "sweep" in top.columns else ["cell", "stage"]
    return summarise(top, "exponent", by)


def dynamics_section(data: RunData, figures: Mapping[str, Sequence[str]], *, detail: bool = False) -> list[str]:
    """Markdown lines of the dynamics section (empty when no run recorded a Lyapunov spectrum).

    Args:
        data: the loaded runs.
        figures: label -> figure files, for the links.
        detail: the per-cell and per-length agreement table (the appendix) instead of its summary.
    """
    if data.lyapunov.empty:
        return []
    lines = ["## Dynamics: Lyapunov exponents and gradient decay", "",
             "The largest Lyapunov exponent of a layer's recurrence (natural log per step, first layer) sets the rate "
             "at which gradients shrink (below 0) or grow over many steps. Mean over seeds "
             f"[{interval_label()}], at initialisation and at each run's last recorded step (the end of training):", ""]
    largest = _largest(spectrum_stages(data.lyapunov))
    rows = []
    for (sweep, cell), part in largest.groupby(["sweep", "cell"], observed=True, sort=True):
        stages = part.set_index("stage")
        shown = [with_interval(row["mean"], row["ci_low"], row["ci_high"]) if stage in stages.index else "-"
                 for stage in ("initialisation", "trained") for row in [stages.loc[stage]] if stage in stages.index]
        shown += ["-"] * (2 - len(shown))
        rows.append([sweep, cell_label(cell), int(part["seeds"].max()), *shown])
    lines += table(["sweep", "cell", "runs", "largest exponent at init", "at the last recorded step"], rows)
    pairs = exponent_vs_slope(data.lyapunov, data.gradients, data.summary)
    if not pairs.empty and not detail:
        fit = agreement(pairs)
        worst = fit.loc[fit["difference"].abs().idxmax()]
        lines += [f"At initialisation the largest exponent predicts the gradient's measured decay per step (log10 "
                  f"first-to-last ratio / (T - 1)) to within {abs(worst['difference']):.3g} decades per step in "
                  f"every cell and length ({len(fit)} cell-length pairs, {int(fit['seeds'].sum())} runs; the largest "
                  f"gap: {cell_label(worst['cell'])} at T = {int(worst['seq_len'])}, predicted "
                  f"{format_number(worst['predicted'])}, measured {format_number(worst['measured'])}). Table by cell "
                  "and length in the appendix.", ""]
    if not pairs.empty and detail:
        fit = agreement(pairs)
        lines += ["Prediction against measurement at initialisation, in decades per step: the largest exponent / "
                  "ln 10 against log10(first-to-last gradient ratio) / (T - 1), run by run (difference: measured "
                  f"- predicted, {interval_label()}):", ""]
        lines += table(["cell", "T", "seeds", "predicted", "measured", "difference", "underflowed"],
                       [[cell_label(row.cell), row.seq_len, row.seeds, format_number(row.predicted),
                         format_number(row.measured), with_interval(row.difference, row.ci_low, row.ci_high),
                         row.underflowed] for row in fit.itertuples()])
    for name in figures.get(LABEL, []):
        lines.append(f"![{name.split('__')[0].replace('_', ' ')}]({name})")
    return lines + [""]
