"""Plot functions on tiny hand-built frames: panels, lines, log axes, labels."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from analysis_helpers import CELLS, FACTOR, all_frames
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from gradlab.analysis import (
    cell_colour,
    cell_order,
    data_lines,
    first_to_last_ratio,
    plot_gate_statistics,
    plot_gradient_heatmap,
    plot_gradient_profile,
    plot_jacobian_norm,
    plot_learning_curves,
    plot_test_accuracy,
    plot_vanishing_vs_length,
)
from gradlab.analysis.plots import seed_lines_of
from gradlab.analysis.plots.gradients import UNDERFLOW_COLOUR
from gradlab.analysis.style import CELL_COLOURS


@pytest.fixture(scope="module")
def frames():
    return all_frames(seeds=(0, 1))


def panels(fig):
    """Data axes of a figure (colour bars excluded)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_no_global_pyplot_state(frames):
    before = plt.get_fignums()
    fig = plot_gradient_profile(frames["gradients"])
    assert isinstance(fig, Figure) and plt.get_fignums() == before


def test_gradient_profile_panels_and_lines(frames):
    fig = plot_gradient_profile(frames["gradients"])
    axes = panels(fig)
    assert len(axes) == 3  # one layer x (init, early, late)
    assert [ax.get_title().split(" (")[0] for ax in axes] == ["at initialisation", "early in training", "late in training"]
    for ax in axes:
        assert ax.get_yscale() == "log"
        # One line per cell plus the LSTM's dashed c_t.
        lines = data_lines(ax)
        assert len(lines) == 5
        dashed = [line for line in lines if line.get_linestyle() == "--"]
        assert [line.get_label() for line in dashed] == ["LSTM c_t"]
        assert dashed[0].get_color() == cell_colour("LSTM")
        # Every run's own line under the means: 2 seeds x (4 cells + the LSTM's c_t).
        assert len(seed_lines_of(ax)) == 2 * 5
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "band: 95% t interval over seeds" in legend and "thin: one seed" in legend
    assert "timestep" in axes[0].get_xlabel() and "gradient norm" in axes[0].get_ylabel()
    # The tanh line at init is the geometric mean over seeds of the known profile.
    tanh = next(line for line in data_lines(axes[0]) if line.get_label() == "RNN tanh")
    expected = 0.1 * np.sqrt(1.0 * 1.1) * FACTOR[("RNN_TANH", "h")] ** (5 - np.arange(6))
    assert tanh.get_ydata() == pytest.approx(expected)


def test_gradient_profile_facets_layers(frames):
    two_layers = all_frames(cells=("GRU", "LSTM"), seeds=(0,), num_layers=2)["gradients"]
    fig = plot_gradient_profile(two_layers, stages=("init", "late"))
    assert len(panels(fig)) == 4
    assert "layer 1" in panels(fig)[2].get_ylabel()


def test_gradient_heatmap_one_panel_per_cell(frames):
    fig = plot_gradient_heatmap(frames["gradients"])
    axes = [ax for ax in panels(fig) if any(isinstance(c, QuadMesh) for c in ax.collections)]
    assert [ax.get_title() for ax in axes] == ["RNN tanh", "RNN relu", "LSTM", "GRU"]
    mesh = axes[0].collections[0]
    assert mesh.get_array().shape == (4, 6)  # recorded steps x timesteps
    # log10 of the ratio to the last timestep: 0 at the last step, (T - 1 - t) log10(factor) before it.
    assert np.asarray(mesh.get_array())[0] == pytest.approx(np.log10(FACTOR[("RNN_TANH", "h")]) * (5 - np.arange(6)))
    assert "log10 |dL/dh_t| / |dL/dh_last|" in fig.axes[-1].get_ylabel()
    assert not fig.legends  # nothing underflowed
    assert len(fig.axes) == 5  # plus one shared colour bar
    assert "training step" in axes[0].get_ylabel()


def test_gradient_heatmap_shows_underflow_in_its_own_colour(frames):
    gradients = frames["gradients"].copy()
    lost = (gradients["cell"] == "RNN_TANH") & (gradients["timestep"] == 0) & (gradients["seed"] == 1)
    gradients.loc[lost, "ratio_to_last"] = 0.0
    fig = plot_gradient_heatmap(gradients)
    tanh = panels(fig)[0]
    underflow = tanh.collections[1]
    assert tuple(underflow.get_cmap().colors) == (UNDERFLOW_COLOUR,)
    # Exactly the timestep-0 column is painted, in every recorded step; the main mesh leaves it blank.
    assert (~underflow.get_array().mask).sum() == 4 and tanh.collections[0].get_array().mask[:, 0].all()
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["underflowed to 0 in a seed (no log10)"]


def test_learning_curves(frames):
    fig = plot_learning_curves(frames["history"], chance=0.1)
    accuracy, loss = panels(fig)
    assert accuracy.get_ylabel() == "validation accuracy (%)" and "loss" in loss.get_ylabel()
    assert len(seed_lines_of(accuracy)) == 2 * len(CELLS)
    chance = [line for line in accuracy.get_lines() if line.get_label().startswith("chance")]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [10.0, 10.0]
    assert not [line for line in loss.get_lines() if line.get_label().startswith("chance")]
    assert len(data_lines(accuracy)) == len(CELLS) == len(data_lines(loss))
    gru = next(line for line in data_lines(accuracy) if line.get_label() == "GRU")
    # Epochs 1..3; mean over seeds 0, 1 of 0.9 * epochs / 3 + 0.01 * seed, in percent.
    assert list(gru.get_xdata()) == [1, 2, 3]
    assert gru.get_ydata() == pytest.approx([30.5, 60.5, 90.5])
    tanh_loss = next(line for line in data_lines(loss) if line.get_label() == "RNN tanh")
    assert tanh_loss.get_ydata() == pytest.approx([1.05, 0.55, 1 / 3 + 0.05])


def test_test_accuracy_intervals(frames):
    fig = plot_test_accuracy(frames["summary"])
    (ax,) = fig.axes
    assert len(ax.containers) == 2 * len(CELLS)  # two metrics per cell
    assert [t.get_text() for t in ax.get_xticklabels()] == ["RNN tanh", "RNN relu", "LSTM", "GRU"]
    assert ax.get_ylabel() == "test accuracy (%)"
    first = ax.containers[0].lines[0]
    assert first.get_ydata()[0] == pytest.approx(40.5)
    assert ax.get_legend().get_title().get_text() == "error bars: 95% t interval over seeds"
    # Chance from the summary's num_classes (10 classes).
    assert "chance (10%)" in [text.get_text() for text in ax.get_legend().get_texts()]


def test_test_accuracy_draws_into_given_axes(frames):
    fig = Figure()
    ax = fig.subplots()
    assert plot_test_accuracy(frames["summary"], metrics=("test_accuracy",), ax=ax) is fig


def test_gate_statistics(frames):
    fig = plot_gate_statistics(frames["gates"])
    axes = np.array(panels(fig)).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == ["RNN tanh", "RNN relu", "LSTM", "GRU"]
    assert [len(data_lines(ax)) for ax in axes[1]] == [1, 1, 4, 3]
    assert axes[1, 0].get_ylabel() == "fraction of units saturated"
    assert {line.get_color() for line in data_lines(axes[0, 2])} == {cell_colour("LSTM")}


def test_jacobian_norm(frames):
    fig = plot_jacobian_norm(frames["jacobian"], stages=("init", "late"))
    axes = panels(fig)
    assert len(axes) == 2
    for ax in axes:
        assert ax.get_yscale() == "log" and len(data_lines(ax)) == len(CELLS)
    assert "distance" in axes[0].get_xlabel()
    gru = next(line for line in data_lines(axes[0]) if line.get_label() == "GRU")
    assert gru.get_ydata() == pytest.approx(0.9 ** gru.get_xdata())


def test_vanishing_vs_length():
    gradients = [all_frames(cells=("RNN_TANH", "LSTM"), seeds=(0, 1), seq_len=T)["gradients"] for T in (3, 5, 8)]
    ratios = pd.concat([first_to_last_ratio(frame) for frame in gradients], ignore_index=True)
    fig = plot_vanishing_vs_length(ratios)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and "sequence length" in ax.get_xlabel()
    lines = {line.get_label(): line for line in data_lines(ax)}
    assert sorted(lines) == ["LSTM", "RNN tanh"]
    assert list(lines["RNN tanh"].get_xdata()) == [3, 5, 8]
    assert lines["RNN tanh"].get_ydata() == pytest.approx([0.5**2, 0.5**4, 0.5**7])
    assert ax.get_title() == "Gradient ratio at initialisation"
    # The fitted slope is drawn (dashed) and named: log10(0.5) decades per step.
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert f"fit: {np.log10(0.5):.3g} decades/step (RNN tanh)" in legend
    fit = next(line for line in ax.get_lines() if line.get_label() == "_RNN tanh fit")
    assert fit.get_ydata() == pytest.approx([0.5**2, 0.5**7])
    assert "band: 95% t interval over seeds" in legend


def test_vanishing_vs_length_marks_underflow_on_the_floor():
    ratios = pd.DataFrame({
        "cell": ["RNN_TANH"] * 4 + ["LSTM"] * 4,
        "seed": [0, 1] * 4,
        "seq_len": [10, 10, 20, 20] * 2,
        "ratio": [1e-3, 1e-3, 0.0, 1e-6, 1e-2, 1e-2, 1e-4, 1e-4],
    })
    (ax,) = plot_vanishing_vs_length(ratios).axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    # The tanh RNN's T = 20 holds a 0 in one seed: no point on its line, a marker on the floor below every point.
    assert list(lines["RNN tanh"].get_xdata()) == [10]
    floor = lines["_RNN tanh underflow"]
    assert list(floor.get_xdata()) == [20] and floor.get_ydata()[0] < 1e-4
    assert list(lines["LSTM"].get_xdata()) == [10, 20]
    assert "underflowed to 0 in a seed" in [text.get_text() for text in ax.get_legend().get_texts()]


def test_empty_frames_raise(frames):
    with pytest.raises(ValueError, match="no"):
        plot_gradient_profile(frames["gradients"].iloc[:0])
    with pytest.raises(ValueError, match="no"):
        plot_jacobian_norm(frames["jacobian"].iloc[:0])


def test_cell_colours_fixed_and_distinct():
    assert len(set(CELL_COLOURS.values())) == len(CELL_COLOURS)
    # A cell without a fixed colour gets the same one in every interpreter (str hashes are salted per process).
    colour = cell_colour("RNN_ELU")
    assert colour not in CELL_COLOURS.values()
    script = "from gradlab.analysis.style import cell_colour; print(cell_colour('RNN_ELU'))"
    for hash_seed in ("1", "2"):
        printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONHASHSEED": hash_seed}).stdout.strip()
        assert printed == colour
    assert cell_order(["GRU", "RNN_ELU", "LSTM", "RNN_RELU", "RNN_TANH"]) == ["RNN_TANH", "RNN_RELU", "RNN_ELU", "LSTM", "GRU"]
