"""Pure plot functions: each takes a long-format frame and returns a Figure.

None of them saves, shows or touches pyplot's global state: figures are built
with :class:`matplotlib.figure.Figure` directly, so they work under any backend
and in parallel tests. Multi-panel functions accept an optional ``fig`` (a
Figure or SubFigure) to draw into; single-panel ones an optional ``ax``.
Seed bands are percentile-bootstrap confidence intervals of the mean across
seeds (:func:`gradlab.analysis.stats.summarise`); gradient norms are averaged
in log space, so lines are geometric means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from gradlab.analysis.stats import log10, log_gradient_profile, select_stages, summarise
from gradlab.analysis.style import (
    STAGE_TITLES,
    STAGES,
    STATE_LINESTYLES,
    cell_colour,
    cell_label,
    cell_order,
    state_label,
)

# Panel size in inches: four panels across fit a two-column paper page.
_PANEL_WIDTH = 3.0
_PANEL_HEIGHT = 2.4
_BAND_ALPHA = 0.2
# Label of reference lines, hidden from legends and from line counts.
_REFERENCE = "_reference"

#: Gate order of each cell family, as torch lays out the weights.
GATE_ORDER: tuple[str, ...] = ("i", "f", "g", "o", "r", "z", "n", "h")
_GATE_LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
_GATE_NAMES: dict[str, str] = {
    "i": "input i",
    "f": "forget f",
    "g": "candidate g",
    "o": "output o",
    "r": "reset r",
    "z": "update z",
    "n": "candidate n",
    "h": "activation h",
}


def _new_figure(fig: Figure | SubFigure | None, ncols: int, nrows: int) -> Figure | SubFigure:
    if fig is not None:
        return fig
    return Figure(figsize=(_PANEL_WIDTH * ncols + 1.2, _PANEL_HEIGHT * nrows + 0.3), layout="constrained")


def _require(frame: pd.DataFrame, what: str) -> None:
    if frame.empty:
        raise ValueError(f"no {what} rows to plot")


def _band(ax: Axes, x: np.ndarray, stats: pd.DataFrame, colour: str, *, log: bool) -> None:
    low, high = stats["ci_low"].to_numpy(), stats["ci_high"].to_numpy()
    if log:
        low, high = 10.0**low, 10.0**high
    ax.fill_between(x, low, high, color=colour, alpha=_BAND_ALPHA, linewidth=0)


def _stage_title(staged: pd.DataFrame, stage: str) -> str:
    steps = sorted(staged.loc[staged["stage"] == stage, "step"].unique())
    where = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"
    return f"{STAGE_TITLES[stage]} ({where})"


def _facets(frame: pd.DataFrame) -> list[tuple[int, str]]:
    pairs = frame[["layer", "direction"]].drop_duplicates()
    return sorted(((int(layer), str(direction)) for layer, direction in pairs.itertuples(index=False)),
                  key=lambda pair: (pair[0], pair[1] != "forward"))


def _legend(fig: Figure | SubFigure) -> None:
    handles, labels = [], []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", frameon=False)


def _log_lines_by_stage(
    frame: pd.DataFrame,
    *,
    value: str,
    x: str,
    x_label: str,
    y_label: str,
    states: bool,
    stages: Sequence[str],
    confidence: float,
    n_resamples: int,
    seed: int,
    fig: Figure | SubFigure | None,
) -> Figure | SubFigure:
    """Grid of log-scale lines: rows are (layer, direction), columns training stages."""
    staged = select_stages(frame)
    staged = staged[staged["stage"].isin(stages)]
    _require(staged, value)
    by = ["cell", "stage", "layer", "direction", x] + (["state"] if states else [])
    if x != "timestep" and "timestep" in staged.columns:
        staged = staged.drop(columns="timestep")
    stats = log_gradient_profile(staged, value=value, by=by, confidence=confidence, n_resamples=n_resamples, seed=seed)
    stage_list = [stage for stage in stages if stage in set(stats["stage"].astype(str))]
    facets = _facets(stats)
    show_direction = any(direction != "forward" for _, direction in facets)
    fig = _new_figure(fig, len(stage_list), len(facets))
    axes = fig.subplots(len(facets), len(stage_list), squeeze=False, sharex=True, sharey=True)
    for row, (layer, direction) in enumerate(facets):
        for col, stage in enumerate(stage_list):
            ax = axes[row, col]
            panel = stats[(stats["layer"] == layer) & (stats["direction"] == direction) & (stats["stage"] == stage)]
            for cell in cell_order(panel["cell"]):
                for state in ("h", "c") if states else ("h",):
                    line = panel[panel["cell"] == cell]
                    if states:
                        line = line[line["state"] == state]
                    if line.empty:
                        continue
                    line = line.sort_values(x)
                    xs = line[x].to_numpy()
                    colour = cell_colour(cell)
                    ax.plot(xs, 10.0 ** line["mean"].to_numpy(), color=colour,
                            linestyle=STATE_LINESTYLES[state], label=state_label(cell, state))
                    _band(ax, xs, line, colour, log=True)
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            if row == 0:
                ax.set_title(_stage_title(staged, stage), fontsize="medium")
            if row == len(facets) - 1:
                ax.set_xlabel(x_label)
            if col == 0:
                where = f"layer {layer}" + (f", {direction}" if show_direction else "")
                ax.set_ylabel(f"{y_label}\n({where})")
    _legend(fig)
    return fig


def plot_gradient_profile(
    gradients: pd.DataFrame,
    *,
    value: str = "grad_norm",
    stages: Sequence[str] = STAGES,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Gradient norm (log scale) against timestep, per cell, with seed bands.

    Columns are training stages (see :func:`gradlab.analysis.stats.stage_steps`),
    rows are layers (and directions of a bidirectional model). The LSTM's cell
    state c_t is drawn dashed beside its h_t in the same panel.

    Args:
        gradients: a gradients table (one configuration; seeds are pooled).
        value: ``grad_norm`` or ``grad_norm_per_sample``.
        stages: which stages to show, in order.
        confidence, n_resamples, seed: the bootstrap band.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    _require(gradients, "gradient")
    return _log_lines_by_stage(
        gradients, value=value, x="timestep", x_label="timestep t (input frame)",
        y_label="gradient norm |dL/dh_t|", states=True, stages=stages,
        confidence=confidence, n_resamples=n_resamples, seed=seed, fig=fig,
    )


def plot_gradient_heatmap(
    gradients: pd.DataFrame,
    *,
    value: str = "grad_norm",
    layer: int = 0,
    direction: str = "forward",
    state: str = "h",
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Heatmap of log10 gradient norm over training step x timestep, one panel per cell.

    Shows how the vanishing profile changes while the network learns. Colours
    share one scale across panels; values are means of log10 over seeds.

    Args:
        gradients: a gradients table.
        value: ``grad_norm`` or ``grad_norm_per_sample``.
        layer, direction, state: which recorded state to show.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    chosen = gradients[(gradients["layer"] == layer) & (gradients["direction"] == direction) & (gradients["state"] == state)]
    _require(chosen, f"gradient (layer {layer}, {direction}, state {state})")
    logged = chosen.assign(log10_norm=log10(chosen[value].astype("float64")))
    means = logged.groupby(["cell", "step", "timestep"], observed=True)["log10_norm"].mean().reset_index()
    finite = means["log10_norm"].replace([np.inf, -np.inf], np.nan)
    vmin, vmax = float(finite.min()), float(finite.max())
    cells = cell_order(means["cell"])
    fig = _new_figure(fig, len(cells), 1)
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=False)[0]
    mesh = None
    for ax, cell in zip(axes, cells):
        grid = means[means["cell"] == cell].pivot(index="step", columns="timestep", values="log10_norm")
        timesteps = grid.columns.to_numpy()
        # Rows are recorded steps in order; they need not be evenly spaced.
        rows = np.arange(len(grid.index) + 1) - 0.5
        columns = np.append(timesteps - 0.5, timesteps[-1] + 0.5)
        mesh = ax.pcolormesh(columns, rows, grid.to_numpy(), cmap="viridis", vmin=vmin, vmax=vmax, shading="flat")
        ticks = np.unique(np.linspace(0, len(grid.index) - 1, min(len(grid.index), 6)).round().astype(int))
        ax.set_yticks(ticks, [str(grid.index[tick]) for tick in ticks])
        ax.set_title(cell_label(cell), color=cell_colour(cell), fontsize="medium")
        ax.set_xlabel("timestep t (input frame)")
    axes[0].set_ylabel("training step (optimiser updates)")
    label = f"log10 |dL/d{state}_t| (layer {layer}, {direction})"
    fig.colorbar(mesh, ax=list(axes), label=label)
    return fig


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
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Validation accuracy and training loss against epoch, one line per cell with seed bands.

    The coursework's "performance by epoch" figure, from recorded runs. Each
    epoch's validation value is the last one recorded in it; its training
    value is the mean over its recorded steps (the step-0 record is left out).

    Args:
        history: a history table.
        panels: ``(split, metric, y label, scale)`` per panel.
        confidence, n_resamples, seed: the bootstrap band.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    _require(history, "history")
    fig = _new_figure(fig, len(panels), 1)
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True)[0]
    for ax, (split, metric, label, scale) in zip(axes, panels):
        values = _epoch_values(history, split, metric)
        stats = summarise(values, "value", ["cell", "epochs"], confidence=confidence, n_resamples=n_resamples, seed=seed)
        for cell in cell_order(stats["cell"]):
            line = stats[stats["cell"] == cell].sort_values("epochs")
            xs = line["epochs"].to_numpy()
            colour = cell_colour(cell)
            ax.plot(xs, line["mean"].to_numpy() * scale, color=colour, label=cell_label(cell))
            scaled = line.assign(ci_low=line["ci_low"] * scale, ci_high=line["ci_high"] * scale)
            _band(ax, xs, scaled, colour, log=False)
        ax.set_xlabel("epochs completed")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    _legend(fig)
    return fig


#: Summary columns of the accuracy figure, their legend entries and markers.
ACCURACY_METRICS: dict[str, tuple[str, str]] = {
    "test_accuracy": ("best-validation checkpoint", "o"),
    "final_test_accuracy": ("last epoch", "s"),
}


def plot_test_accuracy(
    summary: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("test_accuracy", "final_test_accuracy"),
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    ax: Axes | None = None,
) -> Figure | SubFigure:
    """Test accuracy per cell: mean with a bootstrap confidence interval, and each seed as a dot.

    Args:
        summary: a summary table (one configuration).
        metrics: summary columns to show side by side; see :data:`ACCURACY_METRICS`.
        confidence, n_resamples, seed: the bootstrap interval.
        ax: optional Axes to draw into.

    Returns:
        The figure holding the axes.
    """
    values = summary.dropna(subset=list(metrics), how="all")
    _require(values, "summary accuracy")
    if ax is None:
        ax = Figure(figsize=(4.5, 3.0), layout="constrained").subplots()
    cells = cell_order(values["cell"])
    width = 0.5 / max(len(metrics), 1)
    for k, metric in enumerate(metrics):
        label, marker = ACCURACY_METRICS.get(metric, (metric, "D"))
        stats = summarise(values, metric, ["cell"], confidence=confidence, n_resamples=n_resamples, seed=seed)
        offset = (k - (len(metrics) - 1) / 2) * width
        for i, cell in enumerate(cells):
            row = stats[stats["cell"] == cell]
            if row.empty:
                continue
            mean, low, high = (100.0 * float(row.iloc[0][name]) for name in ("mean", "ci_low", "ci_high"))
            colour = cell_colour(cell)
            ax.errorbar(i + offset, mean, yerr=[[mean - low], [high - mean]], fmt=marker, color=colour,
                        markerfacecolor=colour if k == 0 else "white", capsize=3, label="_nolegend_")
            seeds = 100.0 * values.loc[values["cell"] == cell, metric].dropna().to_numpy()
            ax.plot(np.full(len(seeds), i + offset + width * 0.4), seeds, linestyle="none", marker=".",
                    color=colour, alpha=0.5, label="_seeds")
        ax.plot([], [], marker=marker, linestyle="none", color="black",
                markerfacecolor="black" if k == 0 else "white", label=label)
    ax.set_xticks(range(len(cells)), [cell_label(cell) for cell in cells])
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize="small", title=f"{confidence:.0%} CI over seeds", title_fontsize="small")
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
    n_resamples: int = 2000,
    seed: int = 0,
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Gate means and saturation against timestep: a column per cell, a row per statistic.

    Lines keep their cell's colour; gates are told apart by line style.

    Args:
        gates: a gates table.
        stage: training stage to show (see :func:`gradlab.analysis.stats.stage_steps`).
        layer, direction: which layer and direction to show.
        confidence, n_resamples, seed: the bootstrap band.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    chosen = gates[(gates["layer"] == layer) & (gates["direction"] == direction)]
    _require(chosen, f"gate (layer {layer}, {direction})")
    staged = select_stages(chosen)
    staged = staged[staged["stage"] == stage]
    _require(staged, f"gate ({stage})")
    stats = summarise(staged, "value", ["cell", "stat", "gate", "timestep"],
                      confidence=confidence, n_resamples=n_resamples, seed=seed)
    rows = [(stat, label) for stat, label in GATE_STATS if stat in set(stats["stat"])]
    rows += [(stat, stat) for stat in sorted(set(stats["stat"]) - {stat for stat, _ in GATE_STATS})]
    cells = cell_order(stats["cell"])
    fig = _new_figure(fig, len(cells), len(rows))
    axes = fig.subplots(len(rows), len(cells), squeeze=False, sharex=True, sharey="row")
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
                _band(ax, xs, line, colour, log=False)
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
    fig.suptitle(f"{_stage_title(staged, stage)}, layer {layer}, {direction}", fontsize="medium")
    return fig


def plot_jacobian_norm(
    jacobian: pd.DataFrame,
    *,
    stages: Sequence[str] = STAGES,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Spectral norm of d h_last / d h_t (log scale) against the distance T - t, per cell.

    Columns are training stages, rows layers (and directions). A dotted line
    marks norm 1: below it the Jacobian product shrinks gradients.

    Args:
        jacobian: a jacobian table.
        stages: which stages to show, in order.
        confidence, n_resamples, seed: the bootstrap band.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    _require(jacobian, "jacobian")
    fig = _log_lines_by_stage(
        jacobian, value="spectral_norm", x="distance", x_label="distance T - t (steps back)",
        y_label="spectral norm |dh_last/dh_t|", states=False, stages=stages,
        confidence=confidence, n_resamples=n_resamples, seed=seed, fig=fig,
    )
    for ax in fig.axes:
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1, label=_REFERENCE)
    return fig


def plot_vanishing_vs_length(
    ratios: pd.DataFrame,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    ax: Axes | None = None,
) -> Figure | SubFigure:
    """First-to-last gradient ratio (log scale) against sequence length T, one line per cell.

    Args:
        ratios: columns ``cell``, ``seed``, ``seq_len`` and ``ratio``, as made by
            :func:`gradlab.analysis.stats.first_to_last_ratio`.
        confidence, n_resamples, seed: the bootstrap band (geometric mean over seeds).
        ax: optional Axes to draw into.

    Returns:
        The figure holding the axes.
    """
    _require(ratios, "ratio")
    logged = ratios.assign(log10_ratio=log10(ratios["ratio"].astype("float64")))
    stats = summarise(logged, "log10_ratio", ["cell", "seq_len"], confidence=confidence, n_resamples=n_resamples, seed=seed)
    if ax is None:
        ax = Figure(figsize=(4.5, 3.2), layout="constrained").subplots()
    # A ratio that underflowed to exactly 0 in some seed has a geometric mean of 0,
    # which a log axis cannot show: mark those lengths on the floor instead.
    finite = stats[np.isfinite(stats["mean"])]
    if finite.empty:
        floor = 1e-300
    else:  # a tenth of the plotted decades below the lowest point, so markers never touch it
        low, high = finite["mean"].min(), max(finite["mean"].max(), 0.0)
        floor = 10.0 ** (low - max(1.0, 0.1 * (high - low)))
    for cell in cell_order(stats["cell"]):
        line = stats[stats["cell"] == cell].sort_values("seq_len")
        shown = line[np.isfinite(line["mean"])]
        xs = shown["seq_len"].to_numpy()
        colour = cell_colour(cell)
        ax.plot(xs, 10.0 ** shown["mean"].to_numpy(), color=colour, marker="o", markersize=4, label=cell_label(cell))
        _band(ax, xs, shown.assign(ci_low=shown["ci_low"].clip(lower=np.log10(floor))), colour, log=True)
        lost = line[line["mean"] == -np.inf]["seq_len"].to_numpy()
        if len(lost):
            ax.plot(lost, np.full(len(lost), floor), linestyle="none", marker="v", markersize=6,
                    markerfacecolor="none", color=colour, label=f"_{cell_label(cell)} underflow")
    if (stats["mean"] == -np.inf).any():
        # An empty proxy: it names the floor markers in the legend, carries no data.
        ax.plot([], [], linestyle="none", marker="v", markerfacecolor="none", color="grey",
                label="underflowed to 0 in a seed")
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1, label=_REFERENCE)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (input frames)")
    ax.set_ylabel("first-to-last ratio\n|dL/dh_0| / |dL/dh_T-1|")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    return ax.figure


def data_lines(ax: Axes) -> list[Line2D]:
    """The lines of ``ax`` that carry data (legend helpers and reference lines excluded)."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_") and len(line.get_xdata())]
