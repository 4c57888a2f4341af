"""The four answers that open ``findings.md``, in the coursework's order, each led by its figure.

1. What vanishing gradients are, why they occur, and which activations suffer more or less.
2. Why LSTMs help compared with a vanilla RNN.
3. Which of three training curves is the RNN, the LSTM and the GRU, and why.
4. When to use each.

Every number is computed from the runs (:mod:`gradlab.analysis.report.study`
finds them by configuration). On FSDD the unit of every headline interval is
the test speaker: each fold's mean over its seeds is one observation, and a
difference is a paired t test over folds
(:mod:`gradlab.analysis.folds`); the distance task has one fixed data set, so
its unit is the seed. A sentence whose data is missing is left out, and an
answer with no data says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from gradlab.analysis.carry import carry_profile
from gradlab.analysis.curves import FEATURES, TRIPLE, blind_test, curve_features
from gradlab.analysis.decay import SATURATION_RULE, clipping_and_spikes, measured_decay, predicted_decay
from gradlab.analysis.folds import (
    FOLD,
    paired_difference,
    paired_effects,
    speaker_table,
    t_interval,
    welch_difference,
)
from gradlab.analysis.learning import epoch_accuracy
from gradlab.analysis.report.format import format_percent, table
from gradlab.analysis.report.study import Study
from gradlab.analysis.style import cell_label, cell_order

#: The questions, as headings.
QUESTIONS: tuple[str, ...] = (
    "What are vanishing gradients, why do they occur, and which activations suffer more or less?",
    "Why do LSTMs help with vanishing gradients, compared with a vanilla RNN?",
    "Which training curve is the RNN, which the LSTM and which the GRU, and why?",
    "When would you use each?",
)
#: The figure each answer leads with (file stem; the figures command draws them).
FIGURES: tuple[str, ...] = ("answer1_decay_by_activation", "answer2_carry_paths", "answer3_curves",
                            "answer4_differences")
#: RNN activations of question 1, in the order they are discussed.
ACTIVATION_CELLS: tuple[str, ...] = ("RNN_SIGMOID", "RNN_TANH", "RNN_RELU", "RNN_LEAKY_RELU")
CLASSIC: tuple[str, ...] = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")


# ---------------------------------------------------------------- formatting


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else format_percent(value)


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}g}"


def _interval(mean: float, low: float, high: float, fmt: Callable[[float], str] = _num) -> str:
    if not np.isfinite(low) or not np.isfinite(high):
        return f"{fmt(mean)} (no interval)"
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


def _points(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:+.1f}"


def _p(value: float) -> str:
    if not np.isfinite(value):
        return "p n/a"
    return "p < 0.001" if value < 0.001 else f"p = {value:.2g}"


def _effect_text(row: Mapping[str, object], *, scale: str = "points") -> str:
    """``+12.3 [+4.0, +20.6] points, paired over 6 speakers, p = 0.01``."""
    fmt = _points if scale == "points" else (lambda v: f"{v:+.2f}")
    unit = "speakers" if row["unit"] == "speaker" else "seeds"
    return (f"{_interval(row['difference'], row['ci_low'], row['ci_high'], fmt)} {scale}, paired over "
            f"{row['n']} {unit}, {_p(row['p'])}")


def _limits(study: Study, extra: str = "") -> str:
    speakers, seeds = study.speakers, study.seeds_per_fold
    plural = "seed" if seeds == 1 else "seeds"
    who = (f"{speakers} test speakers (FSDD's six speakers, each the test speaker of one fold), {seeds} {plural} "
           f"per fold" if speakers > 1 else f"one test split (on FSDD: one test speaker), {seeds} {plural} per cell")
    return f"*Limits:* {who}{extra}."


def _figure(stem: str, figures: Sequence[str], alt: str) -> list[str]:
    name = next((name for name in figures if name.startswith(stem)), None)
    return [f"![{alt}]({name})", ""] if name else []


# ---------------------------------------------------------------- shared measurements


def _with_folds(values: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    keys = ["sweep", "run_id"]
    extra = [column for column in (FOLD, "status") if column in summary.columns and column not in values.columns]
    frame = values.merge(summary[[*keys, *extra]], on=keys, how="left")
    if FOLD not in frame.columns:
        frame[FOLD] = "single"
    frame[FOLD] = frame[FOLD].fillna("single")
    return frame


def _speaker_rows(values: pd.DataFrame, summary: pd.DataFrame, value: str,
                  by: Sequence[str] = ("cell",)) -> pd.DataFrame:
    frame = _with_folds(values, summary)
    frame = frame[np.isfinite(frame[value].astype(float))]
    return speaker_table(frame, value, by) if not frame.empty else pd.DataFrame()


def _fold_series(values: pd.DataFrame, summary: pd.DataFrame, value: str, cell: str) -> pd.Series:
    frame = _with_folds(values[values["cell"] == cell], summary)
    frame = frame[np.isfinite(frame[value].astype(float))]
    return frame.groupby(FOLD)[value].mean()


def _effects(study: Study, option: str, value: object = None, cells: Sequence[str] = CLASSIC,
             column: str = "test_accuracy") -> pd.DataFrame:
    pairs = study.pairs
    if pairs.empty:
        return pd.DataFrame()
    chosen = pairs[(pairs["option"] == option) & pairs["cell"].isin(cells)]
    if value is not None:
        chosen = chosen[chosen["value"].map(str) == str(value)]
    if chosen.empty:
        return pd.DataFrame()
    return paired_effects(chosen, ("cell", "option", "value"), value=column).set_index("cell")


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
        pieces[f"decay_{stage}"] = _speaker_rows(measured, part.summary, "decay")
        if not part.gates.empty:
            predicted = labelled(predicted_decay(part.gates, part.summary, stage))
            if stage == "init":
                pieces["predicted"] = _speaker_rows(predicted, part.summary, "predicted")
                pieces["slope_rms_init"] = _speaker_rows(predicted, part.summary, "slope_rms")
            pieces[f"saturated_{stage}"] = _speaker_rows(predicted, part.summary, "saturated")
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
    lines = _figure(FIGURES[0], figures, "per-step gradient decay by activation, measured and predicted")
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
                     _interval(get.get("decay_init", np.nan), get.get("decay_init_low", np.nan),
                               get.get("decay_init_high", np.nan)),
                     _interval(get.get("predicted", np.nan), get.get("predicted_low", np.nan),
                               get.get("predicted_high", np.nan)),
                     _num(get.get("slope_rms_init", np.nan)),
                     _interval(get.get("decay_late", np.nan), get.get("decay_late_low", np.nan),
                               get.get("decay_late_high", np.nan)),
                     f"{_pct(get.get('saturated_init', np.nan))} -> {_pct(get.get('saturated_late', np.nan))}",
                     int(get.get("speakers", 0))])
    lines += [f"Per-step factor of the gradient's norm (top layer; 95% t interval over test speakers), predicted "
              f"from the init (gain x rms f'), and the saturated fraction ({SATURATION_RULE}):", ""]
    lines += table(["RNN", "measured at init", "predicted at init", "rms f' at init", "measured late in training",
                    "saturated, init -> late", "speakers"], rows)
    lines += [" ".join(_ranking_q1(study, decay)), ""]
    exploding = _exploding(study)
    if exploding:
        lines += [exploding, ""]
    lines += [_limits(study, "; per-step factors are geometric means over the sequence, so a few steps with a "
                             "larger factor are averaged in"), ""]
    return lines


def _interventions_q1(study: Study) -> str | None:
    parts = []
    pad = _effects(study, "data.pad", "start")
    if not pad.empty and "RNN_TANH" in pad.index:
        parts.append(f"moving each clip's silence before the word, so that the word ends next to the loss, changes a "
                     f"tanh RNN's test accuracy by {_effect_text(pad.loc['RNN_TANH'])}")
    delay = _effects(study, "data.delay", 64)
    ratio = _effects(study, "data.delay", 64, column="log10_ratio")
    if not delay.empty and "RNN_TANH" in delay.index:
        shift = (f"; its log10 first-to-last gradient ratio moves by {_effect_text(ratio.loc['RNN_TANH'], scale='decades')}"
                 if not ratio.empty and "RNN_TANH" in ratio.index and np.isfinite(ratio.loc["RNN_TANH", "difference"])
                 else "")
        parts.append(f"appending 64 frames of silence after the word changes it by "
                     f"{_effect_text(delay.loc['RNN_TANH'])}{shift}")
    if not parts:
        return None
    return ("The interventions show it causes errors: " + "; ".join(parts) + ". Only the distance between the word "
            "and the loss changed.")


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
        measured[cell] = _fold_series(values, part.summary, "decay", cell)
    boundary = paired_difference(measured[least[0]], measured[most[1]])
    if np.isfinite(boundary["difference"]):
        text.append(f"The gap between the groups ({_label(least[0])} minus {_label(most[1])}): "
                    f"{_interval(boundary['difference'], boundary['ci_low'], boundary['ci_high'], lambda v: f'{v:+.3f}')}"
                    f" per step, paired over {boundary['speakers']} speakers, {_p(boundary['p'])}.")
    tanh_relu = paired_difference(measured["RNN_TANH"], measured["RNN_RELU"])
    if np.isfinite(tanh_relu["difference"]) and tanh_relu["difference"] > 0:
        text.append("This overturns the textbook ranking at initialisation: relu loses more than tanh "
                    f"({_interval(tanh_relu['difference'], tanh_relu['ci_low'], tanh_relu['ci_high'], lambda v: f'{v:+.3f}')}"
                    " per step, tanh minus relu). Pre-activations start small, where tanh' is close to 1, while relu' "
                    "is 0 for about half the units: zeroing half the rows scales a norm by about 1/sqrt(2), and the "
                    "measured rms f' of relu is near 0.7. Saturation, the textbook's reason, comes with training "
                    "(the saturated fraction above).")
    sigmoid = decay.set_index("cell")
    if "RNN_SIGMOID" in sigmoid.index and np.isfinite(sigmoid.loc["RNN_SIGMOID"].get("slope_rms_init", np.nan)):
        text.append("The sigmoid is worst because its derivative is at most 1/4 even unsaturated "
                    f"(measured rms f' {_num(sigmoid.loc['RNN_SIGMOID', 'slope_rms_init'])}).")
    if "IRNN" in sigmoid.index and np.isfinite(sigmoid.loc["IRNN"].get("decay_init", np.nan)):
        text.append(f"An identity recurrent matrix (IRNN) keeps the same relu units active step after step and "
                    f"passes their gradient unchanged: {_num(sigmoid.loc['IRNN', 'decay_init'])} per step, where the "
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
            text += f", clipping acted on {_pct(clipped.mean())} of steps in its {len(clipped)} clipped runs"
        if diverged:
            text += f", {diverged} diverged"
        parts.append(text)
    return ("Exploding gradients: the global gradient norm before clipping spikes (a step above 10x its run's "
            "median) in " + "; ".join(parts) + ". Validation chose clipping at 1 where it helped, so clipping "
            "acting often marks a cell whose updates would otherwise be too large.")


# ---------------------------------------------------------------- question 2


def _log10(values: pd.Series) -> pd.Series:
    with np.errstate(divide="ignore"):
        return np.log10(values.astype(float))


def carry_table(part_data, label: str) -> pd.DataFrame:
    """Per run: log10 of the carried-state, hidden-state and gate-product ratios at the largest distance."""
    if part_data.gradients.empty or part_data.gates.empty:
        return pd.DataFrame()
    profile = carry_profile(part_data.gradients, part_data.gates, part_data.summary)
    if profile.empty:
        return pd.DataFrame()
    far = profile[profile["distance"] == profile.groupby(["sweep", "run_id"])["distance"].transform("max")]
    return far.assign(label=label, carried=_log10(far["carried"]), hidden=_log10(far["hidden"]),
                      gate_product=_log10(far["gate_product"]))


def _runs_where(study: Study, **conditions: object) -> pd.DataFrame:
    summary = study.data.summary
    keep = pd.Series(True, index=summary.index)
    for column, value in conditions.items():
        if column not in summary.columns:
            return summary.iloc[:0][["sweep", "run_id"]]
        keep &= summary[column].isin(value if isinstance(value, (list, tuple)) else [value])
    return summary.loc[keep, ["sweep", "run_id"]]


def _log_interval(frame: pd.DataFrame, summary: pd.DataFrame, value: str) -> str:
    rows = _speaker_rows(frame, summary, value, by=("label",))
    if rows.empty:
        return "n/a"
    row = rows.iloc[0]
    return _interval(10 ** row["mean"], 10 ** row["ci_low"], 10 ** row["ci_high"])


def answer_lstm(study: Study, figures: Sequence[str] = ()) -> list[str]:
    """Question 2."""
    lines = _figure(FIGURES[1], figures, "cell-state and hidden-state gradient by distance from the loss")
    text = ["An LSTM adds a path that an RNN lacks. Its cell state is c_t = f_t * c_{t-1} + i_t * g_t, so "
            "dc_t/dc_{t-1} contains diag(f_t): along c, the gradient is scaled at each step by the forget gate "
            "alone, with no weight matrix and no activation derivative. A vanilla RNN's only path, "
            "W_hh^T diag(f'(a_t)), shrinks the norm by about 0.58 x rms f' per step at torch's init. Where the "
            "forget gates stay near 1 the cell state carries gradient across many steps."]
    study_summary = study.data.summary
    rows = []
    for init in ("default", "forget_bias", "chrono"):
        selected = _runs_where(study, cell="LSTM", dataset="fsdd", init=init, readout="last", pad="end", delay=0)
        if init == "default":
            selected = study.headline.summary[study.headline.summary["cell"] == "LSTM"][["sweep", "run_id"]]
        part = study.data.select(selected)
        far = carry_table(part, init)
        if far.empty:
            continue
        accuracy = speaker_table(_with_folds(part.summary[["sweep", "run_id", "cell", "test_accuracy"]],
                                             part.summary), "test_accuracy")
        rows.append([f"LSTM, {init} init", _log_interval(far, part.summary, "carried"),
                     _log_interval(far, part.summary, "gate_product"), _log_interval(far, part.summary, "hidden"),
                     _interval(*accuracy.iloc[0][["mean", "ci_low", "ci_high"]], _pct) if not accuracy.empty else "n/a",
                     int(accuracy.iloc[0]["speakers"]) if not accuracy.empty else 0])
    tanh = study.headline.summary[study.headline.summary["cell"] == "RNN_TANH"][["sweep", "run_id"]]
    tanh_part = study.data.select(tanh)
    if not tanh_part.gradients.empty:
        from gradlab.analysis.stats import first_to_last_ratio

        ratios = first_to_last_ratio(tanh_part.gradients, tanh_part.summary, stage="init")
        if not ratios.empty:
            frame = ratios.assign(label="tanh", value=_log10(ratios["ratio"]))
            accuracy = speaker_table(_with_folds(tanh_part.summary[["sweep", "run_id", "cell", "test_accuracy"]],
                                                 tanh_part.summary), "test_accuracy")
            rows.append(["RNN tanh (no cell state)", "–", "–", _log_interval(frame, tanh_part.summary, "value"),
                         _interval(*accuracy.iloc[0][["mean", "ci_low", "ci_high"]], _pct) if not accuracy.empty
                         else "n/a", int(accuracy.iloc[0]["speakers"]) if not accuracy.empty else 0])
    lines += [" ".join(text), ""]
    if rows:
        lines += ["On FSDD at initialisation (layer 0, T = 32), the share of the last step's gradient that reaches "
                  "the first step, beside the product of the measured forget gates (mean over batch and units) "
                  "over those steps, and test accuracy (95% t interval over test speakers):", ""]
        lines += table(["cell", "dL/dc_0 / dL/dc_31", "product of forget gates", "dL/dh_0 / dL/dh_31",
                        "test accuracy", "speakers"], rows)
        lines += ["The measured cell-state gradient stays above the product of mean forget gates: the gradient also "
                  "flows through h and the gates, and a norm is carried by the units whose gates stay most open, "
                  "which a product of means understates.", ""]
    init_effects = _effects(study, "model.init", None, cells=("LSTM",))
    sentences = []
    if not init_effects.empty:
        pairs = study.pairs[(study.pairs["option"] == "model.init") & (study.pairs["cell"] == "LSTM")]
        for value in ("forget_bias", "chrono"):
            chosen = pairs[pairs["value"].map(str) == value]
            if chosen.empty:
                continue
            dataset_rows = chosen.merge(study_summary[["sweep", "run_id", "dataset"]], on=["sweep", "run_id"])
            fsdd = dataset_rows[dataset_rows["dataset"] == "fsdd"]
            if not fsdd.empty:
                effect = paired_effects(fsdd, ("cell",)).iloc[0]
                sentences.append(f"{value} init changes the LSTM's FSDD test accuracy by {_effect_text(effect)}")
    if sentences:
        lines += ["; ".join(sentences) + ".", ""]
    distance = _distance_carry(study)
    if distance:
        lines += distance
    vanish = _when_advantage_vanishes(study)
    if vanish:
        lines += [vanish, ""]
    gru = _gru_paragraph(study)
    if gru:
        lines += [gru, ""]
    lines += [_limits(study, "; the distance task has one data set, so its intervals are over seeds"), ""]
    return lines


def _distance_carry(study: Study) -> list[str]:
    part = study.distance
    if part.summary.empty:
        return []
    summary = part.summary
    rows = []
    for (cell, init), runs in summary.groupby(["cell", "init"], observed=True):
        if cell not in ("RNN_TANH", "LSTM", "GRU"):
            continue
        cells = {}
        selected = part.select(runs[["sweep", "run_id"]])
        ratios = pd.DataFrame()
        if not selected.gradients.empty:
            from gradlab.analysis.stats import first_to_last_ratio

            ratios = first_to_last_ratio(selected.gradients, selected.summary, stage="init",
                                         state="c" if cell == "LSTM" else "h")
        for length, at in runs.groupby("seq_len"):
            mean, low, high = t_interval(at["test_accuracy"])
            text = _interval(mean, low, high, _pct) + f" ({len(at)})"
            if not ratios.empty:
                values = ratios.loc[ratios["seq_len"] == length, "ratio"].astype(float)
                values = values[values > 0]
                if len(values):
                    text += f"; {'c' if cell == 'LSTM' else 'h'} ratio {_num(float(np.exp(np.log(values).mean())))}"
            cells[int(length)] = text
        rows.append((cell, init, cells))
    lengths = sorted({length for _, _, cells in rows for length in cells})
    if not rows:
        return []
    body = [[f"{cell_label(cell)}, {init}", *[cells.get(length, "–") for length in lengths]]
            for cell, init, cells in sorted(rows, key=lambda r: (cell_order([r[0]]), r[1]))]
    updates = summary["steps"].max() if "steps" in summary.columns else np.nan
    return [f"On the distance task (the class sits T-1 steps before the loss; chance 33.3%; {_num(updates)} updates "
            "per run, learning rate chosen on validation per cell, init and T), test accuracy, 95% t interval over "
            "seeds (runs), and at initialisation the first-to-last gradient ratio of the carried state (c for the "
            "LSTM, h otherwise; geometric mean over runs; float64):", "", *table(["cell, init", *[f"T = {length}" for length in lengths]], body)]


def _fold_accuracy(frame: pd.DataFrame, summary: pd.DataFrame, cell: str) -> pd.Series:
    return _fold_series(frame, summary, "test_accuracy", cell)


def _when_advantage_vanishes(study: Study) -> str | None:
    headline = study.headline.summary
    if headline.empty:
        return None
    base = paired_difference(_fold_accuracy(headline, headline, "LSTM"), _fold_accuracy(headline, headline, "RNN_TANH"))
    parts = [f"last-step readout {_interval(base['difference'], base['ci_low'], base['ci_high'], _points)}"]
    pairs = study.pairs
    for option, value, name in (("model.readout", "mean", "mean readout"), ("data.delay", "16", "16 frames of delay"),
                                ("data.delay", "64", "64 frames of delay")):
        chosen = pairs[(pairs["option"] == option) & (pairs["value"].map(str) == value)] if not pairs.empty else pairs
        if chosen.empty:
            continue
        if FOLD not in chosen:
            continue
        lstm = chosen[chosen["cell"] == "LSTM"].groupby(FOLD)["test_accuracy"].mean()
        tanh = chosen[chosen["cell"] == "RNN_TANH"].groupby(FOLD)["test_accuracy"].mean()
        result = paired_difference(lstm, tanh)
        if result["speakers"]:
            parts.append(f"{name} {_interval(result['difference'], result['ci_low'], result['ci_high'], _points)}")
    if len(parts) < 2:
        return None
    return ("The LSTM's lead over the tanh RNN (test accuracy points, paired over speakers) by condition: "
            + "; ".join(parts) + ". A mean readout gives every frame a direct path to the loss, so no long "
            "dependency is left to bridge; silence after the word lengthens it.")


def _gru_paragraph(study: Study) -> str | None:
    runs = study.headline.summary[study.headline.summary["cell"] == "GRU"][["sweep", "run_id"]]
    part = study.data.select(runs)
    far = carry_table(part, "GRU")
    if far.empty:
        return None
    gap = float((far["carried"] - far["gate_product"]).mean())
    relation = (f"the measured gradient is {_num(10 ** gap)} times the carry path's product, so other paths "
                "(through the candidate and the reset gate) carry most of it at initialisation" if gap > 1 else
                f"the two agree within a factor of {_num(10 ** abs(gap))}")
    return ("The GRU has the same kind of path in one state: h_t = (1 - z_t) * n_t + z_t * h_{t-1} (torch's "
            "convention; Cho et al. write 1 - z), so dh_t/dh_{t-1} contains diag(z_t). At initialisation on FSDD "
            f"its dL/dh_0 / dL/dh_31 is {_log_interval(far, part.summary, 'carried')} against a product of mean "
            f"update gates of {_log_interval(far, part.summary, 'gate_product')}: {relation}.")


# ---------------------------------------------------------------- question 3


def curve_settings(study: Study) -> dict[str, pd.DataFrame]:
    """The long curves' features by setting: ``tuned`` (each cell's own learning rate) and ``shared`` (one rate)."""
    part = study.curves
    if part.summary.empty or part.history.empty:
        return {}
    features = curve_features(part.history, part.summary)
    if features.empty:
        return {}
    cells_per_sweep = part.summary.groupby("sweep", observed=True)["cell"].nunique()
    shared = set(cells_per_sweep[cells_per_sweep >= len(TRIPLE)].index)
    features = features.assign(setting=np.where(features["sweep"].isin(shared), "shared", "tuned"))
    return {setting: frame for setting, frame in features.groupby("setting")}


def answer_curves(study: Study, figures: Sequence[str] = ()) -> list[str]:
    """Question 3."""
    lines = _figure(FIGURES[2], figures, "training loss and validation accuracy over 100 epochs")
    settings = curve_settings(study)
    if not settings:
        return lines + ["No long training curves were recorded: this question cannot be answered from these runs.",
                        ""]
    everything = pd.concat(settings.values(), ignore_index=True)
    epochs = int(everything["epochs"].max())
    lr = study.curves.summary.groupby("sweep")["lr"].first() if "lr" in study.curves.summary else pd.Series()
    rules = []
    for feature in ("final", "epochs_to_90", "train_loss", "late_rise"):
        frame = everything[everything["cell"].isin(TRIPLE)]
        table_ = _speaker_rows(frame, study.curves.summary, feature)
        if table_.empty:
            continue
        fmt = _pct if feature in ("final", "late_rise") else _num
        rules.append([FEATURES[feature], *[
            _interval(*table_.set_index("cell").loc[cell, ["mean", "ci_low", "ci_high"]], fmt)
            if cell in set(table_["cell"]) else "n/a" for cell in TRIPLE]])
    lines += [f"Curves of {epochs} epochs, as in the coursework, at each cell's tuned learning rate and at one shared "
              f"rate ({', '.join(sorted({_num(v) for v in lr[lr.index.isin(everything['sweep'])]}))}). What tells "
              "them apart (both settings pooled; 95% t interval over test speakers):", ""]
    lines += table(["feature", *[cell_label(cell) for cell in TRIPLE]], rules)
    sentences = _curve_rules(everything, study)
    results = []
    for setting, frame in [*settings.items(), ("both", everything)]:
        group = ("setting",) if setting == "both" else ()
        result = blind_test(frame, group=group)
        if result["triples"]:
            results.append([setting, f"{result['correct']} of {result['triples']}",
                            _interval(result["rate"], result["ci_low"], result["ci_high"], _pct),
                            f"{result['runs_correct']} of {3 * result['triples']}", _p(result["p"])])
    if sentences:
        lines += [" ".join(sentences), ""]
    if results:
        rounds = blind_test(everything, group=("setting",))["rounds"]
        split = "; ".join(f"rules from speakers {', '.join(map(str, r['derive_folds']))} x seeds "
                          f"{', '.join(map(str, r['derive_seeds']))}, tested on speakers "
                          f"{', '.join(map(str, r['test_folds']))} x seeds {', '.join(map(str, r['test_seeds']))}"
                          for r in rounds)
        lines += ["A blind test of these rules: fitted (per cell, the mean and spread of each feature) on one half of "
                  "the speakers and seeds, then used to label each unlabelled triple of the other half (one RNN, one "
                  "LSTM, one GRU with the same test speaker and seed) by the most likely of the 6 labellings, and "
                  f"the other way round ({split}). Chance labels a triple right 1 time in 6.", ""]
        lines += table(["setting", "triples right", "rate [95% Clopper-Pearson]", "curves right",
                        "vs chance (binomial)"], results)
    coursework = _coursework_letters(everything, study)
    if coursework:
        lines += [coursework, ""]
    lines += [_limits(study, "; curves are validation accuracy per epoch on the fold's validation speaker"), ""]
    return lines


def _feature_difference(features: pd.DataFrame, study: Study, feature: str, first: str, second: str) -> dict:
    return paired_difference(_fold_series(features, study.curves.summary, feature, first),
                             _fold_series(features, study.curves.summary, feature, second))


def _curve_rules(features: pd.DataFrame, study: Study) -> list[str]:
    text = []
    final = {(a, b): _feature_difference(features, study, "final", a, b)
             for a, b in (("LSTM", "RNN_TANH"), ("GRU", "RNN_TANH"), ("GRU", "LSTM"))}
    speed = _feature_difference(features, study, "epochs_to_90", "GRU", "LSTM")
    rnn_lowest = all(final[pair]["ci_low"] > 0 for pair in (("LSTM", "RNN_TANH"), ("GRU", "RNN_TANH")))
    if rnn_lowest:
        text.append("Rule 1: the RNN's curve levels out lowest (its final level is below both gated cells' with "
                    f"paired intervals above zero: LSTM {_interval(final[('LSTM', 'RNN_TANH')]['difference'], final[('LSTM', 'RNN_TANH')]['ci_low'], final[('LSTM', 'RNN_TANH')]['ci_high'], _points)}, "
                    f"GRU {_interval(final[('GRU', 'RNN_TANH')]['difference'], final[('GRU', 'RNN_TANH')]['ci_low'], final[('GRU', 'RNN_TANH')]['ci_high'], _points)} points). "
                    "Its gradient reaches only the last frames (question 1), and on FSDD they are silence.")
    if np.isfinite(speed["ci_high"]) and speed["ci_high"] < 0:
        text.append(f"Rule 2: of the gated pair, the GRU rises sooner ({_interval(speed['difference'], speed['ci_low'], speed['ci_high'], lambda v: f'{v:+.1f}')} "
                    "epochs to 90% of its rise, GRU minus LSTM, paired over speakers). Its carry path is open from "
                    "the start and it has fewer parameters per unit; the LSTM's default forget gate (about 1/2) "
                    "loses the word's gradient until training opens it.")
    elif np.isfinite(speed["difference"]):
        text.append(f"The GRU and the LSTM do not differ clearly in speed ({_interval(speed['difference'], speed['ci_low'], speed['ci_high'], lambda v: f'{v:+.1f}')} "
                    "epochs to 90% of the rise, paired over speakers).")
    return text


def _coursework_letters(features: pd.DataFrame, study: Study) -> str | None:
    speed = _feature_difference(features, study, "epochs_to_90", "GRU", "LSTM")
    final = _feature_difference(features, study, "final", "LSTM", "RNN_TANH")
    if not (np.isfinite(final["difference"]) and np.isfinite(speed["difference"])):
        return None
    lowest = "C is the RNN" if final["ci_low"] > 0 else "C, lowest, is most plausibly the RNN (not clear here)"
    faster = ("A, the one that reaches the shared level sooner, is the GRU and B the LSTM" if speed["ci_high"] < 0
              else "which of A and B is the GRU is not settled by speed in these runs")
    return ("The coursework's figure, as its answer describes it: C levels out at a lower value and A and B reach "
            f"a similar level, A sooner. By the rules measured here, {lowest}; {faster}.")


# ---------------------------------------------------------------- question 4


def _headline_difference(study: Study, first: str, second: str, summary: pd.DataFrame | None = None) -> dict:
    """First minus second cell's test accuracy: paired over speaker folds, or Welch over seeds with one speaker."""
    summary = study.headline.summary if summary is None else summary
    if FOLD in summary.columns and summary[FOLD].nunique() > 1:
        return paired_difference(_fold_accuracy(summary, summary, first), _fold_accuracy(summary, summary, second))
    return welch_difference(summary.loc[summary["cell"] == first, "test_accuracy"],
                            summary.loc[summary["cell"] == second, "test_accuracy"])


def differences(study: Study) -> pd.DataFrame:
    """The paired test-accuracy differences question 4 rests on (one row per comparison)."""
    rows = []

    def add(condition: str, first: str, second: str, result: dict) -> None:
        if result["speakers"]:
            rows.append({"condition": condition, "first": first, "second": second, **result})

    headline = study.headline.summary
    for first, second in (("GRU", "LSTM"), ("LSTM", "RNN_TANH"), ("GRU", "RNN_RELU"), ("RNN_RELU", "RNN_TANH")):
        add("tuned, last-step readout", first, second, _headline_difference(study, first, second))
    matched = study.matched.summary
    if not matched.empty:
        for target, part in matched.groupby("param_target"):
            for first, second in (("GRU", "LSTM"), ("LSTM", "RNN_TANH")):
                add(f"about {int(target):,} parameters each", first, second,
                    _headline_difference(study, first, second, part))
    pairs = study.pairs
    if not pairs.empty:
        for option, value, condition, comparisons in (
                ("model.readout", "mean", "mean readout", (("GRU", "RNN_RELU"), ("LSTM", "RNN_TANH"))),
                ("data.delay", "64", "64 frames of silence after the word", (("GRU", "LSTM"),)),
                ("data.train_fraction", "0.25", "25% of the training clips", (("GRU", "LSTM"),)),
                ("data.train_fraction", "0.5", "50% of the training clips", (("GRU", "LSTM"),))):
            chosen = pairs[(pairs["option"] == option) & (pairs["value"].map(str) == value)]
            if chosen.empty or FOLD not in chosen:
                continue
            for first, second in comparisons:
                gap = (chosen[chosen["cell"] == first].groupby(FOLD)["test_accuracy"].mean()
                       - chosen[chosen["cell"] == second].groupby(FOLD)["test_accuracy"].mean())
                add(condition, first, second, paired_difference(
                    chosen[chosen["cell"] == first].groupby(FOLD)["test_accuracy"].mean(),
                    chosen[chosen["cell"] == second].groupby(FOLD)["test_accuracy"].mean()))
                if option == "data.train_fraction":  # does less data change the gap? (an interaction)
                    full = (_fold_accuracy(headline, headline, first) - _fold_accuracy(headline, headline, second))
                    add(f"gap at {condition} minus the gap with all clips", first, second,
                        paired_difference(gap, full))
        chrono = pairs[(pairs["option"] == "model.init") & (pairs["value"].map(str) == "chrono")
                       & (pairs["cell"] == "LSTM")]
        if not chrono.empty and FOLD in chrono:
            add("LSTM with chrono init against the tuned GRU", "GRU", "LSTM (chrono)", paired_difference(
                _fold_accuracy(headline, headline, "GRU"), chrono.groupby(FOLD)["test_accuracy"].mean()))
    return pd.DataFrame(rows)


def _verdict(row: Mapping[str, object]) -> str:
    if not np.isfinite(row["ci_low"]):
        return "not testable"
    if row["ci_low"] > 0:
        return f"{cell_label(str(row['first']))} better"
    if row["ci_high"] < 0:
        return f"{cell_label(str(row['second']))} better"
    return "no clear difference"


def answer_choice(study: Study, figures: Sequence[str] = ()) -> list[str]:
    """Question 4."""
    lines = _figure(FIGURES[3], figures, "paired test-accuracy differences between cells, by condition")
    table_ = differences(study)
    if table_.empty:
        return lines + ["No paired cell comparisons could be made from these runs.", ""]
    rows = [[row.condition, f"{cell_label(row.first)} - {cell_label(row.second)}",
             _interval(row.difference, row.ci_low, row.ci_high, _points), row.speakers, _p(row.p),
             f"**{_verdict(row._asdict())}**"] for row in table_.itertuples()]
    folds = study.speakers > 1
    test = ("a paired test of the difference (95% t interval over test speakers, each speaker's mean over its "
            "seeds)" if folds else "a Welch t test of the difference over seeds (one test speaker)")
    lines += [f"Each recommendation rests on {test}, in test accuracy points, first minus second, never on whether "
              "two intervals overlap:", ""]
    lines += table(["condition", "difference", "points", "speakers", "paired t test", "verdict"], rows)
    lines += [" ".join(_recommendations(table_, study)), ""]
    lines += [_limits(study, "; cost is measured as epochs to 90% of the curve's rise (question 3), which no "
                             "machine load changes; seconds come only from isolated benchmarks (benchmarks/)"), ""]
    return lines


def _find(table_: pd.DataFrame, condition: str, first: str, second: str) -> Mapping[str, object] | None:
    rows = table_[(table_["condition"] == condition) & (table_["first"] == first) & (table_["second"] == second)]
    return None if rows.empty else rows.iloc[0].to_dict()


def _recommendations(table_: pd.DataFrame, study: Study) -> list[str]:
    text = []
    gru_lstm = _find(table_, "tuned, last-step readout", "GRU", "LSTM")
    if gru_lstm:
        verdict = _verdict(gru_lstm)
        if verdict == "GRU better":
            text.append("Short clips read out at the last step, tuned: use the GRU; it beats the LSTM by "
                        f"{_interval(gru_lstm['difference'], gru_lstm['ci_low'], gru_lstm['ci_high'], _points)} points.")
        elif verdict == "LSTM better":
            text.append("Short clips read out at the last step, tuned: use the LSTM; it beats the GRU.")
        else:
            text.append("Between the GRU and the LSTM at their tuned settings the test finds no clear difference: "
                        "choose on cost.")
    mean = _find(table_, "mean readout", "GRU", "RNN_RELU")
    if mean and _verdict(mean) == "no clear difference":
        text.append("When every frame reaches the loss directly (a mean readout), the gated cells' advantage over a "
                    "relu RNN is not detectable: the cheaper RNN will do.")
    chrono = _find(table_, "LSTM with chrono init against the tuned GRU", "GRU", "LSTM (chrono)")
    if chrono and _verdict(chrono) == "no clear difference":
        text.append("An LSTM with chrono init is level with the GRU: the LSTM's deficit here is its default forget "
                    "gate, not its design; use chrono (or forget-bias) init whenever you use an LSTM.")
    delay = _find(table_, "64 frames of silence after the word", "GRU", "LSTM")
    if delay and _verdict(delay) == "GRU better":
        text.append("For long gaps between the evidence and the loss, the GRU is the cell that survives here.")
    for target in ("4,000", "16,000"):
        matched = _find(table_, f"about {target} parameters each", "GRU", "LSTM")
        if matched:
            text.append(f"At equal size (about {target} parameters each) the GRU-LSTM difference is "
                        f"{_interval(matched['difference'], matched['ci_low'], matched['ci_high'], _points)} points: "
                        + ("size does not explain the GRU's lead." if matched["ci_low"] > 0 else
                           "the lead is not clear at that size." if matched["ci_high"] >= 0 else
                           "at that size the LSTM is ahead."))
    settings = curve_settings(study)
    if settings:
        features = pd.concat(settings.values(), ignore_index=True)
        speed = _feature_difference(features, study, "epochs_to_90", "GRU", "LSTM")
        table_speed = _speaker_rows(features[features["cell"].isin(TRIPLE)], study.curves.summary, "epochs_to_90")
        if not table_speed.empty and np.isfinite(speed["difference"]):
            epochs = "; ".join(f"{cell_label(row.cell)} {_num(row.mean)}" for row in table_speed.itertuples())
            text.append(f"Cost, as training time to a target: epochs to 90% of the validation curve's rise: "
                        f"{epochs} (GRU minus LSTM "
                        f"{_interval(speed['difference'], speed['ci_low'], speed['ci_high'], lambda v: f'{v:+.1f}')}, "
                        "paired over speakers). An epoch's cost per cell is measured in isolation by "
                        "benchmarks/bench_models.py, not from the sweeps' shared-machine wall times.")
    change = _find(table_, "gap at 25% of the training clips minus the gap with all clips", "GRU", "LSTM")
    if change:
        verdict = ("the GRU's lead grows with less data" if change["ci_low"] > 0 else
                   "the GRU's lead shrinks with less data" if change["ci_high"] < 0 else
                   "the data cannot tell whether the gap changes with the amount of data")
        text.append("\"GRUs do better with less data\": with a quarter of the training clips the GRU-LSTM gap moves "
                    f"by {_interval(change['difference'], change['ci_low'], change['ci_high'], _points)} points "
                    f"(paired over {change['speakers']} speakers, {_p(change['p'])}): {verdict}.")
    return text


# ---------------------------------------------------------------- the answers' figures


def carry_frame(study: Study) -> pd.DataFrame:
    """Question 2's figure data: geometric-mean ratios by distance for LSTM inits and the tanh RNN."""
    parts = []
    headline = study.headline.summary
    sources = [("LSTM, default init", headline[headline["cell"] == "LSTM"][["sweep", "run_id"]])]
    for init in ("forget_bias", "chrono"):
        sources.append((f"LSTM, {init} init", _runs_where(study, cell="LSTM", dataset="fsdd", init=init,
                                                            readout="last", pad="end", delay=0)))
    for label, runs in sources:
        part = study.data.select(runs)
        if part.gradients.empty or part.gates.empty:
            continue
        profile = carry_profile(part.gradients, part.gates, part.summary)
        if profile.empty:
            continue
        for column, quantity in (("carried", "dL/dc"), ("hidden", "dL/dh"), ("gate_product", "forget-gate product")):
            means = profile.groupby("distance")[column].apply(lambda v: float(np.exp(np.log(v[v > 0]).mean())))
            parts.append(pd.DataFrame({"label": label, "quantity": quantity, "distance": means.index,
                                       "value": means.to_numpy()}))
    tanh = study.data.select(headline[headline["cell"] == "RNN_TANH"][["sweep", "run_id"]])
    if not tanh.gradients.empty:
        chosen = tanh.gradients[(tanh.gradients["step"] == 0) & (tanh.gradients["layer"] == 0)
                                & (tanh.gradients["direction"] == "forward") & (tanh.gradients["state"] == "h")]
        if not chosen.empty:
            last = chosen["timestep"].max()
            ratios = chosen.assign(distance=last - chosen["timestep"], value=chosen["ratio_to_last"])
            means = ratios.groupby("distance")["value"].apply(lambda v: float(np.exp(np.log(v[v > 0]).mean())))
            parts.append(pd.DataFrame({"label": "RNN tanh", "quantity": "dL/dh", "distance": means.index,
                                       "value": means.to_numpy()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def curve_frame(study: Study) -> pd.DataFrame:
    """Question 3's figure data: per setting, cell and epoch, the mean over speakers of loss and accuracy."""
    settings = curve_settings(study)
    part = study.curves
    if not settings or part.history.empty:
        return pd.DataFrame()
    setting_of = pd.concat(settings.values())[["sweep", "run_id", "setting"]]
    parts = []
    for metric, split in (("accuracy", "validation"), ("loss", "train")):
        rows = epoch_accuracy(part.history) if metric == "accuracy" else (
            part.history[(part.history["split"] == "train") & (part.history["metric"] == "loss")
                         & (part.history["step"] > 0)]
            .groupby(["sweep", "run_id", "cell", "seed", "epoch"], observed=True)["value"].mean().reset_index())
        rows = rows.merge(setting_of, on=["sweep", "run_id"]).merge(
            part.summary[["sweep", "run_id", *([FOLD] if FOLD in part.summary else [])]], on=["sweep", "run_id"])
        if FOLD not in rows:
            rows[FOLD] = "single"
        folds = rows.groupby(["setting", "cell", "epoch", FOLD], observed=True)["value"].mean().reset_index()
        for key, values in folds.groupby(["setting", "cell", "epoch"], observed=True):
            mean, low, high = t_interval(values["value"])
            parts.append({"setting": key[0], "cell": key[1], "epoch": key[2], "metric": metric,
                          "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(parts)


def answer_figures(study: Study) -> list[tuple[str, Callable[[], object]]]:
    """(file stem, draw) of each answer's figure the data allows."""
    from gradlab.analysis.plots.answers import (
        plot_answer_curves,
        plot_carry_paths,
        plot_decay_by_activation,
        plot_differences,
    )

    return [(FIGURES[0], lambda: plot_decay_by_activation(decay_table(study))),
            (FIGURES[1], lambda: plot_carry_paths(carry_frame(study))),
            (FIGURES[2], lambda: plot_answer_curves(curve_frame(study))),
            (FIGURES[3], lambda: plot_differences(differences(study)))]


def answers(study: Study, figures: Sequence[str] = ()) -> list[str]:
    """``## Answers``: the four questions, each heading stating its question, each led by its figure."""
    lines = ["## Answers", ""]
    builders = (answer_vanishing, answer_lstm, answer_curves, answer_choice)
    for number, (question, build) in enumerate(zip(QUESTIONS, builders), start=1):
        lines += [f"### {number}. {question}", "", *build(study, figures)]
    return lines
