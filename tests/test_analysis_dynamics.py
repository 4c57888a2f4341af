"""Lyapunov exponents against gradient decay: the pairing and its units, on tables with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradlab.analysis.dynamics import agreement, exponent_vs_slope, spectrum_stages
from gradlab.analysis.plots import plot_exponent_vs_slope, plot_lyapunov_spectra


def _lyapunov(run_id, cell, seed, steps, largest):
    rows = []
    for step in steps:
        for index in range(3):
            rows.append({"sweep": "s", "run_id": run_id, "cell": cell, "activation": "tanh", "seed": seed,
                         "epoch": 0, "step": step, "layer": 0, "direction": "forward", "index": index,
                         "exponent": largest - index - 0.1 * step, "exponent_std": 0.0, "warmup": 2,
                         "timesteps": 8})
    return rows


def _gradients(run_id, cell, seed, length, decay):
    # |dL/dh_t| = 10^(decay * (T - 1 - t)) relative to the last step: the ratio first/last is 10^(-decay (T-1))
    return [{"sweep": "s", "run_id": run_id, "cell": cell, "activation": "tanh", "seed": seed, "epoch": 0, "step": 0,
             "layer": 0, "direction": "forward", "state": "h", "timestep": t,
             "grad_norm": 10.0 ** (-decay * (length - 1 - t)), "grad_norm_per_sample": 1.0,
             "ratio_to_last": 10.0 ** (-decay * (length - 1 - t))} for t in range(length)]


def test_exponents_pair_with_measured_decay_in_decades_per_step():
    lyapunov, gradients, summary = [], [], []
    for seed, (cell, largest, decay) in enumerate([("RNN_TANH", -0.7, 0.3), ("RNN_TANH", -0.7, 0.31),
                                                   ("GRU", -0.2, 0.0869)]):
        run_id = f"{cell}-s{seed}"
        lyapunov += _lyapunov(run_id, cell, seed, [0, 5], largest)
        gradients += _gradients(run_id, cell, seed, 11, decay)
        summary.append({"sweep": "s", "run_id": run_id, "cell": cell, "activation": "tanh", "seed": seed,
                        "seq_len": 11})
    pairs = exponent_vs_slope(pd.DataFrame(lyapunov), pd.DataFrame(gradients), pd.DataFrame(summary))
    pairs = pairs.set_index("run_id")
    assert pairs.loc["RNN_TANH-s0", "predicted"] == pytest.approx(-0.7 / math.log(10))
    assert pairs.loc["RNN_TANH-s0", "measured"] == pytest.approx(-0.3)
    assert pairs.loc["GRU-s2", "measured"] == pytest.approx(-0.0869)
    table = agreement(pairs.reset_index()).set_index("cell")
    assert table.loc["RNN_TANH", "seeds"] == 2 and table.loc["RNN_TANH", "underflowed"] == 0
    assert table.loc["RNN_TANH", "difference"] == pytest.approx(-0.305 + 0.7 / math.log(10))
    assert np.isnan(table.loc["GRU", "ci_low"])  # one seed: no interval


def test_spectra_keep_initialisation_and_the_last_recording():
    frame = pd.DataFrame(_lyapunov("a", "LSTM", 0, [0, 3, 9], -0.1) + _lyapunov("b", "LSTM", 1, [0], -0.2))
    stages = spectrum_stages(frame)
    assert sorted(stages.loc[stages["stage"] == "trained", "step"].unique()) == [9]
    assert len(stages[stages["stage"] == "initialisation"]) == 6
    fig = plot_lyapunov_spectra(stages)
    assert fig.axes and fig.axes[0].get_title() == "LSTM"


def test_the_scatter_draws_every_finite_pair_and_the_identity_line():
    pairs = pd.DataFrame({"run_id": ["a", "b", "c"], "cell": ["GRU"] * 3, "seed": [0, 1, 2], "seq_len": [10] * 3,
                          "predicted": [-0.1, -0.2, -0.3], "measured": [-0.12, -0.18, -np.inf]})
    ax = plot_exponent_vs_slope(pairs).axes[0]
    offsets = np.concatenate([collection.get_offsets() for collection in ax.collections])
    assert len(offsets) == 2  # the underflowed run has no finite slope
    assert any("identity" in line.get_label() for line in ax.lines)
