"""Figures of gradient flow: norms by timestep, heatmaps, Jacobian norms, vanishing against length.

Gradient norms are averaged in log space, so the thick lines are geometric
means over seeds; bands are t intervals of that mean (log10 units), and every
seed is drawn thin underneath.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Patch

from gradlab.analysis.plots.common import (
    REFERENCE,
    band,
    facets,
    interval_handles,
    legend,
    new_figure,
    require,
    seed_lines,
    stage_title,
)
from gradlab.analysis.stats import (
    interval_label,
    length_fit,
    log10,
    log_gradient_profile,
    select_stages,
    summarise,
)
from gradlab.analysis.style import (
    STAGES,
    STATE_LINESTYLES,
    cell_colour,
    cell_label,
    cell_order,
    state_label,
)

#: Colour of cells whose value underflowed to exactly 0 (no log exists); outside viridis.
UNDERFLOW_COLOUR = "#D55E00"


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
    fig: Figure | SubFigure | None,
) -> Figure | SubFigure:
    """Grid of log-scale lines: rows are (layer, direction), columns training stages."""
    staged = select_stages(frame)
    staged = staged[staged["stage"].isin(stages)]
    require(staged, value)
    by = ["cell", "stage", "layer", "direction", x] + (["state"] if states else [])
    if x != "timestep" and "timestep" in staged.columns:
        staged = staged.drop(columns="timestep")
    stats = log_gradient_profile(staged, value=value, by=by, confidence=confidence)
    stage_list = [stage for stage in stages if stage in set(stats["stage"].astype(str))]
    panel_keys = facets(stats)
    show_direction = any(direction != "forward" for _, direction in panel_keys)
    fig = new_figure(fig, len(stage_list), len(panel_keys))
    axes = fig.subplots(len(panel_keys), len(stage_list), squeeze=False, sharex=True, sharey=True)
    for row, (layer, direction) in enumerate(panel_keys):
        for col, stage in enumerate(stage_list):
            ax = axes[row, col]
            where = (stats["layer"] == layer) & (stats["direction"] == direction) & (stats["stage"] == stage)
            panel = stats[where]
            raw = staged[(staged["layer"] == layer) & (staged["direction"] == direction) & (staged["stage"] == stage)]
            seed_lines(ax, raw, x, value, states=states)
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
                    band(ax, xs, line, colour, log=True)
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            if row == 0:
                ax.set_title(stage_title(staged, stage), fontsize="medium")
            if row == len(panel_keys) - 1:
                ax.set_xlabel(x_label)
            if col == 0:
                where_text = f"layer {layer}" + (f", {direction}" if show_direction else "")
                ax.set_ylabel(f"{y_label}\n({where_text})")
    legend(fig, interval_handles(confidence))
    return fig


def plot_gradient_profile(
    gradients: pd.DataFrame,
    *,
    value: str = "grad_norm",
    stages: Sequence[str] = STAGES,
    confidence: float = 0.95,
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Gradient norm (log scale) against timestep, per cell: geometric mean, t band, thin seeds.

    Columns are training stages (see :func:`gradlab.analysis.stats.stage_steps`),
    rows are layers (and directions of a bidirectional model). The LSTM's cell
    state c_t is drawn dashed beside its h_t in the same panel.

    Args:
        gradients: a gradients table (one configuration; seeds are pooled).
        value: ``grad_norm`` or ``grad_norm_per_sample``.
        stages: which stages to show, in order.
        confidence: of the band.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    require(gradients, "gradient")
    return _log_lines_by_stage(
        gradients, value=value, x="timestep", x_label="timestep t (input frame)",
        y_label="gradient norm |dL/dh_t|", states=True, stages=stages, confidence=confidence, fig=fig,
    )


def plot_gradient_heatmap(
    gradients: pd.DataFrame,
    *,
    value: str = "ratio_to_last",
    layer: int = 0,
    direction: str = "forward",
    state: str = "h",
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Heatmap of log10 ratio to the last timestep over training step x timestep, one panel per cell.

    The ratio to the last timestep removes the loss's own scale, so colours
    show only how much of the gradient survives the way back. Values are means
    of log10 over seeds; a cell where some seed's value underflowed to exactly
    0 has no logarithm and gets its own colour, named in the legend.

    Args:
        gradients: a gradients table.
        value: ``ratio_to_last`` (default), ``grad_norm`` or ``grad_norm_per_sample``.
        layer, direction, state: which recorded state to show.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    where = (gradients["layer"] == layer) & (gradients["direction"] == direction) & (gradients["state"] == state)
    chosen = gradients[where]
    require(chosen, f"gradient (layer {layer}, {direction}, state {state})")
    logged = chosen.assign(log10_value=log10(chosen[value].astype("float64")))
    means = logged.groupby(["cell", "step", "timestep"], observed=True)["log10_value"].mean().reset_index()
    finite = means["log10_value"].replace([np.inf, -np.inf], np.nan)
    vmin, vmax = float(finite.min()), float(finite.max())
    cells = cell_order(means["cell"])
    fig = new_figure(fig, len(cells), 1)
    axes = fig.subplots(1, len(cells), squeeze=False, sharey=False)[0]
    mesh, underflow = None, False
    for ax, cell in zip(axes, cells):
        grid = means[means["cell"] == cell].pivot(index="step", columns="timestep", values="log10_value")
        values = grid.to_numpy()
        timesteps = grid.columns.to_numpy()
        # Rows are recorded steps in order; they need not be evenly spaced.
        rows = np.arange(len(grid.index) + 1) - 0.5
        columns = np.append(timesteps - 0.5, timesteps[-1] + 0.5)
        mesh = ax.pcolormesh(columns, rows, np.ma.masked_invalid(values), cmap="viridis", vmin=vmin, vmax=vmax,
                             shading="flat")
        lost = values == -np.inf
        if lost.any():
            underflow = True
            ax.pcolormesh(columns, rows, np.ma.masked_where(~lost, np.ones_like(values)),
                          cmap=ListedColormap([UNDERFLOW_COLOUR]), shading="flat")
        ticks = np.unique(np.linspace(0, len(grid.index) - 1, min(len(grid.index), 6)).round().astype(int))
        ax.set_yticks(ticks, [str(grid.index[tick]) for tick in ticks])
        ax.set_title(cell_label(cell), color=cell_colour(cell), fontsize="medium")
        ax.set_xlabel("timestep t (input frame)")
    axes[0].set_ylabel("training step (optimiser updates)")
    name = f"|dL/d{state}_t| / |dL/d{state}_last|" if value == "ratio_to_last" else f"{value} of {state}_t"
    fig.colorbar(mesh, ax=list(axes), label=f"log10 {name}\nlayer {layer}, {direction}, seed mean")
    if underflow:
        fig.legend(handles=[Patch(facecolor=UNDERFLOW_COLOUR, label="underflowed to 0 in a seed (no log10)")],
                   loc="outside lower center", frameon=False, fontsize="small")
    return fig


def plot_jacobian_norm(
    jacobian: pd.DataFrame,
    *,
    stages: Sequence[str] = STAGES,
    confidence: float = 0.95,
    fig: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Spectral norm of d h_last / d h_t (log scale) against the distance T - t, per cell.

    Columns are training stages, rows layers (and directions). A dotted line
    marks norm 1: below it the Jacobian product shrinks gradients.

    Args:
        jacobian: a jacobian table.
        stages: which stages to show, in order.
        confidence: of the band.
        fig: optional Figure or SubFigure to draw into.

    Returns:
        The figure.
    """
    require(jacobian, "jacobian")
    fig = _log_lines_by_stage(
        jacobian, value="spectral_norm", x="distance", x_label="distance T - t (steps back)",
        y_label="spectral norm |dh_last/dh_t|", states=False, stages=stages, confidence=confidence, fig=fig,
    )
    for ax in fig.axes:
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1, label=REFERENCE)
    return fig


def _when(ratios: pd.DataFrame) -> str:
    steps = sorted(set(ratios["step"])) if "step" in ratios.columns else [0]
    if steps == [0]:
        return "at initialisation"
    return f"at step {steps[0]}" if len(steps) == 1 else f"at steps {steps[0]}-{steps[-1]}"


def plot_vanishing_vs_length(
    ratios: pd.DataFrame,
    *,
    confidence: float = 0.95,
    ax: Axes | None = None,
) -> Figure | SubFigure:
    """First-to-last gradient ratio (log scale) against sequence length T, one line per cell, with its fit.

    The title says when the ratios were measured ("at initialisation" for step
    0). A dashed line per cell is the least-squares fit of log10 ratio on T
    (:func:`gradlab.analysis.stats.length_fit`); its slope, in decades per
    timestep, is in the legend. Lengths where some seed underflowed to 0 are
    marked on the floor.

    Args:
        ratios: columns ``cell``, ``seed``, ``seq_len``, ``ratio`` (and ``step``),
            as made by :func:`gradlab.analysis.stats.first_to_last_ratio`.
        confidence: of the band (over seeds, on the geometric mean).
        ax: optional Axes to draw into.

    Returns:
        The figure holding the axes.
    """
    require(ratios, "ratio")
    logged = ratios.assign(log10_ratio=log10(ratios["ratio"].astype("float64")))
    stats = summarise(logged, "log10_ratio", ["cell", "seq_len"], confidence=confidence)
    fits = length_fit(ratios).set_index("cell")
    if ax is None:
        ax = Figure(figsize=(5.5, 3.4), layout="constrained").subplots()
    # A ratio that underflowed to exactly 0 in some seed has a geometric mean of 0,
    # which a log axis cannot show: mark those lengths on the floor instead.
    finite = stats[np.isfinite(stats["mean"])]
    fitted = [fit["intercept"] + fit["slope"] * length for cell, fit in fits.iterrows()
              for length in stats.loc[stats["cell"] == cell, "seq_len"]]
    if finite.empty:
        floor = 1e-300
    else:  # a tenth of the plotted decades below the lowest point or fitted line, so markers never touch them
        low, high = min([finite["mean"].min(), *fitted]), max(finite["mean"].max(), 0.0)
        floor = 10.0 ** (low - max(1.0, 0.1 * (high - low)))
    for cell in cell_order(stats["cell"]):
        line = stats[stats["cell"] == cell].sort_values("seq_len")
        shown = line[np.isfinite(line["mean"])]
        xs = shown["seq_len"].to_numpy()
        colour = cell_colour(cell)
        ax.plot(xs, 10.0 ** shown["mean"].to_numpy(), color=colour, marker="o", markersize=4, label=cell_label(cell))
        band(ax, xs, shown.assign(ci_low=shown["ci_low"].clip(lower=np.log10(floor))), colour, log=True)
        if cell in fits.index:
            fit = fits.loc[cell]
            lengths = np.array([line["seq_len"].min(), line["seq_len"].max()], dtype=float)
            ax.plot(lengths, 10.0 ** (fit["intercept"] + fit["slope"] * lengths), color=colour, linestyle="--",
                    linewidth=1, label=f"_{cell_label(cell)} fit")
            ax.plot([], [], color=colour, linestyle="--", linewidth=1,
                    label=f"fit: {fit['slope']:.3g} decades/step ({cell_label(cell)})")
        lost = line[line["mean"] == -np.inf]["seq_len"].to_numpy()
        if len(lost):
            ax.plot(lost, np.full(len(lost), floor), linestyle="none", marker="v", markersize=6,
                    markerfacecolor="none", color=colour, label=f"_{cell_label(cell)} underflow")
    if (stats["mean"] == -np.inf).any():
        # An empty proxy: it names the floor markers in the legend, carries no data.
        ax.plot([], [], linestyle="none", marker="v", markerfacecolor="none", color="grey",
                label="underflowed to 0 in a seed")
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=1, label=REFERENCE)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T (input frames)")
    ax.set_ylabel("first-to-last ratio\n|dL/dh_0| / |dL/dh_T-1|")
    ax.set_title(f"Gradient ratio {_when(ratios)}", fontsize="medium")
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles += interval_handles(confidence, seeds=False)
    labels += [f"band: {interval_label(confidence)}"]
    ax.legend(handles, labels, frameon=False, fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return ax.figure
