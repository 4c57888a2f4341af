"""Analysis of saved gradlab runs: loading, statistics across seeds, figures, findings.

Depends only on pandas, numpy, matplotlib and :mod:`gradlab.schema`, never on
torch, so results can be analysed on any machine.

Typical use::

    from gradlab.analysis import load_runs, plot_gradient_profile
    data = load_runs("runs/coursework")
    fig = plot_gradient_profile(data.gradients)
"""

from gradlab.analysis.load import RunData, RunsDirError, find_sweeps, load_runs
from gradlab.analysis.plots import (
    data_lines,
    plot_gate_statistics,
    plot_gradient_heatmap,
    plot_gradient_profile,
    plot_jacobian_norm,
    plot_learning_curves,
    plot_test_accuracy,
    plot_vanishing_vs_length,
)
from gradlab.analysis.stats import (
    accuracy_table,
    bootstrap_ci,
    config_groups,
    first_to_last_ratio,
    log_gradient_profile,
    select_stages,
    stage_steps,
    summarise,
)
from gradlab.analysis.style import cell_colour, cell_label, cell_order

__all__ = [
    "RunData",
    "RunsDirError",
    "accuracy_table",
    "bootstrap_ci",
    "cell_colour",
    "cell_label",
    "cell_order",
    "config_groups",
    "data_lines",
    "find_sweeps",
    "first_to_last_ratio",
    "load_runs",
    "log_gradient_profile",
    "plot_gate_statistics",
    "plot_gradient_heatmap",
    "plot_gradient_profile",
    "plot_jacobian_norm",
    "plot_learning_curves",
    "plot_test_accuracy",
    "plot_vanishing_vs_length",
    "select_stages",
    "stage_steps",
    "summarise",
]
