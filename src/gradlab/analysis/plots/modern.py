"""Figures of the modern recurrences: gradient kept over T, and parameter gradients against each unit's memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure, SubFigure

from gradlab.analysis.plots.common import legend, new_figure, require
from gradlab.analysis.stats import interval_label, summarise
from gradlab.analysis.style import cell_colour, cell_label, cell_order

#: Panel titles of the two stages the modern figures compare.
STAGE_NAMES: dict[str, str] = {"init": "at initialisation", "late": "after training"}


def plot_ratio_vs_length(ratios: pd.DataFrame, fig: Figure | SubFigure | None = None) -> Figure | SubFigure:
    """log10 first-to-last gradient ratio against T, one line per cell, a panel per stage.

    Args:
        ratios: :func:`gradlab.analysis.modern.ratios` (columns ``cell``, ``seq_len``, ``stage``, ``log_ratio``).
    """
    require(ratios, "gradient ratio")
    stats = summarise(ratios, "log_ratio", ["stage", "cell", "seq_len"])
    stages = [stage for stage in STAGE_NAMES if stage in set(stats["stage"])]
    fig = new_figure(fig, len(stages), 1)
    axes = np.atleast_1d(fig.subplots(1, len(stages), sharey=True))
    for ax, stage in zip(axes, stages):
        part = stats[stats["stage"] == stage]
        for cell in cell_order(part["cell"]):
            rows = part[part["cell"] == cell].sort_values("seq_len")
            x = rows["seq_len"].to_numpy(dtype=float)
            y = rows["mean"].to_numpy(dtype=float)
            error = np.vstack([y - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - y])
            ax.errorbar(x, y, yerr=np.nan_to_num(error), marker="o", markersize=3, capsize=2,
                        color=cell_colour(cell), label=cell_label(cell))
        ax.set_xscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_title(STAGE_NAMES[stage])
        ax.axhline(0.0, color="grey", linewidth=0.6)
    axes[0].set_ylabel("log10 |dL/dh_0| / |dL/dh_T-1|")
    fig.suptitle(f"Gradient reaching the first step (mean over seeds, {interval_label()})", fontsize="medium")
    legend(fig)
    return fig


def plot_memory_sensitivity(parameters: pd.DataFrame, fig: Figure | SubFigure | None = None) -> Figure | SubFigure:
    """Each unit's memory-parameter gradient norm against its memory, a panel per cell, init and trained.

    Args:
        parameters: a ``parameter_gradients`` table; rows without a ``memory`` (classic cells) are left out,
            and each cell's first memory parameter (layer 0, forward) is drawn at each run's first and last
            recorded step.
    """
    chosen = parameters[parameters["memory"].notna() & (parameters["layer"] == 0)
                        & (parameters["direction"] == "forward") & (parameters["grad_norm"] > 0)]
    require(chosen, "parameter-gradient")
    chosen = chosen.assign(cell=chosen["cell"].astype(str), parameter=chosen["parameter"].astype(str))
    cells = cell_order(chosen["cell"])
    fig = new_figure(fig, len(cells), 1)
    axes = np.atleast_1d(fig.subplots(1, len(cells)))
    markers = {"init": ("o", "tab:grey"), "late": ("^", None)}
    for ax, cell in zip(axes, cells):
        part = chosen[chosen["cell"] == cell]
        parameter = part["parameter"].iloc[0]
        part = part[part["parameter"] == parameter]
        keys = ["sweep", "run_id"] if "sweep" in part.columns else ["run_id"]
        first = part.groupby(keys, observed=True)["step"].transform("min")
        last = part.groupby(keys, observed=True)["step"].transform("max")
        for stage, at in (("init", part[part["step"] == first]), ("late", part[part["step"] == last])):
            marker, colour = markers[stage]
            ax.scatter(at["memory"], at["grad_norm"], s=6, marker=marker, alpha=0.5,
                       color=colour or cell_colour(cell), label=STAGE_NAMES[stage])
        ax.set_yscale("log")
        ax.set_xlabel("unit memory (|lambda|, |u| or mean retention)")
        ax.set_title(f"{cell_label(cell)}: dL/d {parameter}")
    axes[0].set_ylabel("per-unit gradient norm")
    fig.suptitle("Curse of memory: each point is one unit of one run (layer 0)", fontsize="medium")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    return fig
