"""The four figures that lead the findings' answers, one per question.

Pure: each takes the frame its answer computes and returns a Figure. Error
bars are 95% t intervals over test speakers (each speaker's mean over its
seeds) unless the frame says otherwise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gradlab.analysis.plots.common import PANEL_HEIGHT, PANEL_WIDTH, require
from gradlab.analysis.style import cell_colour, cell_label

SPEAKER_BARS = "bars: 95% t interval over test speakers"


def _errors(frame: pd.DataFrame, prefix: str) -> np.ndarray:
    mean = frame[prefix].to_numpy(dtype=float)
    low = frame.get(f"{prefix}_low", pd.Series(np.nan, index=frame.index)).to_numpy(dtype=float)
    high = frame.get(f"{prefix}_high", pd.Series(np.nan, index=frame.index)).to_numpy(dtype=float)
    return np.nan_to_num(np.vstack([mean - low, high - mean]), nan=0.0)


def plot_decay_by_activation(decay: pd.DataFrame) -> Figure:
    """Per RNN activation: measured per-step gradient factor at init and late, and the init prediction.

    Args:
        decay: :func:`gradlab.analysis.report.answers.decay_table`.
    """
    require(decay, "decay")
    fig = Figure(figsize=(PANEL_WIDTH * 2 + 1.2, PANEL_HEIGHT + 0.6), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(decay))
    for offset, column, label, marker in ((-0.2, "decay_init", "measured at init", "o"),
                                          (0.0, "predicted", "predicted at init (gain x rms f')", "x"),
                                          (0.2, "decay_late", "measured late in training", "s")):
        if column not in decay.columns:
            continue
        ax.errorbar(x + offset, decay[column], yerr=_errors(decay, column), fmt=marker, capsize=3, label=label)
    ax.set_xticks(x, [("IRNN" if cell == "IRNN" else cell_label(cell)) for cell in decay["cell"]])
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylabel("gradient norm factor per step")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Per-step decay of dL/dh_t (top layer); {SPEAKER_BARS}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_carry_paths(profiles: pd.DataFrame) -> Figure:
    """Gradient ratio to the last step by distance from the loss, one line per (label, quantity).

    Args:
        profiles: columns ``label`` (e.g. "LSTM, chrono init"), ``quantity``
            (``dL/dc``, ``dL/dh`` or ``forget-gate product``), ``distance`` and
            ``value`` (geometric mean over runs).
    """
    require(profiles, "carry profile")
    fig = Figure(figsize=(PANEL_WIDTH * 2 + 1.2, PANEL_HEIGHT + 0.8), layout="constrained")
    ax = fig.add_subplot()
    styles = {"dL/dc": "-", "dL/dh": "-.", "forget-gate product": ":"}
    labels = list(dict.fromkeys(profiles["label"]))
    colours = {label: f"C{index}" for index, label in enumerate(labels)}
    for (label, quantity), part in profiles.groupby(["label", "quantity"], sort=False):
        part = part.sort_values("distance")
        ax.plot(part["distance"], part["value"], linestyle=styles.get(quantity, "-"), color=colours[label],
                label=f"{label}: {quantity}")
    ax.set_yscale("log")
    ax.set_xlabel("steps before the loss (distance)")
    ax.set_ylabel("ratio to the last step's gradient")
    ax.set_title("At initialisation, FSDD (geometric mean over runs)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left", ncols=2)
    return fig


def plot_answer_curves(curves: pd.DataFrame) -> Figure:
    """Training loss and validation accuracy by epoch, per cell and setting (mean over speakers).

    Args:
        curves: columns ``setting``, ``cell``, ``metric`` (``loss`` or
            ``accuracy``), ``epoch``, ``mean``, ``ci_low`` and ``ci_high``.
    """
    require(curves, "curve")
    settings = list(dict.fromkeys(curves["setting"]))
    fig = Figure(figsize=(PANEL_WIDTH * len(settings) + 1.2, PANEL_HEIGHT * 2 + 0.4), layout="constrained")
    axes = fig.subplots(2, len(settings), squeeze=False, sharex=True)
    for column, setting in enumerate(settings):
        for row, (metric, title) in enumerate((("loss", "training loss"), ("accuracy", "validation accuracy"))):
            ax = axes[row, column]
            part = curves[(curves["setting"] == setting) & (curves["metric"] == metric)]
            for cell, lines in part.groupby("cell", sort=False):
                lines = lines.sort_values("epoch")
                ax.plot(lines["epoch"], lines["mean"], color=cell_colour(cell), label=cell_label(cell))
                ax.fill_between(lines["epoch"], lines["ci_low"], lines["ci_high"], color=cell_colour(cell),
                                alpha=0.2, linewidth=0)
            ax.set_title(f"{title}, {setting} learning rate", fontsize=9)
            if row == 1:
                ax.set_xlabel("epoch")
    axes[1, 0].legend(fontsize=8)
    fig.suptitle(f"Mean over test speakers; bands: {SPEAKER_BARS[6:]}", fontsize=9)
    return fig


def plot_differences(differences: pd.DataFrame) -> Figure:
    """A forest plot of paired test-accuracy differences (points), one row per comparison."""
    require(differences, "difference")
    fig = Figure(figsize=(PANEL_WIDTH * 2 + 2.5, 0.3 * len(differences) + 1.0), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(differences))[::-1]
    mean = 100 * differences["difference"].to_numpy(dtype=float)
    low = 100 * differences["ci_low"].to_numpy(dtype=float)
    high = 100 * differences["ci_high"].to_numpy(dtype=float)
    ax.errorbar(mean, y, xerr=np.nan_to_num(np.vstack([mean - low, high - mean]), nan=0.0), fmt="o", capsize=3)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(y, [f"{row.condition}: {cell_label(row.first)} - {cell_label(row.second)}"
                      for row in differences.itertuples()], fontsize=7)
    ax.set_xlabel("test accuracy difference (points)")
    ax.set_title(f"Paired over test speakers; {SPEAKER_BARS}", fontsize=9)
    return fig
