"""Shared pieces of gradlab's pure plot functions: figure sizes, bands, seed lines, legends.

Plot functions never save, show or touch pyplot's global state: figures are
built with :class:`matplotlib.figure.Figure` directly, so they work under any
backend and in parallel tests. Bands are Student t intervals of the mean over
seeds (:func:`gradlab.analysis.stats.mean_interval`), and every legend says so;
each seed is drawn as a thin line under the mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from gradlab.analysis.stats import interval_label
from gradlab.analysis.style import STAGE_TITLES, cell_colour

# Panel size in inches: four panels across fit a two-column paper page.
PANEL_WIDTH = 3.0
PANEL_HEIGHT = 2.4
BAND_ALPHA = 0.2
SEED_ALPHA = 0.35
SEED_WIDTH = 0.6
#: Label prefix of reference lines and per-seed lines, hidden from legends and line counts.
REFERENCE = "_reference"
SEED = "_seed"
CHANCE_COLOUR = "grey"


def new_figure(fig: Figure | SubFigure | None, ncols: int, nrows: int) -> Figure | SubFigure:
    if fig is not None:
        return fig
    return Figure(figsize=(PANEL_WIDTH * ncols + 1.6, PANEL_HEIGHT * nrows + 0.3), layout="constrained")


def require(frame: pd.DataFrame, what: str) -> None:
    if frame.empty:
        raise ValueError(f"no {what} rows to plot")


def band(ax: Axes, x: np.ndarray, stats: pd.DataFrame, colour: str, *, log: bool, scale: float = 1.0) -> None:
    """Shade the t interval of ``stats`` (columns ``ci_low``, ``ci_high``); NaN bounds leave gaps."""
    low, high = stats["ci_low"].to_numpy(dtype=float), stats["ci_high"].to_numpy(dtype=float)
    if log:
        low, high = 10.0**low, 10.0**high
    ax.fill_between(x, low * scale, high * scale, color=colour, alpha=BAND_ALPHA, linewidth=0)


def seed_lines(ax: Axes, frame: pd.DataFrame, x: str, y: str, *, scale: float = 1.0, states: bool = False) -> None:
    """One thin line per run in its cell's colour, under the means: one seaborn ``lineplot`` with ``units=``.

    ``states`` draws the LSTM cell state's seeds dashed, as its mean line is.
    """
    import seaborn as sns  # imported here: loading gradlab.analysis stays light

    if frame.empty:
        return
    # One unit per run (and state): integer group codes, as a row-wise string join cost seconds on long tables.
    keys = [key for key in ("sweep", "run_id") if key in frame.columns] + (["state"] if states else [])
    units = (frame.groupby(keys, sort=False, observed=True, dropna=False).ngroup() if keys
             else pd.Series(0, index=frame.index))
    data = pd.DataFrame({
        x: frame[x].to_numpy(),
        "value": frame[y].to_numpy(dtype=float) * scale,
        "cell": frame["cell"].astype(str).to_numpy(),
        "unit": units.to_numpy(),
        "state": frame["state"].astype(str).to_numpy() if states else "h",
    })
    before = len(ax.lines)
    palette = {cell: cell_colour(cell) for cell in data["cell"].unique()}
    style = {"style": "state", "dashes": {"h": "", "c": (4, 2)}} if states and data["state"].nunique() > 1 else {}
    sns.lineplot(data=data, x=x, y="value", hue="cell", palette=palette, units="unit", estimator=None,
                 linewidth=SEED_WIDTH, alpha=SEED_ALPHA, ax=ax, legend=False, sort=True, **style)
    for line in ax.lines[before:]:
        line.set_label(SEED)
    ax.set_ylabel("")
    ax.set_xlabel("")


def chance_line(ax: Axes, chance: float | None, *, scale: float = 100.0) -> None:
    if chance is not None and np.isfinite(chance):
        line = ax.axhline(chance * scale, color=CHANCE_COLOUR, linestyle="--", linewidth=1,
                          label=f"chance ({chance * scale:.3g}%)")
        line.set_gid(REFERENCE)  # named in the legend, but not data


def stage_title(staged: pd.DataFrame, stage: str) -> str:
    steps = sorted(staged.loc[staged["stage"] == stage, "step"].unique())
    where = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"
    return f"{STAGE_TITLES[stage]} ({where})"


def facets(frame: pd.DataFrame) -> list[tuple[int, str]]:
    pairs = frame[["layer", "direction"]].drop_duplicates()
    return sorted(((int(layer), str(direction)) for layer, direction in pairs.itertuples(index=False)),
                  key=lambda pair: (pair[0], pair[1] != "forward"))


def interval_handles(confidence: float, *, seeds: bool = True) -> list:
    """Legend proxies naming the band and the thin per-seed lines."""
    handles = [Patch(facecolor="grey", alpha=BAND_ALPHA, label=f"band: {interval_label(confidence)}")]
    if seeds:
        handles.append(Line2D([], [], color="grey", linewidth=SEED_WIDTH, alpha=SEED_ALPHA * 2, label="thin: one seed"))
    return handles


def legend(fig: Figure | SubFigure, extra: list | None = None) -> None:
    """One figure legend: each labelled artist once, then ``extra`` proxies."""
    handles, labels = [], []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    for handle in extra or []:
        handles.append(handle)
        labels.append(handle.get_label())
    if handles:
        fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize="small")


def data_lines(ax: Axes) -> list[Line2D]:
    """The lines of ``ax`` that carry data (legend helpers, seed and reference lines excluded)."""
    return [line for line in ax.get_lines()
            if not line.get_label().startswith("_") and line.get_gid() != REFERENCE and len(line.get_xdata())]


def seed_lines_of(ax: Axes) -> list[Line2D]:
    """The thin per-seed lines of ``ax``."""
    return [line for line in ax.get_lines() if line.get_label() == SEED]
