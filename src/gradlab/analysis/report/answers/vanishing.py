"""Answer 1: what vanishing gradients are, why they occur, which activations suffer more or less."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradlab.analysis.decay import SATURATION_RULE, clipping_and_spikes, measured_decay, predicted_decay
from gradlab.analysis.folds import (
    paired_difference,
)
from gradlab.analysis.report.answers.common import (
    ACTIVATION_CELLS,
    FIGURES,
    difference_text,
    effect_text,
    effects,
    figure_lines,
    fold_series,
    interval_text,
    limits_line,
    number,
    p_text,
    percent,
    signed,
    speaker_rows,
)
from gradlab.analysis.report.format import table
from gradlab.analysis.report.study import Study
from gradlab.analysis.style import cell_label, cell_order

# ---------------------------------------------------------------- question 1


def decay_table(study: Study) -> pd.DataFrame:
    """Per RNN activation (and IRNN): measured and predicted per-step decay, saturation, with speaker intervals."""
    data = study.data
    summary = data.summary
    rnn = summary["cell"].isin(ACTIVATION_CELLS)
    runs = study.headline.summary[study.headline.summary["cell"].isin(ACTIVATION_CELLS)][["sweep", "run_id"]]
    if "init" in summary.columns:  # the IRNN runs of the initialisation controls, labelled apart
        irnn = summary[rnn & summary["cell"].eq("RNN_RELU") & summary["init"].eq("identity")
                       & summary["dataset"].eq("fsdd")][["sweep", "run_id"]]
        runs = pd.concat([runs, irnn], ignore_index=True)
    part = data.select(runs)
    if part.summary.empty or part.gradients.empty:
        return pd.DataFrame()
    label = part.summary[["sweep", "run_id", "cell"]].copy()
    if "init" in part.summary.columns:
        label.loc[part.summary["init"].eq("identity").to_numpy(), "cell"] = "IRNN"
    relabel = label.set_index(["sweep", "run_id"])["cell"]

    def labelled(frame: pd.DataFrame) -> pd.DataFrame:
        index = pd.MultiIndex.from_frame(frame[["sweep", "run_id"]].astype(str))
        return frame.assign(cell=relabel.reindex(index).to_numpy())

    pieces = {}
    for stage in ("init", "late"):
        measured = labelled(measured_decay(part.gradients, part.summary, stage))
        pieces[f"decay_{stage}"] = speaker_rows(measured, part.summary, "decay")
        if not part.gates.empty:
            predicted = labelled(predicted_decay(part.gates, part.summary, stage))
            if stage == "init":
                pieces["predicted"] = speaker_rows(predicted, part.summary, "predicted")
                pieces["slope_rms_init"] = speaker_rows(predicted, part.summary, "slope_rms")
            pieces[f"saturated_{stage}"] = speaker_rows(predicted, part.summary, "saturated")
    rows = []
    for cell in [*ACTIVATION_CELLS, "IRNN"]:
        row: dict[str, object] = {"cell": cell}
        for name, frame in pieces.items():
            if frame.empty or cell not in set(frame["cell"]):
                continue
            found = frame.set_index("cell").loc[cell]
            row.update({name: found["mean"], f"{name}_low": found["ci_low"], f"{name}_high": found["ci_high"],
                        "speakers": found["speakers"], "seeds": found["seeds"]})
        if len(row) > 1:
            rows.append(row)
    return pd.DataFrame(rows)


def _label(cell: str) -> str:
    return "IRNN (relu, identity init)" if cell == "IRNN" else cell_label(cell)


def answer_vanishing(study: Study, figures: Sequence[str] = ()) -> list[str]:
    """Question 1."""
    lines = figure_lines(FIGURES[0], figures, "per-step gradient decay by activation, measured and predicted")
    text = ["Backpropagation through time multiplies the loss gradient dL/dh_t by one Jacobian per step, "
            "W_hh^T diag(f'(a_t)). Where that product shrinks the norm by a factor r < 1 per step, the gradient "
            "reaching a state d steps before the loss is about r^d of the last one: it decays geometrically, so "
            "early inputs barely move the weights. That is the vanishing gradient; r > 1 makes it explode."]
    causal = _interventions_q1(study)
    if causal:
        text.append(causal)
    decay = decay_table(study)
    if decay.empty:
        lines += [" ".join(text + ["No gradient tables of RNN runs were recorded: the activations cannot be "
                                   "compared from these runs."]), ""]
        return lines
    text.append("For W_hh with i.i.d. entries of variance s^2 the factor is about sqrt(H s^2) times the root mean "
                "square of f'(a): torch's U(-1/sqrt(H), 1/sqrt(H)) init gives sqrt(H s^2) = 1/sqrt(3) = 0.577 "
                "(also that matrix's spectral radius), so the prediction needs only the measured derivatives, "
                "no gradient.")
    lines += [" ".join(text), ""]
    rows = []
    for row in decay.itertuples():
        get = row._asdict()
        rows.append([_label(row.cell),
                     interval_text(get.get("decay_init", np.nan), get.get("decay_init_low", np.nan),
                               get.get("decay_init_high", np.nan)),
                     interval_text(get.get("predicted", np.nan), get.get("predicted_low", np.nan),
                               get.get("predicted_high", np.nan)),
                     number(get.get("slope_rms_init", np.nan)),
                     interval_text(get.get("decay_late", np.nan), get.get("decay_late_low", np.nan),
                               get.get("decay_late_high", np.nan)),
                     f"{percent(get.get('saturated_init', np.nan))} -> {percent(get.get('saturated_late', np.nan))}",
                     int(get.get("speakers", 0))])
    lines += [f"Per-step factor of the gradient's norm (top layer; 95% t interval over test speakers), predicted "
              f"from the init (gain x rms f'), and the saturated fraction ({SATURATION_RULE}):", ""]
    lines += table(["RNN", "measured at init", "predicted at init", "rms f' at init", "measured late in training",
                    "saturated, init -> late", "speakers"], rows)
    lines += [" ".join(_ranking_q1(study, decay)), ""]
    exploding = _exploding(study)
    if exploding:
        lines += [exploding, ""]
    lines += [limits_line(study, "; per-step factors are geometric means over the sequence, so a few steps with a "
                             "larger factor are averaged in"), ""]
    return lines


def _interventions_q1(study: Study) -> str | None:
    parts = []
    pad = effects(study, "data.pad", "start")
    if not pad.empty and "RNN_TANH" in pad.index:
        parts.append(f"moving each clip's silence before the word, so that the word ends next to the loss, changes a "
                     f"tanh RNN's test accuracy by {effect_text(pad.loc['RNN_TANH'])}")
    delay = effects(study, "data.delay", 64)
    ratio = effects(study, "data.delay", 64, column="log10_ratio")
    if not delay.empty and "RNN_TANH" in delay.index:
        moved = effect_text(ratio.loc["RNN_TANH"], scale="decades") if "RNN_TANH" in ratio.index else ""
        shift = (f"; its log10 first-to-last gradient ratio moves by {moved}"
                 if not ratio.empty and "RNN_TANH" in ratio.index and np.isfinite(ratio.loc["RNN_TANH", "difference"])
                 else "")
        parts.append(f"appending 64 frames of silence after the word changes it by "
                     f"{effect_text(delay.loc['RNN_TANH'])}{shift}")
    if not parts:
        return None
    verdict = ""
    if not pad.empty and "RNN_TANH" in pad.index and np.isfinite(pad.loc["RNN_TANH", "ci_low"]):
        verdict = (" Bringing the word next to the loss helps beyond doubt: the distance, not the words, held the "
                   "tanh RNN back." if pad.loc["RNN_TANH", "ci_low"] > 0 else
                   " The accuracy effect of that move is not clear at this number of speakers.")
    return ("The interventions test whether the distance costs accuracy, changing nothing but how far the word "
            "sits from the loss: " + "; ".join(parts) + "." + verdict)


def _ranking_q1(study: Study, decay: pd.DataFrame) -> list[str]:
    ranked = decay[decay["cell"].isin(ACTIVATION_CELLS)].dropna(subset=["decay_init"]).sort_values("decay_init")
    if len(ranked) < 4:
        return []
    most, least = list(ranked["cell"][:2]), list(ranked["cell"][-2:])
    text = [f"Most affected at initialisation (smallest factor per step): {_label(most[0])} and {_label(most[1])}; "
            f"least affected: {_label(least[1])} and {_label(least[0])}."]
    measured = {}
    runs = study.headline.summary
    part = study.data.select(runs[runs["cell"].isin(ACTIVATION_CELLS)][["sweep", "run_id"]])
    values = measured_decay(part.gradients, part.summary, "init")
    for cell in ACTIVATION_CELLS:
        measured[cell] = fold_series(values, part.summary, "decay", cell)
    boundary = paired_difference(measured[least[0]], measured[most[1]])
    if np.isfinite(boundary["difference"]):
        clear = np.isfinite(boundary["ci_low"]) and boundary["ci_low"] > 0
        text.append(f"The gap between the groups ({_label(least[0])} minus {_label(most[1])}): "
                    f"{difference_text(boundary, signed(3))} per step, paired over {boundary['speakers']} speakers, "
                    f"{p_text(boundary['p'])}" + ("." if clear else
                                                   f": not clear, so {_label(least[0])} and {_label(most[1])} are "
                                                   f"tied, and only {_label(most[0])} (most) and {_label(least[1])} "
                                                   "(least) stand apart."))
    tanh_relu = paired_difference(measured["RNN_TANH"], measured["RNN_RELU"])
    if np.isfinite(tanh_relu["difference"]) and tanh_relu["difference"] > 0:
        text.append("This overturns the textbook ranking at initialisation: relu loses more than tanh "
                    f"({difference_text(tanh_relu, lambda v: f'{v:+.3f}')}"
                    " per step, tanh minus relu). Pre-activations start small, where tanh' is close to 1, while relu' "
                    "is 0 for about half the units: zeroing half the rows scales a norm by about 1/sqrt(2), and the "
                    "measured rms f' of relu is near 0.7. Saturation, the textbook's reason, comes with training "
                    "(the saturated fraction above).")
    late = measured_decay(part.gradients, part.summary, "late")
    late_gap = paired_difference(fold_series(late, part.summary, "decay", "RNN_TANH"),
                                 fold_series(late, part.summary, "decay", "RNN_RELU"))
    if np.isfinite(late_gap["ci_low"]):
        order = ("relu still loses more." if late_gap["ci_low"] > 0 else
                 "the textbook order (tanh loses more) holds by then." if late_gap["ci_high"] < 0 else
                 "no clear order.")
        text.append("Late in training (the last recorded step), tanh minus relu is "
                    f"{difference_text(late_gap, signed(3))} per step: {order}")
    sigmoid = decay.set_index("cell")
    if "RNN_SIGMOID" in sigmoid.index and np.isfinite(sigmoid.loc["RNN_SIGMOID"].get("slope_rms_init", np.nan)):
        text.append("The sigmoid is worst because its derivative is at most 1/4 even unsaturated "
                    f"(measured rms f' {number(sigmoid.loc['RNN_SIGMOID', 'slope_rms_init'])}).")
    if "IRNN" in sigmoid.index and np.isfinite(sigmoid.loc["IRNN"].get("decay_init", np.nan)):
        text.append(f"An identity recurrent matrix (IRNN) keeps the same relu units active step after step and "
                    f"passes their gradient unchanged: {number(sigmoid.loc['IRNN', 'decay_init'])} per step, where the "
                    "i.i.d. prediction does not apply.")
    return text


def _exploding(study: Study) -> str | None:
    part = study.headline
    if part.history.empty:
        return None
    table_ = clipping_and_spikes(part.history, part.summary)
    if table_.empty:
        return None
    parts = []
    for cell in cell_order(set(table_["cell"])):
        rows = table_[table_["cell"] == cell]
        clipped = rows["clipped"].dropna()
        diverged = int((part.summary[part.summary["cell"] == cell]["status"] == "diverged").sum()) \
            if "status" in part.summary else 0
        text = f"{_label(cell)}: {int((rows['spikes'] > 0).sum())} of {len(rows)} runs with a spike"
        if len(clipped):
            text += f", clipping acted on {percent(clipped.mean())} of steps in its {len(clipped)} clipped runs"
        if diverged:
            text += f", {diverged} diverged"
        parts.append(text)
    return ("Exploding gradients: the global gradient norm before clipping spikes (a step above 10x the median of "
            "the 20 steps before it) in " + "; ".join(parts) + ". Validation chose clipping at 1 where it helped, so "
            "clipping acting often marks a cell whose updates would otherwise be too large.")


