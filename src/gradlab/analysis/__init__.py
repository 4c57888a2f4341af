"""Analysis of saved gradlab runs: loading, statistics across seeds, comparisons, figures, findings.

Depends only on pandas, numpy, scipy, matplotlib, seaborn and
:mod:`gradlab.store.schema`, never on torch, so results can be analysed on any machine.

Typical use::

    from gradlab.analysis import load_runs, plot_gradient_profile
    data = load_runs("runs/compare_cells-fsdd")            # summary and gradients; tables="all" for every table
    fig = plot_gradient_profile(data.gradients)
"""

from gradlab.analysis.aggregate import (
    accuracy_aggregate,
    interquartile_mean,
    iqm_interval,
)
from gradlab.analysis.compare import Comparison, compare, decide, holm, seed_association
from gradlab.analysis.learning import (
    beats_chance,
    chance_level,
    learning_table,
    most_accurate,
    run_learning,
    select_by_validation,
    selected_runs,
)
from gradlab.analysis.load import (
    ALL_TABLES,
    DamagedRunWarning,
    RunData,
    RunsDirError,
    TableNotLoadedError,
    find_sweeps,
    load_runs,
)
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
    config_groups,
    first_to_last_ratio,
    interval_label,
    length_fit,
    log_gradient_profile,
    mean_interval,
    select_stages,
    stage_steps,
    summarise,
)
from gradlab.analysis.style import cell_colour, cell_label, cell_order

__all__ = [
    "ALL_TABLES",
    "Comparison",
    "DamagedRunWarning",
    "RunData",
    "RunsDirError",
    "TableNotLoadedError",
    "accuracy_aggregate",
    "accuracy_table",
    "beats_chance",
    "cell_colour",
    "cell_label",
    "cell_order",
    "chance_level",
    "compare",
    "config_groups",
    "data_lines",
    "decide",
    "find_sweeps",
    "first_to_last_ratio",
    "holm",
    "interquartile_mean",
    "interval_label",
    "iqm_interval",
    "learning_table",
    "length_fit",
    "load_runs",
    "log_gradient_profile",
    "mean_interval",
    "most_accurate",
    "plot_gate_statistics",
    "plot_gradient_heatmap",
    "plot_gradient_profile",
    "plot_jacobian_norm",
    "plot_learning_curves",
    "plot_test_accuracy",
    "plot_vanishing_vs_length",
    "run_learning",
    "seed_association",
    "select_by_validation",
    "select_stages",
    "selected_runs",
    "stage_steps",
    "summarise",
]
