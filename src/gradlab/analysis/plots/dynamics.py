"""Plots of the recurrence's dynamics: Lyapunov spectra, and the largest exponent against gradient decay."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D

from gradlab.analysis.plots.common import (
    PANEL_HEIGHT,
    PANEL_WIDTH,
    REFERENCE,
    SEED_ALPHA,
    SEED_WIDTH,
    new_figure,
    require,
)
from gradlab.analysis.stats import interval_label, mean_interval
from gradlab.analysis.style import cell_colour, cell_label, cell_order

STAGE_STYLES = {"initialisation": "--", "trained": "-"}


def _t_interval(values: pd.Series) -> tuple[float, float]:
    """seaborn's errorbar as gradlab's Student t interval of the mean (not its bootstrap)."""
    return mean_interval(values.to_numpy()) if len(values) > 1 else (float("nan"), float("nan"))


#: Lower y limit of a spectrum panel (ln per step): a unit whose perturbation shrinks by e^-10 in
#: one step is dead (a relu unit that never turns on), not slowly forgetting.
DEAD_UNIT_FLOOR = -10.0


def plot_lyapunov_spectra(spectra: pd.DataFrame, *, fig: Figure | SubFigure | None = None) -> Figure | SubFigure:
    """Each cell's Lyapunov spectrum (first layer) at initialisation and after training, one panel per cell.

    Thin lines are seeds; the thick line is the mean over seeds with its
    95% t interval as a band (seaborn). Exponents below 0 (the dotted line)
    shrink state perturbations, and gradients, at that rate per step. Each
    panel has its own y axis, cut at :data:`DEAD_UNIT_FLOOR`: dead relu units
    give exponents near -150 that would flatten every other spectrum; the
    panel says how many lie below.

    Args:
        spectra: rows of a lyapunov table with a ``stage`` column
            (:func:`gradlab.analysis.dynamics.spectrum_stages`).
        fig: optional Figure or SubFigure to draw into.
    """
    require(spectra, "Lyapunov")
    cells = cell_order(spectra["cell"].unique())
    fig = new_figure(fig, len(cells), 1)
    axes = np.atleast_1d(fig.subplots(1, len(cells), squeeze=False)).ravel()
    for ax, cell in zip(axes, cells):
        part = spectra[spectra["cell"] == cell]
        for stage, style in STAGE_STYLES.items():
            staged = part[part["stage"] == stage]
            if staged.empty:
                continue
            sns.lineplot(data=staged, x="index", y="exponent", units="run_id", estimator=None, ax=ax,
                         color=cell_colour(cell), linestyle=style, linewidth=SEED_WIDTH, alpha=SEED_ALPHA,
                         legend=False)
            sns.lineplot(data=staged, x="index", y="exponent", ax=ax, color=cell_colour(cell), linestyle=style,
                         errorbar=_t_interval, err_style="band", legend=False, estimator="mean",
                         label=stage)
        ax.axhline(0.0, color="grey", linestyle=":", linewidth=0.8, label=REFERENCE)
        exponents = part["exponent"].to_numpy(dtype=float)
        below = int((exponents < DEAD_UNIT_FLOOR).sum())
        if below:
            kept = exponents[exponents >= DEAD_UNIT_FLOOR]
            top = max(float(kept.max()) if len(kept) else 0.0, 0.0)
            ax.set_ylim(DEAD_UNIT_FLOOR, top + 0.05 * (top - DEAD_UNIT_FLOOR))
            ax.text(0.98, 0.02, f"{below} exponents < {DEAD_UNIT_FLOOR:g} (dead units) not shown",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
        ax.set_title(cell_label(cell))
        ax.set_xlabel("exponent index (0 = largest)")
    axes[0].set_ylabel("exponent (ln per step)")
    handles = [Line2D([], [], color="black", linestyle=style, label=stage) for stage, style in STAGE_STYLES.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False,
               title=f"thin: seeds; thick: mean over seeds (band: {interval_label()})")
    return fig


def plot_exponent_vs_slope(pairs: pd.DataFrame, *, ax: Axes | None = None) -> Figure | SubFigure:
    """The largest Lyapunov exponent (predicted decay) against the gradient's measured decay, run by run.

    Both in decades per step at initialisation: lambda_1 / ln 10 against
    log10(first-to-last ratio) / (T - 1). Points on the identity line agree.

    Args:
        pairs: from :func:`gradlab.analysis.dynamics.exponent_vs_slope`.
        ax: optional Axes to draw into.
    """
    require(pairs, "exponent and slope")
    finite = pairs[np.isfinite(pairs["measured"]) & np.isfinite(pairs["predicted"])]
    if ax is None:
        ax = Figure(figsize=(PANEL_WIDTH * 2.4, PANEL_HEIGHT * 1.6), layout="constrained").subplots()
    markers = dict(zip(sorted(finite["seq_len"].unique()), "os^Dv<>"))
    for cell in cell_order(finite["cell"].unique()):
        for length, marker in markers.items():
            part = finite[(finite["cell"] == cell) & (finite["seq_len"] == length)]
            ax.scatter(part["measured"], part["predicted"], s=14, marker=marker, color=cell_colour(cell),
                       alpha=0.7, label=f"{cell_label(cell)}, T={length}")
    low = min(finite["measured"].min(), finite["predicted"].min())
    high = max(finite["measured"].max(), finite["predicted"].max())
    margin = 0.05 * (high - low or 1.0)
    ax.plot([low - margin, high + margin], [low - margin, high + margin], color="grey", linestyle="--",
            linewidth=0.8, label="identity (prediction = measurement)")
    ax.set_xlabel("measured: log10(first-to-last ratio) / (T - 1)")
    ax.set_ylabel(f"predicted: largest exponent / ln 10 (= / {math.log(10):.3f})")
    ax.set_title("gradient decay per step at initialisation")
    ax.legend(fontsize="x-small", frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax.figure
