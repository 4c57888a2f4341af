"""The four answers that open the findings report, each generated from the measurements.

(a) why gradients vanish and what it does to learning, (b) tanh against relu,
(c) telling RNN, LSTM and GRU apart from their learning curves, (d) when to
use each. Each answer cites its numbers with their intervals and seeds, links
one figure, and ends with the limits of its evidence. A sentence whose data is
missing is left out rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from gradlab.analysis.report.evidence import Check, Evidence
from gradlab.analysis.report.format import (
    dataset_of,
    format_percent,
    format_ratio,
    split_note,
    with_interval,
)
from gradlab.analysis.stats import (
    interval_label,
    length_fit,
    mean_interval,
    select_stages,
)
from gradlab.analysis.style import cell_label, cell_order

GATED = ("LSTM", "GRU")


def pick(evidence: Sequence[Evidence], cells: Sequence[str], score: Callable[[Evidence], float] = lambda e: 0.0
         ) -> Evidence | None:
    """The configuration holding most of ``cells``, then the best ``score``, then a tuned one, then the most runs."""
    if not evidence:
        return None
    return max(evidence, key=lambda e: (len(set(cells) & set(e.cells)), score(e),
                                        bool((e.sweep_config or {}).get("select_by")), len(e.data.summary)))


def _seeds(evidence: Evidence) -> str:
    summary = evidence.data.summary
    counts = sorted(set(summary.groupby("cell", observed=True).size())) if not summary.empty else []
    return "/".join(map(str, counts)) or "unknown"


def _limits(evidence: Evidence, extra: str = "") -> str:
    return (f"*Limits:* {_seeds(evidence)} seeds per cell; {split_note(evidence.data, evidence.sweep_config)}; "
            f"one configuration ({evidence.label}), others in the appendix{extra}.")


def _figure(figures: Mapping[str, Sequence[str]], label: str, stems: Sequence[str]) -> list[str]:
    for stem in stems:
        for name in figures.get(label, []):
            if name.startswith(f"{stem}__"):
                return ["", f"![{stem.replace('_', ' ')}, {label}]({name})"]
    return []


def _ratio_text(evidence: Evidence, cell: str, state: str = "h") -> str | None:
    values = evidence.ratio(cell, state=state)
    if len(values) == 0:
        return None
    low, high = mean_interval(values)
    return with_interval(float(np.mean(values)), low, high, format_ratio, log=True)


def _step_text(values: pd.Series) -> str | None:
    values = values.dropna().to_numpy(dtype=float)
    if len(values) == 0 or not np.isfinite(values).all():
        return None
    low, high = mean_interval(values)
    return with_interval(float(values.mean()), low, high, format_ratio, log=True)


def _accuracy_text(row: pd.Series) -> str:
    return with_interval(row["mean"], row["ci_low"], row["ci_high"], format_percent)


def _learned(evidence: Evidence, cell: str) -> str | None:
    rows = evidence.learning[evidence.learning["cell"] == cell] if not evidence.learning.empty else evidence.learning
    return None if rows.empty else str(rows.iloc[0]["learned_of"])


def _check(checks: Sequence[Check], where: str, start: str) -> Check | None:
    return next((check for check in checks if check.where == where and check.claim.startswith(start)), None)


def _verdict(check: Check | None) -> str:
    if check is None:
        return ""
    c = check.comparison
    scale = 100.0 if "accuracy" in check.quantity else 1.0
    interval = with_interval(c.difference * scale, c.ci_low * scale, c.ci_high * scale)
    corrected = ", Holm-corrected" if check.verdict != "too few seeds" else ""
    return (f" Check \"{check.claim}\": **{check.verdict}** (difference {interval}, 95% Welch t interval, "
            f"{c.seeds_first} vs {c.seeds_second} seeds{corrected}).")


def answer_vanishing(evidence: Sequence[Evidence], checks: Sequence[Check], figures: Mapping[str, Sequence[str]],
                     length_sweeps: Sequence[tuple[str, pd.DataFrame]] = ()) -> list[str]:
    """Answer (a); ``length_sweeps`` holds (label, first-to-last ratios at initialisation) of sequence-length sweeps."""
    e = pick([item for item in evidence if not item.ratios.empty], ("RNN_TANH", "LSTM", "GRU"),
             lambda item: float(not item.data.jacobian.empty))
    if e is None:
        return ["No gradient tables were recorded: this question cannot be answered from these runs."]
    lengths = sorted(set(e.ratios["seq_len"]))
    parts = [f"{cell_label(cell)} {text}" for cell in e.cells if (text := _ratio_text(e, cell)) is not None]
    lines = [f"In {e.label} ({dataset_of(e.data)}, T = {', '.join(map(str, lengths))}), at initialisation the first "
             f"step gets this fraction of the last step's gradient ({interval_label()}): " + "; ".join(parts) + "."]
    lines.append("Backpropagation multiplies it by one Jacobian per step, diag(f'(a_t)) W_hh, of norm at most "
                 "||W_hh|| max|f'| (tanh' <= 1; relu' is 0 or 1): below 1 per step, the product shrinks geometrically.")
    steps = e.steps[e.steps["cell"] == "RNN_TANH"] if "cell" in e.steps.columns else e.steps.iloc[:0]
    jacobian, gradient = (_step_text(steps[column]) if column in steps else None
                          for column in ("jacobian_step", "gradient_step"))
    if jacobian and gradient:
        lines.append(f"gradlab's Jacobian measurements show it for the tanh RNN: ||dh_T/dh_t|| shrinks by "
                     f"{jacobian} per step, the gradient by {gradient}.")
    saturated = _saturated(e)
    if saturated:
        lines.append(saturated)
    learned = {cell: text for cell in e.cells if (text := _learned(e, cell))}
    if len(set(learned.values())) == 1 and len(learned) > 1:
        lines.append(f"Learning: {next(iter(learned.values()))} in every cell.")
    elif learned:
        lines.append("Learning: " + "; ".join(f"{cell_label(cell)} {text}" for cell, text in learned.items()) + ".")
    association = _association(e)
    if association:
        lines.append(association)
    length = _length_sentence(length_sweeps)
    if length:
        lines.append(length)
    lines.append(_limits(e, "; association is not cause"))
    return [" ".join(lines)] + _figure(figures, e.label, ("jacobian_spectral_norm", "gradient_norm_by_timestep"))


def _saturated(e: Evidence) -> str | None:
    gates = e.data.gates
    if gates.empty:
        return None
    chosen = gates[(gates["gate"] == "h") & (gates["stat"] == "saturated") & (gates["layer"] == 0)]
    if chosen.empty:
        return None
    staged = select_stages(chosen)
    parts = []
    for stage in ("init", "late"):
        rows = staged[(staged["stage"] == stage) & (staged["cell"] == "RNN_TANH")]
        if not rows.empty:
            per_run = rows.groupby("run_id", observed=True)["value"].mean()
            when = "at initialisation" if stage == "init" else "late in training"
            parts.append(f"{format_percent(per_run.mean())} {when}")
    if not parts:
        return None
    return "Saturated tanh units (derivative near 0): " + ", ".join(parts) + "."


def _association(e: Evidence) -> str | None:
    from gradlab.analysis.compare import seed_association

    per_run = e.per_run().dropna(subset=["best"])
    if len(per_run) < 4:
        return None
    pooled = seed_association(per_run, "log10_ratio", "best", by=None).iloc[0]
    if np.isnan(pooled["r"]):
        return None
    interval = with_interval(pooled["r"], pooled["ci_low"], pooled["ci_high"], lambda v: f"{v:.2f}")
    return (f"Across the {int(pooled['seeds'])} runs (cells pooled), log10 ratio at initialisation and best "
            f"validation accuracy are associated with Spearman r = {interval}.")


def _length_sentence(lengths: Sequence[tuple[str, pd.DataFrame]]) -> str | None:
    for label, ratios in lengths:
        fit = length_fit(ratios).set_index("cell")
        parts = [f"{cell_label(cell)} {fit.loc[cell, 'slope']:.3g}" for cell in cell_order(fit.index)]
        if parts:
            return (f"Over T = {ratios['seq_len'].min()}-{ratios['seq_len'].max()} ({label}), log10 ratio at "
                    "initialisation falls linearly with T, in decades per step: " + ", ".join(parts) + ".")
    return None


def answer_activation(evidence: Sequence[Evidence], checks: Sequence[Check], figures: Mapping[str, Sequence[str]]
                      ) -> list[str]:
    both = [e for e in evidence if {"RNN_TANH", "RNN_RELU"} <= set(e.cells)]
    if not both:
        return ["No configuration ran both a tanh and a relu RNN: this question cannot be answered from these runs."]
    e = pick(both, ("RNN_TANH", "RNN_RELU"), lambda item: float(not item.ratios.empty))
    lines = []
    steps = e.steps.groupby("cell", observed=True)["gradient_step"] if not e.steps.empty else None
    factors = {cell: _step_text(steps.get_group(cell)) for cell in ("RNN_TANH", "RNN_RELU")
               if steps is not None and cell in steps.groups}
    if all(factors.get(cell) for cell in ("RNN_TANH", "RNN_RELU")):
        tanh_mean = e.steps.loc[e.steps["cell"] == "RNN_TANH", "gradient_step"].mean()
        relu_mean = e.steps.loc[e.steps["cell"] == "RNN_RELU", "gradient_step"].mean()
        lines.append(f"In {e.label}, at initialisation the gradient shrinks per step by {factors['RNN_TANH']} "
                     f"(tanh) and {factors['RNN_RELU']} (relu).")
        if relu_mean < tanh_mean:
            lines.append("relu loses more: at initialisation pre-activations are small, where tanh' is close to 1, "
                         "while relu' is 0 for every unit with negative input (about half), so each relu step "
                         "passes roughly half the gradient. The textbook story (tanh saturates, relu does not) "
                         "needs saturated tanh units, which come with training.")
        else:
            lines.append("tanh loses more per step, as the saturation story predicts (tanh' < 1 away from 0).")
    lines.append(_verdict(_check(checks, e.label, "a tanh RNN keeps less gradient than a relu")).strip())
    claim = "a tanh RNN keeps less gradient than a relu"
    verdicts = [check.verdict for check in checks if check.claim.startswith(claim)]
    if len(verdicts) > 1:
        counts = pd.Series(verdicts).value_counts()
        lines.append(f"Over {len(verdicts)} configurations: " + ", ".join(f"{k} {v}" for v, k in counts.items()) + ".")
    accuracy = e.accuracy.set_index("cell") if not e.accuracy.empty else None
    if accuracy is not None and {"RNN_TANH", "RNN_RELU"} <= set(accuracy.index):
        parts = [f"{cell_label(cell)} {_accuracy_text(accuracy.loc[cell])}"
                 + (f" ({learned})" if (learned := _learned(e, cell)) else "") for cell in ("RNN_TANH", "RNN_RELU")]
        lines.append("Test accuracy: " + "; ".join(parts) + ".")
    lines.append(_limits(e))
    return [" ".join(line for line in lines if line)] + _figure(
        figures, e.label, ("gradient_norm_by_timestep", "vanishing_vs_length"))


def _curve_shape(row: pd.Series, epochs: int) -> str:
    learned, seeds = int(row["learned"]), int(row["seeds"])
    if "unknown" in str(row["learned_of"]):
        return f"final level {format_percent(row['final'])}, {row['trend']}"
    if learned == 0:
        return f"stays at chance in all {seeds} seeds"
    text = f"{row['learned_of']}"
    if 0 < learned < seeds:
        text += " (bimodal: the other seeds stay at chance; the mean curve hides two groups)"
    speed = with_interval(row["epochs_to_learn"], row["epochs_to_learn_low"], row["epochs_to_learn_high"])
    final = with_interval(row["final"], row["final_low"], row["final_high"], format_percent)
    return f"{text}, 90% of the gain by epoch {speed} of {epochs}, final level {final} and {row['trend']}"


def answer_curves(evidence: Sequence[Evidence], checks: Sequence[Check], figures: Mapping[str, Sequence[str]]
                  ) -> list[str]:
    e = pick([item for item in evidence if not item.learning.empty], ("RNN_TANH", "LSTM", "GRU"),
             lambda item: float(not item.data.history.empty))
    if e is None:
        return ["No validation history was recorded: this question cannot be answered from these runs."]
    epochs = int(e.learning_runs["epochs"].max())
    table = e.learning.set_index("cell")
    parts = [f"**{cell_label(cell)}** {_curve_shape(table.loc[cell], epochs)}"
             for cell in e.cells if cell in table.index]
    lines = [f"Validation accuracy by epoch in {e.label} ({dataset_of(e.data)}; chance "
             f"{format_percent(e.chance) if np.isfinite(e.chance) else 'unknown'}): " + "; ".join(parts) + "."]
    lines.append(_verdict(_check(checks, e.label, "a GRU learns in fewer epochs")).strip())
    lines.append("Tell them apart by: the epoch where a curve leaves chance, whether seeds split into learners and "
                 "non-learners, and whether the last 10% of epochs still rise (slope interval above 0).")
    lines.append(_limits(e, "; a run 'learns' when its best validation accuracy beats chance by a binomial test"))
    return [" ".join(line for line in lines if line)] + _figure(figures, e.label, ("learning_curves",))


def answer_choice(evidence: Sequence[Evidence], checks: Sequence[Check], figures: Mapping[str, Sequence[str]],
                  choose: Callable[[pd.DataFrame, float], pd.Series | None]) -> list[str]:
    e = pick([item for item in evidence if not item.accuracy.empty], ("RNN_TANH", "LSTM", "GRU"))
    if e is None:
        return ["No summary rows: accuracy, size and speed are unknown."]
    summary = e.data.summary
    size = summary.groupby("cell", observed=True)[["n_params", "time_per_epoch"]].mean()
    accuracy = e.accuracy.set_index("cell")
    best = choose(e.accuracy, e.chance if np.isfinite(e.chance) else 0.0)
    lines = [f"In {e.label}: " + "; ".join(
        f"{cell_label(cell)} {_accuracy_text(accuracy.loc[cell])} "
        f"with {size.loc[cell, 'n_params']:,.0f} parameters, {size.loc[cell, 'time_per_epoch']:.3g} s/epoch"
        for cell in e.cells if cell in accuracy.index) + f" (test accuracy, {interval_label()})."]
    if best is None:
        lines.append("No cell is above chance here, so none can be recommended from these runs.")
    else:
        floor = best["ci_low"] if pd.notna(best["ci_low"]) else best["mean"]
        tied = accuracy[accuracy["ci_high"].fillna(accuracy["mean"]) >= floor]
        cheapest = size.loc[[cell for cell in tied.index if cell in size.index], "time_per_epoch"].idxmin()
        lines.append(f"Most accurate above chance: {cell_label(best['cell'])}.")
        if cheapest != best["cell"]:
            lines.append(f"{cell_label(cheapest)}'s interval reaches it at lower cost: prefer it when speed matters.")
    if e.aggregate is not None and not e.aggregate.empty:
        top = e.aggregate.loc[e.aggregate["iqm"].idxmax()]
        lines.append(f"Interquartile mean over seeds and test examples: {cell_label(top['cell'])} "
                     f"{with_interval(top['iqm'], top['ci_low'], top['ci_high'], format_percent)} ({top['interval']}).")
    sizes = summary["ensemble_size"].dropna() if "ensemble_size" in summary else pd.Series(dtype=float)
    if (sizes > 1).any():
        lines.append(f"Seconds per epoch are per run: runs trained together as an ensemble (of "
                     f"{int(sizes.min())}-{int(sizes.max())}) share its time.")
    counts = {cell: int(size.loc[cell, "n_params"]) for cell in e.cells if cell in size.index}
    if len(set(counts.values())) > 1:
        lines.append("Parameter counts are not matched, so part of a larger cell's advantage may be its size.")
    lines.append(_limits(e))
    return [" ".join(lines)] + _figure(figures, e.label, ("test_accuracy",))
