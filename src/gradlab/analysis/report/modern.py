"""The findings' ``## Modern recurrences`` section, after the answers: four questions about the new cells.

(i) do they keep gradient over T where the classic cells lose it, (ii) does that buy accuracy (the distance
task over T, FSDD with silence appended), (iii) where does the curse of memory show, and (iv) how fast is
the scan against the step loop, quoted from ``benchmarks/bench_scan.py``'s saved output only (sweep seconds
per epoch include evaluation and whatever else the machine ran). The statistics are in
:mod:`gradlab.analysis.modern`; verdicts are Holm-corrected within each question.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from gradlab.analysis import modern
from gradlab.analysis.folds import speaker_interval_label
from gradlab.analysis.load import RunData, TableNotLoadedError
from gradlab.analysis.report.format import format_number, format_percent, table, with_interval
from gradlab.analysis.stats import interval_label, length_fit, summarise
from gradlab.analysis.style import cell_label

#: The label under which the section's figures are linked.
LABEL = "modern"
#: The benchmark output experiments/modern.sh writes beside its sweeps, and the command that makes it.
BENCH_FILE = "bench_scan.txt"
BENCH_COMMAND = "python benchmarks/bench_scan.py"
_WELCH = "95% Welch t interval over seeds"


def _table(data: RunData, kind: str) -> pd.DataFrame:
    try:
        return data.table(kind)
    except TableNotLoadedError:
        return pd.DataFrame()


def has_modern(data: RunData) -> bool:
    """Whether any loaded run is of a modern cell."""
    summary = _table(data, "summary")
    return not summary.empty and bool(summary["cell"].astype(str).map(modern.is_modern).any())


def length_ratios(data: RunData) -> pd.DataFrame:
    """:func:`gradlab.analysis.modern.ratios` of the default distance runs (empty without gradients, or when no
    modern cell ran the task: the classic cells' ratios alone answer nothing about the modern ones)."""
    gradients = _table(data, "gradients")
    runs = modern.length_runs(_table(data, "summary"))
    if runs.empty or gradients.empty or not runs["cell"].astype(str).map(modern.is_modern).any():
        return pd.DataFrame()
    return modern.ratios(gradients, runs)


def modern_figures(data: RunData) -> list[tuple[str, Callable[[], object]]]:
    """(file stem, draw) of the section's figures that the loaded tables can draw."""
    from gradlab.analysis.plots.modern import plot_memory_sensitivity, plot_ratio_vs_length

    if not has_modern(data):
        return []
    jobs: list[tuple[str, Callable[[], object]]] = []
    ratios = length_ratios(data)
    if not ratios.empty:
        jobs.append(("modern_gradient_vs_length", lambda: plot_ratio_vs_length(ratios)))
    parameters = _table(data, "parameter_gradients")
    if not parameters.empty and parameters["memory"].notna().any():
        jobs.append(("modern_memory_sensitivity", lambda: plot_memory_sensitivity(parameters)))
    return jobs


def _cell_verdict(verdicts: Sequence[str], yes: str = "supported", no: str = "contradicted") -> str:
    """yes: supported at every length; no: contradicted somewhere and supported nowhere; else not clear."""
    verdicts = [verdict for verdict in verdicts if verdict != "too few seeds"]
    if verdicts and all(verdict == yes for verdict in verdicts):
        return "yes"
    if no in verdicts and yes not in verdicts:
        return "no"
    return "not clear"


def _gradient_part(ratios: pd.DataFrame) -> list[str]:
    lines = ["### Do they keep the gradient over T?", ""]
    if ratios.empty:
        return lines + ["No distance-task runs of the modern cells with recorded gradients: not measured.", ""]
    stats = summarise(ratios, "log_ratio", ["cell", "seq_len", "stage"])
    rows = []
    for (cell, seq_len), part in stats.groupby(["cell", "seq_len"], sort=True):
        shown = {row.stage: with_interval(row.mean, row.ci_low, row.ci_high, log=True) for row in part.itertuples()}
        rows.append([cell_label(cell), int(seq_len), int(part["seeds"].max()),
                     shown.get("init", "-"), shown.get("late", "-")])
    lines += [f"First-to-last gradient ratio |dL/dh_0| / |dL/dh_T-1| (layer 0; distance task at its default "
              f"settings; mean of log10 over seeds, shown as powers of ten, {interval_label()}):", ""]
    lines += table(["cell", "T", "seeds", "at initialisation", "after training"], rows)
    underflowed = ratios[ratios["underflowed"]]
    if not underflowed.empty:
        lines += [f"{len(underflowed)} ratios underflowed to 0 (vanished below float range); they enter the "
                  f"tests as 1e{modern.UNDERFLOW_LOG10:.0f}.", ""]
    fit = length_fit(ratios[ratios["stage"] == "init"])
    if not fit.empty:
        lines += ["Decay at initialisation, from a least-squares line of log10 ratio against T (every run one "
                  "point): " + "; ".join(f"{cell_label(row.cell)} {format_number(100 * row.slope)} decades per "
                                         f"100 steps ({row.seeds} runs)" for row in fit.itertuples()) + ".", ""]
    checks = modern.ratio_comparisons(ratios)
    if checks.empty:
        return lines + ["No classic cell ran at these lengths, so no comparison is made.", ""]
    lines += [f"Each modern cell against the classic cell keeping the most gradient at the same T (claim: at "
              f"least ten times more; difference in decades, {_WELCH}, Holm over the {len(checks)} checks):", ""]
    lines += table(["stage", "T", "cell", "classic", "seeds", "difference (decades)", "verdict"],
                   [[modern.STAGES[row.stage], row.seq_len, cell_label(row.cell), cell_label(row.classic),
                     f"{row.seeds_modern} vs {row.seeds_classic}",
                     with_interval(row.difference, row.ci_low, row.ci_high), row.verdict]
                    for row in checks.itertuples()])
    longest = int(checks["seq_len"].max())
    for stage, part in checks.groupby("stage", sort=False):
        answer = {cell: _cell_verdict(rows["verdict"]) for cell, rows in part.groupby("cell", sort=True)}
        lines.append(f"- **{modern.STAGES[stage].capitalize()}**, keeps at least ten times the best classic cell's "
                     "gradient at every compared T: " + "; ".join(f"{cell_label(c)} {v}" for c, v in answer.items())
                     + ".")
    lines += ["", f"Classic cells were compared up to T = {longest}; longer runs of the modern cells show their own "
                  "decay only.", ""]
    return lines


def _accuracy_part(data: RunData) -> list[str]:
    lines = ["### Does it buy accuracy?", ""]
    runs = modern.length_runs(_table(data, "summary"))
    checks = modern.accuracy_comparisons(runs) if not runs.empty else pd.DataFrame()
    if checks.empty:
        lines += ["Distance task: no lengths with both modern and classic cells.", ""]
    else:
        lines += [f"Distance task, test accuracy against the classic cell with the best mean validation accuracy "
                  f"at the same T (difference in percentage points, {_WELCH}, Holm over {len(checks)} checks):", ""]
        lines += table(["T", "cell", "classic", "seeds", "difference", "verdict"],
                       [[row.seq_len, cell_label(row.cell), cell_label(row.classic),
                         f"{row.seeds_modern} vs {row.seeds_classic}",
                         with_interval(100 * row.difference, 100 * row.ci_low, 100 * row.ci_high), row.verdict]
                        for row in checks.itertuples()])
        answer = {cell: _cell_verdict(rows["verdict"]) for cell, rows in checks.groupby("cell", sort=True)}
        lines += ["- More accurate than the best classic cell at every compared T: "
                  + "; ".join(f"{cell_label(c)} {v}" for c, v in answer.items()) + ".", ""]
        accuracy = summarise(runs[runs["cell"].astype(str).map(modern.is_modern)].assign(
            cell=lambda frame: frame["cell"].astype(str)), "test_accuracy", ["cell", "seq_len"])
        lines += ["Modern cells' test accuracy at every length run (" + interval_label() + "): "
                  + "; ".join(f"{cell_label(row.cell)} T={int(row.seq_len)} "
                              f"{with_interval(row.mean, row.ci_low, row.ci_high, format_percent)} ({row.seeds} seeds)"
                              for row in accuracy.itertuples()) + ".", ""]
    delay = modern.delay_comparisons(_table(data, "summary"))
    if delay.empty:
        return lines + ["FSDD with silence appended: no delay sweeps with both modern and classic cells.", ""]
    unit = delay["unit"].iloc[0]
    label = speaker_interval_label() if unit == "speakers" else _WELCH
    lines += [f"FSDD with K frames of silence after the word (K = 0: the tuned sweeps), test accuracy against the "
              f"classic cell with the best mean validation accuracy at each K (difference in percentage points, "
              f"{'paired by test speaker, ' if unit == 'speakers' else ''}{label}; Holm over {len(delay)}):", ""]
    lines += table(["K", "cell", "classic", unit, "difference", "verdict"],
                   [[row.delay, cell_label(row.cell), cell_label(row.classic), row.n,
                     with_interval(100 * row.difference, 100 * row.ci_low, 100 * row.ci_high), row.verdict]
                    for row in delay.itertuples()])
    return lines


def _memory_part(data: RunData, figures: Sequence[str]) -> list[str]:
    lines = ["### Where does the curse of memory show?", ""]
    parameters = _table(data, "parameter_gradients")
    association = modern.memory_association(parameters) if not parameters.empty else pd.DataFrame()
    if association.empty:
        lines += ["No run recorded per-unit parameter gradients with a memory (`--record-parameters` on a modern "
                  "cell): not measured.", ""]
    else:
        lines += ["Spearman correlation, over the units of layer 0, between a unit's memory (|lambda|, |u|, or "
                  "mean retention 1 - z / f') and the gradient norm of the parameter that sets it, at each run's "
                  "first and last recorded step (mean over runs, 95% t interval over runs: every seed at every "
                  f"length is one; one-sample t test, Holm over "
                  f"{len(association)}). \"Grows with memory\" is the curse of memory: units that remember longer "
                  "are the most sensitive to their own parameter.", ""]
        lines += table(["cell", "parameter", "stage", "runs", "correlation", "verdict"],
                       [[cell_label(row.cell), row.parameter, modern.STAGES[row.stage], row.runs,
                         with_interval(row.mean, row.ci_low, row.ci_high), row.verdict]
                        for row in association.itertuples()])
    return lines + [f"![{name.split('.')[0].replace('_', ' ')}]({name})" for name in figures] + [""]


def bench_output(data: RunData) -> tuple[Path, str] | None:
    """The first :data:`BENCH_FILE` beside a loaded sweep (in the folder that holds it), with its text."""
    for path in data.sweeps.values():
        candidate = Path(path).parent / BENCH_FILE
        if candidate.is_file():
            return candidate, candidate.read_text().strip()
    return None


def _speed_part(data: RunData) -> list[str]:
    lines = ["### Scan or step loop: which is faster?", ""]
    found = bench_output(data)
    if found is None:
        return lines + [f"Not measured with these runs: `{BENCH_COMMAND}` times both on the same weights and batch "
                        "and prints their ratio. Sweep seconds per epoch are not used for this: they include "
                        "evaluation and everything else the machine ran.", ""]
    path, text = found
    return lines + [f"From `{path.name}` beside the sweeps, written by `{BENCH_COMMAND}` (forward+backward of one "
                    "layer, median of repeats, both timed in one process; loop/scan above 1 means the scan is "
                    "faster on that machine):", "", "```", text, "```", ""]


def modern_section(data: RunData, figures: Mapping[str, Sequence[str]]) -> list[str]:
    """Markdown lines of ``## Modern recurrences`` (empty when no loaded run is of a modern cell)."""
    if not has_modern(data):
        return []
    linked = list(figures.get(LABEL, []))
    ratios = length_ratios(data)
    lines = ["## Modern recurrences", "",
             "IndRNN, minGRU, minLSTM, the LRU and a real diagonal linear recurrence against the classic cells. "
             "Verdicts are \"yes\" only where every compared length supports the claim, \"no\" where some "
             "contradict it and none support it, and \"not clear\" otherwise.", ""]
    lines += _gradient_part(ratios)
    lines += [f"![{name.split('.')[0].replace('_', ' ')}]({name})" for name in linked if "gradient" in name]
    lines += ["", *_accuracy_part(data)]
    lines += _memory_part(data, [name for name in linked if "memory" in name])
    return lines + _speed_part(data)
