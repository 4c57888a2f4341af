"""The data behind each answer's figure, and the figures to draw."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from gradlab.analysis.carry import carry_profile
from gradlab.analysis.folds import (
    FOLD,
    t_interval,
)
from gradlab.analysis.learning import epoch_accuracy
from gradlab.analysis.report.answers.choice import differences
from gradlab.analysis.report.answers.common import (
    FIGURES,
)
from gradlab.analysis.report.answers.curves import curve_settings
from gradlab.analysis.report.answers.lstm import runs_where
from gradlab.analysis.report.answers.vanishing import decay_table
from gradlab.analysis.report.study import Study

# ---------------------------------------------------------------- the answers' figures


def carry_frame(study: Study) -> pd.DataFrame:
    """Question 2's figure data: geometric-mean ratios by distance for LSTM inits and the tanh RNN."""
    parts = []
    headline = study.headline.summary
    sources = [("LSTM, default init", headline[headline["cell"] == "LSTM"][["sweep", "run_id"]])]
    for init in ("forget_bias", "chrono"):
        sources.append((f"LSTM, {init} init", runs_where(study, cell="LSTM", dataset="fsdd", init=init,
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


def answer_figures(study: Study) -> list[tuple[str, Callable[[], object], bool]]:
    """(file stem, draw, expected) of each answer's figure.

    ``expected`` is False where the data is known not to make the figure
    (no long training curves for question 3's): its draw still runs and
    reports why, but the report is not written first as if it were drawn.
    """
    from gradlab.analysis.plots.answers import (
        plot_answer_curves,
        plot_carry_paths,
        plot_decay_by_activation,
        plot_differences,
    )

    return [(FIGURES[0], lambda: plot_decay_by_activation(decay_table(study)), True),
            (FIGURES[1], lambda: plot_carry_paths(carry_frame(study)), True),
            (FIGURES[2], lambda: plot_answer_curves(curve_frame(study)), bool(curve_settings(study))),
            (FIGURES[3], lambda: plot_differences(differences(study)), True)]
