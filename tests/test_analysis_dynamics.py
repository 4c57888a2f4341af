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


def test_dead_units_do_not_flatten_the_other_spectra():
    frame = pd.DataFrame(_lyapunov("a", "RNN_RELU", 0, [0], -0.1) + _lyapunov("b", "LSTM", 0, [0], -0.2))
    frame.loc[(frame["cell"] == "RNN_RELU") & (frame["index"] == 2), "exponent"] = -150.0  # a dead relu unit
    fig = plot_lyapunov_spectra(spectrum_stages(frame))
    relu, lstm = ([ax for ax in fig.axes if ax.get_title() == title][0] for title in ("RNN relu", "LSTM"))
    assert relu.get_ylim()[0] == -10.0 and "1 exponents < -10 (dead units) not shown" in relu.texts[0].get_text()
    assert lstm.get_ylim()[0] > -3.0  # its own axis, not the relu panel's


def test_the_scatter_draws_every_finite_pair_and_the_identity_line():
    pairs = pd.DataFrame({"run_id": ["a", "b", "c"], "cell": ["GRU"] * 3, "seed": [0, 1, 2], "seq_len": [10] * 3,
                          "predicted": [-0.1, -0.2, -0.3], "measured": [-0.12, -0.18, -np.inf]})
    ax = plot_exponent_vs_slope(pairs).axes[0]
    offsets = np.concatenate([collection.get_offsets() for collection in ax.collections])
    assert len(offsets) == 2  # the underflowed run has no finite slope
    assert any("identity" in line.get_label() for line in ax.lines)


def _sweep(root, name, runs, *, select_by=None, init="default", speaker=None):
    """A sweep folder with sweep.json and each run's metrics.json (config dicts as gradlab writes them)."""
    import json

    from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    folder = root / name
    folder.mkdir(parents=True)
    configs = []
    for run_id, (readout, lr, seed, accuracy) in runs.items():
        data = DataConfig("fsdd", test_speaker=speaker) if speaker else DataConfig("distance")
        config = RunConfig(model=ModelConfig("GRU", readout=readout, init=init), data=data,
                           train=TrainConfig(lr=lr, seed=seed), run_id=run_id)
        configs.append(config.to_dict())
        (folder / run_id).mkdir()
        (folder / run_id / "config.json").write_text(json.dumps({**config.to_dict(), "layout": 2}))
        (folder / run_id / "metrics.json").write_text(json.dumps({
            "run_id": run_id, "cell": "GRU", "activation": "tanh", "seed": seed, "dataset": "distance",
            "bidirectional": "none", "readout": readout, "normalise": None, "hidden_size": 32, "num_layers": 2,
            "seq_len": 10, "status": "finished", "diverged_step": None, "best_val_accuracy": accuracy,
            "best_epoch": 1, "test_accuracy": accuracy, "final_test_accuracy": accuracy, "n_params": 1,
            "time_per_epoch": 1.0, "lr": lr}))
    (folder / "sweep.json").write_text(json.dumps({"layout": 2, "runs": configs, "select_by": select_by}))


def test_interventions_are_read_against_matched_controls_only(tmp_path):
    from gradlab.analysis import load_runs
    from gradlab.analysis.controlled import controlled_comparisons

    _sweep(tmp_path, "control", {"a0": ("last", 0.003, 0, 0.5), "a1": ("last", 0.003, 1, 0.6),
                                 "b0": ("last", 0.01, 0, 0.9)})
    _sweep(tmp_path, "mean", {"m0": ("mean", 0.003, 0, 0.8), "m1": ("mean", 0.003, 1, 0.7),
                              "m2": ("mean", 0.003, 2, 0.1)})  # seed 2 has no control: left out
    pairs = controlled_comparisons(load_runs([tmp_path / "control", tmp_path / "mean"], "all"))
    assert len(pairs) == 1
    row = pairs.iloc[0]
    assert (row["option"], row["reference"], row["value"], row["seeds"]) == ("readout", "last", "mean", 2)
    assert row["accuracy_control"] == pytest.approx(0.55) and row["accuracy"] == pytest.approx(0.75)
    assert row["difference"] == pytest.approx(0.2) and row["ci_low"] < 0.2 < row["ci_high"]


def test_an_interventions_own_schedule_options_do_not_block_its_match():
    from gradlab.analysis.controlled import COMPANIONS, INTERVENTIONS

    assert set(COMPANIONS) <= set(INTERVENTIONS)
    assert "train.floss_every" in COMPANIONS["train.floss_weight"]


def test_tuned_interventions_pair_with_tuned_controls_at_their_own_learning_rate(tmp_path):
    from gradlab.analysis import load_runs
    from gradlab.analysis.controlled import controlled_comparisons

    # Both sweeps chose their learning rate on validation (only the chosen runs are loaded): chrono at
    # 0.01, default at 0.003. Untuned sweeps would not pair across learning rates (test above).
    _sweep(tmp_path, "default", {"d0": ("last", 0.003, 0, 0.5), "d1": ("last", 0.003, 1, 0.6)},
           select_by="validation")
    _sweep(tmp_path, "chrono", {"c0": ("last", 0.01, 0, 0.8), "c1": ("last", 0.01, 1, 0.9)},
           select_by="validation", init="chrono")
    _sweep(tmp_path, "chrono-untuned", {"u0": ("last", 0.01, 0, 0.7)}, init="chrono")
    rows = controlled_comparisons(load_runs(list(tmp_path.iterdir()), "all"))
    assert rows["sweep"].tolist() == ["chrono"]
    assert rows.iloc[0]["seeds"] == 2 and rows.iloc[0]["difference"] == pytest.approx(0.3)


def test_interventions_are_paired_by_speaker_fold(tmp_path):
    from scipy import stats

    from gradlab.analysis import load_runs
    from gradlab.analysis.controlled import matched_pairs
    from gradlab.analysis.folds import paired_effects

    accuracy = {"george": (0.5, 0.7), "theo": (0.8, 0.85), "lucas": (0.6, 0.9)}  # control, mean readout
    for speaker, (control, treated) in accuracy.items():
        _sweep(tmp_path, f"last-{speaker}", {f"l{speaker}{s}": ("last", 0.003, s, control + s / 100)
                                            for s in range(2)}, speaker=speaker)
        _sweep(tmp_path, f"mean-{speaker}", {f"m{speaker}{s}": ("mean", 0.003, s, treated + s / 100)
                                            for s in range(2)}, speaker=speaker)
    pairs = matched_pairs(load_runs(list(tmp_path.iterdir()), "all"))
    assert len(pairs) == 6 and set(pairs["test_speaker"]) == set(accuracy)
    assert (pairs["run_id"].str[1:] == pairs["run_id_control"].str[1:]).all()  # same fold and seed
    effect = paired_effects(pairs).iloc[0]
    differences = [treated - control for control, treated in accuracy.values()]
    assert effect["unit"] == "speaker" and effect["n"] == 3 and effect["pairs"] == 6
    assert effect["difference"] == pytest.approx(np.mean(differences))
    low, high = stats.t.interval(0.95, 2, loc=np.mean(differences), scale=stats.sem(differences))
    assert (effect["ci_low"], effect["ci_high"]) == pytest.approx((low, high))
