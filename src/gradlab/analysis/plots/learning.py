"""Figures of learning: curves by epoch, test accuracy per cell, gate statistics.

Accuracy plots carry a dashed chance line; every band or error bar is a t
interval of the mean over seeds, named in the legend, and the seeds
themselves are drawn (thin lines, dots).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import MaxNLocator

from gradlab.analysis.learning import chance_level
from gradlab.analysis.plots.common import (
    band,
    chance_line,
    interval_handles,
    legend,
    new_figure,
    require,
    seed_lines,
    stage_title,
)
from gradlab.analysis.stats import interval_label, select_stages, summarise
from gradlab.analysis.style import cell_colour, cell_label, cell_order

#: Gate order of each cell family, as torch lays out the weights.
GATE_ORDER: tuple[str, ...] = ("i", "f", "g", "o", "r", "z", "n", "h")
_GATE_LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
_GATE_NAMES: dict[str, str] = {
    "i": "input i", "f": "forget f", "g": "candidate g", "o": "output o",
    "r": "reset r", "z": "update z", "n": "candidate n", "h": "activation h",
}


def _epoch_values(history: pd.DataFrame, split: str, metric: str) -> pd.DataFrame:
    """One value per run and epoch: the last validation record, the mean training record."""
    rows = history[(history["split"] == split) & (history["metric"] == metric)]
    keys = ["sweep", "run_id"] if "sweep" in rows.columns else ["run_id"]
    if rows.empty:
        return rows.assign(epochs=pd.Series(dtype="int64"))
    # The step-0 record is the model before training; it would blur epoch 0.
    trained = rows[rows["step"] > 0]
    rows = trained if not trained.empty else rows
    group = rows.sort_values("step").groupby([*keys, "cell", "seed", "epoch"], observed=True)["value"]
    values = (group.last() if split != "train" else group.mean()).reset_index()
    return values.assign(epochs=values["epoch"] + 1)


#: Panels of the learning-curve figure: (split, metric, y label, scale to display units).
LEARNING_CURVE_PANELS: tuple[tuple[str, str, str, float], ...] = (
    ("validation", "accuracy", "validation accuracy (%)", 100.0),
    ("train", "loss", "training loss (nats)", 1.0),
)


def plot_learning_curves(
    history: pd.DataFrame,
    *,
    panels: Sequence[tuple[str, str, str, float]] = LEARNING_CURVE_PANELS,
    chance: float | None = None,
    confidence: float = 0.95,
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Validation accuracy and training loss against epoch: each seed thin, the mean thick, a t band.

    Thin lines show what a mean hides: seeds that solve the task and seeds
    that stay at chance. Each epoch's validation value is the last one
    recorded in it; its training value is the mean over its recorded steps.

    Args:
        history: a history table.
        panels: ``(split, metric, y label, scale)`` per panel.
        chance: chance accuracy (a fraction), drawn dashed on accuracy panels.
        confidence: of the band.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    require(history, "history")
    fig = new_figure(fig, len(panels), 1)
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True)[0]
    for ax, (split, metric, label, scale) in zip(axes, panels):
        values = _epoch_values(history, split, metric)
        stats = summarise(values, "value", ["cell", "epochs"], confidence=confidence)
        seed_lines(ax, values, "epochs", "value", scale=scale)
        for cell in cell_order(stats["cell"]):
            line = stats[stats["cell"] == cell].sort_values("epochs")
            xs = line["epochs"].to_numpy()
            colour = cell_colour(cell)
            ax.plot(xs, line["mean"].to_numpy() * scale, color=colour, label=cell_label(cell))
            band(ax, xs, line, colour, log=False, scale=scale)
        if metric == "accuracy":
            chance_line(ax, chance, scale=scale)
        ax.set_xlabel("epochs completed")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    legend(fig, interval_handles(confidence))
    return fig


#: Summary columns of the accuracy figure, their legend entries and markers.
ACCURACY_METRICS: dict[str, tuple[str, str]] = {
    "test_accuracy": ("best-validation checkpoint", "o"),
    "final_test_accuracy": ("last epoch", "s"),
}


def _chance_of(summary: pd.DataFrame) -> float | None:
    levels = chance_level(summary).dropna().unique()
    return float(levels[0]) if len(levels) == 1 else None


def plot_test_accuracy(
    summary: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("test_accuracy", "final_test_accuracy"),
    chance: float | None = None,
    confidence: float = 0.95,
    ax: Axes | None = None,
) -> Figure | SubFigure:
    """Test accuracy per cell: mean with a t interval over seeds, each seed as a dot, and chance.

    Args:
        summary: a summary table (one configuration).
        metrics: summary columns to show side by side; see :data:`ACCURACY_METRICS`.
        chance: chance accuracy; by default from the summary (``num_classes`` or the dataset).
        confidence: of the interval.
        ax: optional Axes to draw into.

    Returns:
        The figure holding the axes.
    """
    values = summary.dropna(subset=list(metrics), how="all")
    require(values, "summary accuracy")
    if ax is None:
        ax = Figure(figsize=(6.5, 3.0), layout="constrained").subplots()
    chance = _chance_of(values) if chance is None else chance
    cells = cell_order(values["cell"])
    width = 0.5 / max(len(metrics), 1)
    for k, metric in enumerate(metrics):
        label, marker = ACCURACY_METRICS.get(metric, (metric, "D"))
        stats = summarise(values, metric, ["cell"], confidence=confidence)
        offset = (k - (len(metrics) - 1) / 2) * width
        for i, cell in enumerate(cells):
            row = stats[stats["cell"] == cell]
            if row.empty:
                continue
            mean, low, high = (100.0 * float(row.iloc[0][name]) for name in ("mean", "ci_low", "ci_high"))
            colour = cell_colour(cell)
            error = [[mean - low], [high - mean]] if np.isfinite(low) else None
            ax.errorbar(i + offset, mean, yerr=error, fmt=marker, color=colour,
                        markerfacecolor=colour if k == 0 else "white", capsize=3, label="_nolegend_")
            seeds = 100.0 * values.loc[values["cell"] == cell, metric].dropna().to_numpy()
            ax.plot(np.full(len(seeds), i + offset + width * 0.4), seeds, linestyle="none", marker=".",
                    color=colour, alpha=0.5, label="_seeds")
        ax.plot([], [], marker=marker, linestyle="none", color="black",
                markerfacecolor="black" if k == 0 else "white", label=label)
    ax.plot([], [], marker=".", linestyle="none", color="grey", label="one seed")
    chance_line(ax, chance)
    ax.set_xticks(range(len(cells)), [cell_label(cell) for cell in cells])
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize="small", title=f"error bars: {interval_label(confidence)}",
              title_fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax.figure


#: Rows of the gate figure: (stat, y label).
GATE_STATS: tuple[tuple[str, str], ...] = (
    ("mean", "mean gate activation"),
    ("saturated", "fraction of units saturated"),
)


def plot_gate_statistics(
    gates: pd.DataFrame,
    *,
    stage: str = "late",
    layer: int = 0,
    direction: str = "forward",
    confidence: float = 0.95,
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Gate means and saturation against timestep: a column per cell, a row per statistic.

    Lines keep their cell's colour; gates are told apart by line style.

    Args:
        gates: a gates table.
        stage: training stage to show (see :func:`gradlab.analysis.stats.stage_steps`).
        layer, direction: which layer and direction to show.
        confidence: of the band.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    chosen = gates[(gates["layer"] == layer) & (gates["direction"] == direction)]
    require(chosen, f"gate (layer {layer}, {direction})")
    staged = select_stages(chosen)
    staged = staged[staged["stage"] == stage]
    require(staged, f"gate ({stage})")
    stats = summarise(staged, "value", ["cell", "stat", "gate", "timestep"], confidence=confidence)
    rows = [(stat, label) for stat, label in GATE_STATS if stat in set(stats["stat"])]
    rows += [(stat, stat) for stat in sorted(set(stats["stat"]) - {stat for stat, _ in GATE_STATS})]
    cells = cell_order(stats["cell"])
    fig = new_figure(fig, len(cells), len(rows))
    # Each panel its own y axis: a relu RNN's h (0-15) must not flatten gates that live in [0, 1].
    axes = fig.subplots(len(rows), len(cells), squeeze=False, sharex=True)
    for r, (stat, label) in enumerate(rows):
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            panel = stats[(stats["cell"] == cell) & (stats["stat"] == stat)]
            present = set(panel["gate"])
            gates_here = [gate for gate in GATE_ORDER if gate in present] + sorted(present - set(GATE_ORDER))
            for k, gate in enumerate(gates_here):
                line = panel[panel["gate"] == gate].sort_values("timestep")
                xs = line["timestep"].to_numpy()
                colour = cell_colour(cell)
                ax.plot(xs, line["mean"].to_numpy(), color=colour, label=_GATE_NAMES.get(gate, gate),
                        linestyle=_GATE_LINESTYLES[k % len(_GATE_LINESTYLES)])
                band(ax, xs, line, colour, log=False)
            if stat == "saturated":
                ax.set_ylim(-0.02, 1.02)
            ax.grid(True, alpha=0.3)
            if r == 0:
                ax.set_title(cell_label(cell), color=cell_colour(cell), fontsize="medium")
                ax.legend(frameon=False, fontsize="small")
            if r == len(rows) - 1:
                ax.set_xlabel("timestep t (input frame)")
            if c == 0:
                ax.set_ylabel(label)
    fig.suptitle(f"{stage_title(staged, stage)}, layer {layer}, {direction}; bands: {interval_label(confidence)}",
                 fontsize="medium")
    return fig
