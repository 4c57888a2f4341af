"""A Markdown findings report answering the coursework's four theory questions with measurements.

Every number in the report is computed here from the loaded runs; the text
around it only names what was measured. Where a textbook expectation can be
checked, the report says whether the data supports it, and lists the ones it
does not in a closing section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradlab.analysis.load import RunData
from gradlab.analysis.stats import accuracy_table, config_groups, first_to_last_ratio, log10, select_stages, summarise
from gradlab.analysis.style import SATURATING_ACTIVATIONS, cell_label, cell_order

# Fraction of its own best validation accuracy a cell must reach to count as "learnt".
LEARNT_FRACTION = 0.9


@dataclass
class _Bootstrap:
    confidence: float = 0.95
    n_resamples: int = 2000
    seed: int = 0

    def kwargs(self) -> dict[str, float | int]:
        return {"confidence": self.confidence, "n_resamples": self.n_resamples, "seed": self.seed}


@dataclass
class _Checks:
    """Textbook claims tested against the data, in the order met."""

    results: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, where: str, claim: str, holds: bool, separated: bool | None = None) -> str:
        """Record a claim; ``separated`` says whether the seed intervals behind it are apart.

        A claim whose point estimates agree but whose intervals overlap is only
        "not clear": with three seeds, the data cannot tell the cells apart.
        """
        verdict = "not supported" if not holds else "not clear" if separated is False else "supported"
        self.results.append((where, claim, verdict))
        return f"**{verdict}**" + (" (the seed intervals overlap)" if verdict == "not clear" else "")


def _apart(first: pd.Series, second: pd.Series) -> bool:
    """Whether two summarised rows' confidence intervals do not overlap."""
    return bool(first["ci_high"] < second["ci_low"] or second["ci_high"] < first["ci_low"])


def format_ratio(value: float) -> str:
    """How the report writes a gradient ratio or norm (3 significant digits)."""
    return f"{value:.3g}"


def format_percent(fraction: float) -> str:
    """How the report writes an accuracy fraction, as a percentage."""
    return f"{100.0 * fraction:.1f}%"


def _interval(row: pd.Series, fmt, *, log: bool = False) -> str:
    values = [row["mean"], row["ci_low"], row["ci_high"]]
    if log:
        values = [10.0**value for value in values]
    return f"{fmt(values[0])} [{fmt(values[1])}, {fmt(values[2])}]"


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _dataset(data: RunData) -> str:
    datasets = sorted(set(data.summary["dataset"].dropna())) if "dataset" in data.summary else []
    return ", ".join(f"`{name}`" for name in datasets) if datasets else "an unrecorded dataset (no summary rows)"


def ratio_table(data: RunData, *, stage: str, boot: _Bootstrap | None = None) -> pd.DataFrame:
    """Geometric mean and CI across seeds of the first-to-last ratio per cell (and LSTM c_t).

    Returns:
        Columns ``cell``, ``state``, ``mean``, ``ci_low``, ``ci_high`` (log10 units) and ``n``.
    """
    boot = boot or _Bootstrap()
    parts = []
    for state in ("h", "c"):
        ratios = first_to_last_ratio(data.gradients, data.summary, stage=stage, state=state)
        if not ratios.empty:
            parts.append(ratios.assign(state=state, log10_ratio=log10(ratios["ratio"])))
    if not parts:
        return pd.DataFrame(columns=["cell", "state", "mean", "ci_low", "ci_high", "n"])
    return summarise(pd.concat(parts, ignore_index=True), "log10_ratio", ["cell", "state"], **boot.kwargs())


def _ratio_of(table: pd.DataFrame, cell: str, state: str = "h") -> pd.Series | None:
    rows = table[(table["cell"] == cell) & (table["state"] == state)]
    return None if rows.empty else rows.iloc[0]


def _vanishing_section(data: RunData, where: str, checks: _Checks, boot: _Bootstrap) -> list[str]:
    if data.gradients.empty:
        return ["No gradient tables were recorded for these runs.", ""]
    tables = {stage: ratio_table(data, stage=stage, boot=boot) for stage in ("init", "late")}
    lengths = sorted(set(first_to_last_ratio(data.gradients, data.summary)["seq_len"]))
    lines = [
        f"First-to-last gradient ratio |dL/dh_0| / |dL/dh_T-1| (layer 0, forward direction; T = "
        f"{', '.join(map(str, lengths))}), geometric mean over seeds [{boot.confidence:.0%} bootstrap CI]. "
        "Below 1 the gradient shrinks on its way back to the first frame.",
        "",
    ]
    rows = []
    for cell in cell_order(tables["init"]["cell"]):
        for state in ("h", "c"):
            init = _ratio_of(tables["init"], cell, state)
            if init is None:
                continue
            late = _ratio_of(tables["late"], cell, state)
            name = cell_label(cell) + (" c_t" if state == "c" else "")
            rows.append([name, _interval(init, format_ratio, log=True),
                         _interval(late, format_ratio, log=True) if late is not None else "not recorded",
                         int(init["n"])])
    lines += _table(["cell", "at initialisation", "late in training", "seeds"], rows)

    init = tables["init"][tables["init"]["state"] == "h"]
    rnn = init[init["cell"].str.startswith("RNN_")]
    activation = rnn["cell"].str[4:].str.lower()
    saturating = rnn[activation.isin(SATURATING_ACTIVATIONS)]
    other = rnn[~activation.isin(SATURATING_ACTIVATIONS)]
    claim = "saturating activations (tanh, sigmoid) vanish more than non-saturating ones (relu, leaky_relu)"
    if saturating.empty or other.empty:
        lines.append(f"Textbook: {claim}. Cannot be checked here: only "
                     f"{', '.join(cell_label(c) for c in cell_order(rnn['cell'])) or 'no plain RNN'} was measured.")
    else:
        worst_other = other.loc[other["mean"].idxmin()]
        best_saturating = saturating.loc[saturating["mean"].idxmax()]
        verdict = checks.add(where, claim, bool(best_saturating["mean"] < worst_other["mean"]),
                             _apart(best_saturating, worst_other))
        lines.append(
            f"Textbook: {claim}. At initialisation the largest saturating ratio ({cell_label(best_saturating['cell'])}, "
            f"{format_ratio(10 ** best_saturating['mean'])}) against the smallest non-saturating one "
            f"({cell_label(worst_other['cell'])}, {format_ratio(10 ** worst_other['mean'])}): {verdict}."
        )
    order = init.sort_values("mean")
    lines += ["", "Ordering at initialisation, most vanishing first: "
              + " < ".join(f"{cell_label(row.cell)} ({format_ratio(10 ** row.mean)})" for row in order.itertuples()) + ".", ""]
    if not data.gates.empty:
        lines += _saturation_lines(data, boot)
    return lines


def _gate_means(data: RunData, gate: str, stat: str, stage: str) -> pd.DataFrame:
    gates = data.gates[(data.gates["gate"] == gate) & (data.gates["stat"] == stat) & (data.gates["layer"] == 0)
                       & (data.gates["direction"] == "forward")]
    if gates.empty:
        return gates
    staged = select_stages(gates)
    staged = staged[staged["stage"] == stage]
    # One number per run: the mean over timesteps; seeds are then the observations.
    return staged.groupby(["sweep", "run_id", "cell", "seed"], observed=True)["value"].mean().reset_index()


def _saturation_lines(data: RunData, boot: _Bootstrap) -> list[str]:
    per_run = _gate_means(data, "h", "saturated", "late")
    if per_run.empty:
        return []
    stats = summarise(per_run, "value", ["cell"], **boot.kwargs())
    stats = stats.set_index("cell")
    parts = [f"{cell_label(cell)} {format_percent(stats.loc[cell, 'mean'])}" for cell in cell_order(stats.index)]
    return ["Fraction of RNN units saturated late in training (layer 0, mean over timesteps and seeds): "
            + ", ".join(parts) + ".", ""]


def _lstm_section(data: RunData, where: str, checks: _Checks, boot: _Bootstrap) -> list[str]:
    lines: list[str] = []
    if data.gradients.empty:
        return ["No gradient tables were recorded for these runs.", ""]
    for stage in ("init", "late"):
        table = ratio_table(data, stage=stage, boot=boot)
        tanh, lstm_h, lstm_c = (_ratio_of(table, "RNN_TANH"), _ratio_of(table, "LSTM"), _ratio_of(table, "LSTM", "c"))
        title = "at initialisation" if stage == "init" else "late in training"
        if tanh is None or lstm_h is None:
            lines.append(f"- {title}: the comparison needs both an RNN tanh and an LSTM run.")
            continue
        claim = f"a tanh RNN's gradient vanishes faster than an LSTM's ({title})"
        verdict = checks.add(where, claim, bool(tanh["mean"] < lstm_h["mean"]), _apart(tanh, lstm_h))
        line = (f"- {title}: RNN tanh {format_ratio(10 ** tanh['mean'])} vs LSTM h_t "
                f"{format_ratio(10 ** lstm_h['mean'])}; textbook expectation tanh RNN << LSTM {verdict}")
        if lstm_c is not None:
            line += (f"; the LSTM cell state c_t keeps {format_ratio(10 ** lstm_c['mean'])}, "
                     f"{'more' if lstm_c['mean'] > lstm_h['mean'] else 'less'} than its h_t")
        lines.append(line + ".")
    forget = _gate_means(data, "f", "mean", "late")
    if not forget.empty:
        stats = summarise(forget, "value", ["cell"], **boot.kwargs()).iloc[0]
        lines.append(f"- Mean forget-gate activation late in training (layer 0): {stats['mean']:.3f} "
                     f"[{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]; the cell-state path multiplies the gradient "
                     "by this gate at every step, so values near 1 let it through.")
    if not data.jacobian.empty:
        lines.append("- " + _jacobian_line(data, boot))
    return lines + [""]


def _jacobian_line(data: RunData, boot: _Bootstrap) -> str:
    jacobian = data.jacobian[(data.jacobian["layer"] == 0) & (data.jacobian["direction"] == "forward")]
    staged = select_stages(jacobian)
    staged = staged[staged["stage"] == "late"]
    if staged.empty:
        return "No Jacobian recorded late in training."
    far = staged[staged["distance"] == staged.groupby(["sweep", "run_id"])["distance"].transform("max")]
    stats = summarise(far.assign(log10=log10(far["spectral_norm"])), "log10", ["cell", "distance"], **boot.kwargs())
    parts = [f"{cell_label(row.cell)} {format_ratio(10 ** row.mean)} (distance {row.distance})"
             for row in stats.sort_values("mean").itertuples()]
    return "Spectral norm of d h_last / d h_t at the largest distance, late in training: " + ", ".join(parts) + "."


def _epoch_table(data: RunData) -> pd.DataFrame:
    rows = data.history[(data.history["split"] == "validation") & (data.history["metric"] == "accuracy")
                        & (data.history["step"] > 0)]
    return (rows.sort_values("step").groupby(["sweep", "run_id", "cell", "seed", "epoch"], observed=True)["value"]
            .last().reset_index())


def _curves_section(data: RunData, where: str, checks: _Checks, boot: _Bootstrap) -> list[str]:
    epochs = _epoch_table(data)
    if epochs.empty:
        return ["No validation accuracy was recorded for these runs.", ""]
    per_run = []
    for (sweep, run_id, cell, seed), run in epochs.groupby(["sweep", "run_id", "cell", "seed"], observed=True):
        run = run.sort_values("epoch")
        best = run["value"].max()
        learnt = run.loc[run["value"] >= LEARNT_FRACTION * best, "epoch"].iloc[0] + 1
        per_run.append({"cell": cell, "seed": seed, "final": run["value"].iloc[-1], "best": best,
                        "learnt": float(learnt), "epochs": int(run["epoch"].max()) + 1})
    per_run = pd.DataFrame(per_run)
    stats = {name: summarise(per_run, name, ["cell"], **boot.kwargs()).set_index("cell")
             for name in ("final", "best", "learnt")}
    cells = cell_order(per_run["cell"])
    rows = [[cell_label(cell), _interval(stats["final"].loc[cell], format_percent),
             _interval(stats["best"].loc[cell], format_percent), f"{stats['learnt'].loc[cell, 'mean']:.1f}"]
            for cell in cells]
    lines = [f"Validation accuracy after {int(per_run['epochs'].max())} epochs, mean over seeds [{boot.confidence:.0%} CI]; "
             f"'epochs to learn' is the first epoch reaching {LEARNT_FRACTION:.0%} of the run's own best.", ""]
    lines += _table(["cell", "final validation accuracy", "best validation accuracy", "epochs to learn"], rows)
    final = stats["final"]["mean"]
    lowest = final.idxmin()
    lines.append("Plateau, highest first: " + " > ".join(
        f"{cell_label(cell)} ({format_percent(final[cell])})" for cell in final.sort_values(ascending=False).index) + ".")
    rnn_cells = [cell for cell in cells if cell.startswith("RNN_")]
    gated = [cell for cell in cells if cell in ("LSTM", "GRU")]
    if rnn_cells and gated:
        claim = "the plain RNN plateaus below the gated cells"
        best_rnn = max(rnn_cells, key=lambda c: final[c])
        worst_gated = min(gated, key=lambda c: final[c])
        verdict = checks.add(where, claim, bool(final[best_rnn] < final[worst_gated]),
                             _apart(stats["final"].loc[best_rnn], stats["final"].loc[worst_gated]))
        lines.append(f"Coursework answer: {claim}: {verdict} (lowest plateau: {cell_label(lowest)}).")
    if not data.gradients.empty and len(cells) >= 3:
        ratios = ratio_table(data, stage="init", boot=boot)
        ratios = ratios[ratios["state"] == "h"].set_index("cell")["mean"]
        common = [cell for cell in cells if cell in ratios.index]
        if len(common) >= 3:
            rho = pd.Series(final[common]).rank().corr(pd.Series(ratios[common]).rank())
            lines.append(f"Why: across cells, the rank correlation (Spearman) between this plateau and the "
                         f"first-to-last gradient ratio at initialisation is {rho:.2f} "
                         "(1: the cells that keep more gradient over time learn the task better).")
    if "GRU" in cells and "LSTM" in cells:
        learnt = stats["learnt"]["mean"]
        claim = "the GRU learns in fewer epochs than the LSTM"
        verdict = checks.add(where, claim, bool(learnt["GRU"] < learnt["LSTM"]),
                             _apart(stats["learnt"].loc["GRU"], stats["learnt"].loc["LSTM"]))
        lines.append(f"Coursework answer: {claim}: {verdict} "
                     f"(GRU {learnt['GRU']:.1f} vs LSTM {learnt['LSTM']:.1f} epochs).")
    return lines + [""]


def _choice_section(data: RunData, boot: _Bootstrap) -> list[str]:
    summary = data.summary
    if summary.empty:
        return ["No summary rows: test accuracy, size and speed are unknown.", ""]
    accuracy = accuracy_table(summary, **boot.kwargs()).set_index("cell")
    size = summary.groupby("cell", observed=True)[["n_params", "time_per_epoch"]].mean()
    init = ratio_table(data, stage="init", boot=boot) if not data.gradients.empty else None
    rows = []
    for cell in cell_order(summary["cell"]):
        ratio = _ratio_of(init, cell) if init is not None else None
        rows.append([cell_label(cell),
                     _interval(accuracy.loc[cell], format_percent) if cell in accuracy.index else "n/a",
                     f"{size.loc[cell, 'n_params']:.0f}", f"{size.loc[cell, 'time_per_epoch']:.3g}",
                     format_ratio(10 ** ratio["mean"]) if ratio is not None else "n/a"])
    lines = _table(["cell", "test accuracy (best-validation checkpoint)", "parameters", "seconds per epoch",
                    "first-to-last ratio at init"], rows)
    if not accuracy.empty:
        best = accuracy["mean"].idxmax()
        cheapest = size["time_per_epoch"].idxmin()
        lines.append(f"Most accurate: {cell_label(best)} ({format_percent(accuracy.loc[best, 'mean'])}). "
                     f"Fastest per epoch: {cell_label(cheapest)} ({size.loc[cheapest, 'time_per_epoch']:.3g} s)"
                     + (f", {100 * (accuracy.loc[best, 'mean'] - accuracy.loc[cheapest, 'mean']):.1f} points below the most "
                        "accurate." if cheapest in accuracy.index and cheapest != best else "."))
    diverged = summary[summary["status"] == "diverged"]
    if not diverged.empty:
        counts = diverged.groupby("cell", observed=True).size()
        lines.append("Diverged runs (left out of accuracies): "
                     + ", ".join(f"{cell_label(cell)} {count}" for cell, count in counts.items()) + ".")
    return lines + [""]


def length_slopes(ratios: pd.DataFrame) -> pd.Series:
    """Least-squares slope of log10 first-to-last ratio against sequence length, per cell.

    The slope is the decades of gradient lost per extra timestep (negative means vanishing).
    Ratios that underflowed to 0 are left out of the fit (see :func:`underflowed_lengths`).
    """
    slopes = {}
    for cell, rows in ratios.groupby("cell", observed=True):
        rows = rows[rows["ratio"] > 0]
        if rows["seq_len"].nunique() > 1:
            slopes[cell] = float(np.polyfit(rows["seq_len"].astype(float), log10(rows["ratio"]), 1)[0])
    return pd.Series(slopes, dtype="float64")


def underflowed_lengths(ratios: pd.DataFrame) -> dict[str, list[int]]:
    """Per cell, the sequence lengths at which some run's ratio was exactly 0 (below float range)."""
    zero = ratios[ratios["ratio"] == 0]
    return {cell: sorted(set(rows["seq_len"].astype(int))) for cell, rows in zero.groupby("cell", observed=True)}


def _length_section(data: RunData) -> list[str]:
    ratios = first_to_last_ratio(data.gradients, data.summary)
    slopes = length_slopes(ratios)
    if slopes.empty:
        return []
    lengths = sorted(set(ratios["seq_len"]))
    parts = [f"{cell_label(cell)} {slopes[cell]:.3g}" for cell in cell_order(slopes.index)]
    lines = [f"Sequence length T = {', '.join(map(str, lengths))}: slope of log10 first-to-last ratio per extra "
             "timestep at initialisation (decades lost per frame; closer to 0 carries further): " + ", ".join(parts) + "."]
    zero = underflowed_lengths(ratios)
    if zero:
        lines.append("The gradient reaching the first step underflowed to exactly 0 (below the float range) for "
                     + "; ".join(f"{cell_label(cell)} at T = {', '.join(map(str, lengths))}"
                                 for cell, lengths in zero.items())
                     + ": those runs are left out of the slopes, and no signal from the first step reaches the loss.")
    return lines + [""]


def _overview_section(parts: Mapping[str, RunData], boot: _Bootstrap) -> list[str]:
    """One row per configuration: each cell's test accuracy, and its first-to-last ratio at init.

    Putting configurations side by side is what separates causes: the same
    cells with raw and normalised features, or with a last-step and a mean
    readout, differ in input scale or gradient path but not in the cell.
    """
    cells = cell_order(pd.concat([part.summary["cell"] for part in parts.values() if not part.summary.empty]))
    if len(cells) == 0:
        return []
    rows = []
    for label, part in parts.items():
        if part.summary.empty:
            continue
        accuracy = accuracy_table(part.summary, **boot.kwargs()).set_index("cell")
        ratios = ratio_table(part, stage="init", boot=boot) if not part.gradients.empty else None
        row = [f"{label} ({_dataset(part)})"]
        for cell in cells:
            text = format_percent(accuracy.loc[cell, "mean"]) if cell in accuracy.index else "–"
            ratio = _ratio_of(ratios, cell) if ratios is not None else None
            if ratio is not None:
                text += f" / {format_ratio(10 ** ratio['mean'])}"
            row.append(text)
        rows.append(row)
    return [
        "## Overview",
        "",
        "Test accuracy of the best-validation checkpoint (mean over seeds) / first-to-last gradient ratio "
        "|dL/dh_0| / |dL/dh_T-1| at initialisation (layer 0, forward), per configuration.",
        "",
        *_table(["configuration", *[cell_label(cell) for cell in cells]], rows),
    ]


def findings_report(
    data: RunData,
    *,
    figures: Mapping[str, Sequence[str]] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> str:
    """Write the findings report of ``data`` as Markdown.

    Args:
        data: loaded runs (see :func:`gradlab.analysis.load_runs`).
        figures: optional group label -> figure file names to link under each group.
        confidence, n_resamples, seed: bootstrap intervals.

    Returns:
        The report text.
    """
    boot = _Bootstrap(confidence, n_resamples, seed)
    checks = _Checks()
    groups = config_groups(data.summary) if not data.summary.empty else []
    if not groups:
        groups = [(name, data.runs().loc[lambda runs, n=name: runs["sweep"] == n, ["sweep", "run_id"]])
                  for name in data.sweeps]
    sources = ", ".join(f"`{path}`" for path in data.sweeps.values())
    lines = [
        "# gradlab findings",
        "",
        f"Generated by `python -m gradlab figures` from {sources}. Every number is computed from the saved runs; "
        f"intervals are {confidence:.0%} percentile-bootstrap intervals over seeds ({n_resamples} resamples, seed {seed}). "
        "Each section is repeated per configuration; its heading names the sweep and its dataset.",
        "",
    ]
    parts = {label: data.select(runs) for label, runs in groups}
    lines += _overview_section(parts, boot)
    questions = [
        ("Q1. What do vanishing gradients look like per activation?", _vanishing_section),
        ("Q2. What does the LSTM cell state do to gradient flow?", _lstm_section),
        ("Q3. Which learning curve is which cell, and why?", _curves_section),
    ]
    for title, section in questions:
        lines += [f"## {title}", ""]
        for label, part in parts.items():
            lines += [f"### {label} (dataset {_dataset(part)})", ""]
            lines += section(part, label, checks, boot)
    lines += ["## Q4. When to pick each cell", ""]
    for label, part in parts.items():
        lines += [f"### {label} (dataset {_dataset(part)})", ""]
        lines += _choice_section(part, boot)
    for sweep in data.sweeps:
        sweep_runs = data.select(data.runs().loc[lambda runs: runs["sweep"] == sweep])
        for label, runs in config_groups(sweep_runs.summary, exclude=("seq_len",)) if not sweep_runs.summary.empty else []:
            section = _length_section(data.select(runs))
            if section:
                lines += [f"### {label}: vanishing against sequence length (dataset {_dataset(data.select(runs))})", ""] + section
    lines += ["## Where the data does not support the textbook", ""]
    failed = [(where, claim, verdict) for where, claim, verdict in checks.results if verdict != "supported"]
    if not checks.results:
        lines.append("No textbook claim could be checked: the runs lack the cells or tables they need.")
    elif not failed:
        lines.append(f"All {len(checks.results)} checked claims are supported by these runs.")
    else:
        lines += [f"- {where}: {claim} ({verdict})." for where, claim, verdict in failed]
    lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for label, names in figures.items():
            lines += [f"### {label}", ""] + [f"- [{name}]({name})" for name in names] + [""]
    return "\n".join(lines)
