"""Pure plot functions: each takes a long-format frame and returns a Figure.

None of them saves, shows or touches pyplot's global state. Multi-panel
functions accept an optional ``fig`` (a Figure or SubFigure) to draw into;
single-panel ones an optional ``ax``. Bands and error bars are Student t
intervals of the mean over seeds, and the legend says so.
"""

from gradlab.analysis.plots.common import data_lines, seed_lines_of
from gradlab.analysis.plots.dynamics import plot_exponent_vs_slope, plot_lyapunov_spectra
from gradlab.analysis.plots.gradients import (
    plot_gradient_heatmap,
    plot_gradient_profile,
    plot_jacobian_norm,
    plot_vanishing_vs_length,
)
from gradlab.analysis.plots.learning import (
    plot_gate_statistics,
    plot_learning_curves,
    plot_test_accuracy,
)

__all__ = [
    "data_lines",
    "plot_exponent_vs_slope",
    "plot_gate_statistics",
    "plot_gradient_heatmap",
    "plot_gradient_profile",
    "plot_jacobian_norm",
    "plot_learning_curves",
    "plot_lyapunov_spectra",
    "plot_test_accuracy",
    "plot_vanishing_vs_length",
    "seed_lines_of",
]
