"""--record-parameters in runs (table parameter_gradients), resume, and the modern cells' init options."""

from __future__ import annotations

import inspect
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from train_helpers import InterruptAfterEpoch, load_script

from gradlab.analysis import load_runs
from gradlab.cli import option_values
from gradlab.config import CELL_OPTIONS, DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.config.cell_options import CELL_DEFAULTS
from gradlab.data.from_config import load_data
from gradlab.nn.lru import LRUCell
from gradlab.nn.modern import DiagonalCell, IndRNNCell
from gradlab.store import schema
from gradlab.training import build_model, train_run
from gradlab.training.checkpoint_rows import RowsFiles
from gradlab.training.ensemble.grouping import ensemble_blocker
from gradlab.training.table_rows import combine, decode_frame


def tiny(mode: str, **train) -> RunConfig:
    options = {"epochs": 2, "batch_size": 8, "lr": 1e-2, "record_every": 2, "diagnostics": False,
               "record_parameters": True, "dtype": "float64", **train}
    return RunConfig(model=ModelConfig(mode, hidden_size=4, num_layers=2),
                     data=DataConfig("distance", seq_len=12, n_train=24, n_validation=8, n_test=8),
                     train=TrainConfig(**options), run_id=f"{mode}-s0")


def final_model(config: RunConfig, run_dir):
    """The run's last weights (its last epoch checkpoint), and its data."""
    data = load_data(config.data)
    model = build_model(config, data).double()
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"])
    return model, data


def test_rows_come_on_the_gradient_steps_and_equal_autograd_at_the_final_step(tmp_path):
    config = tiny("DIAGONAL")
    result = train_run(config, run_dir=tmp_path / "run")
    table = result.parameter_gradients
    assert list(table.columns[: len(schema.PARAMETER_GRADIENTS)]) == list(schema.PARAMETER_GRADIENTS)
    assert sorted(table["step"].unique()) == sorted(result.gradients["step"].unique()) == [0, 2, 4, 6]
    assert len(table) == 4 * 2 * 4  # steps x layers x units
    # The final step: the last weights' gradient on the unshuffled first batch, computed here by autograd.
    model, data = final_model(config, tmp_path / "run")
    x, y = data.train.x[:8].double(), data.train.y[:8]
    cells = [model.rnn.cell(layer, "forward") for layer in range(2)]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), [cell.weight_hh for cell in cells])
    last = table[table["step"] == 6].sort_values(["layer", "unit"])
    assert last["grad_norm"].to_numpy() == pytest.approx(torch.cat(grads).abs().numpy(), rel=1e-9)
    assert last["memory"].to_numpy() == pytest.approx(torch.cat([c.weight_hh.detach().abs() for c in cells]).numpy())
    # On disk and through the analysis loader.
    loaded = load_runs([tmp_path], tables=("summary", "parameter_gradients")).parameter_gradients
    assert len(loaded) == len(table) and loaded["grad_norm"].sum() == pytest.approx(table["grad_norm"].sum())


def test_mingru_memory_is_the_mean_retention_on_the_recorded_batch(tmp_path):
    config = tiny("MINGRU")
    result = train_run(config, run_dir=tmp_path / "run")
    model, data = final_model(config, tmp_path / "run")
    cell = model.rnn.cell(0, "forward")
    x = data.train.x[:8].double()
    k_z = x @ cell.weight_ih[: cell.hidden_size].T + cell.bias_ih[: cell.hidden_size]  # (B, T, H)
    retention = (1 - torch.sigmoid(k_z)).mean(dim=(0, 1)).detach()
    table = result.parameter_gradients
    last = table[(table["step"] == table["step"].max()) & (table["layer"] == 0)].sort_values("unit")
    assert set(last["parameter"]) == {"z"}
    assert last["memory"].to_numpy() == pytest.approx(retention.numpy(), rel=1e-9)
    assert table["memory"].between(0, 1).all()


def test_lru_memory_is_the_eigenvalue_modulus_inside_the_init_ring(tmp_path):
    config = RunConfig(model=ModelConfig("LRU", hidden_size=6, num_layers=1, lru_r_min=0.9, lru_r_max=0.95),
                       data=tiny("LRU").data, train=tiny("LRU", epochs=1).train)
    table = train_run(config).parameter_gradients
    at_init = table[table["step"] == 0]
    assert set(at_init["parameter"]) == {"nu_log", "theta_log"}
    assert at_init["memory"].between(0.9, 0.95).all()


def test_recording_parameters_changes_no_other_table_and_classic_cells_have_no_memory(tmp_path):
    plain = train_run(tiny("LSTM", record_parameters=False))
    recorded = train_run(tiny("LSTM"))
    pd.testing.assert_frame_equal(plain.gradients, recorded.gradients)
    pd.testing.assert_frame_equal(plain.history.drop(columns="wall_time"), recorded.history.drop(columns="wall_time"))
    assert plain.parameter_gradients.empty
    assert recorded.parameter_gradients["memory"].isna().all()
    assert set(recorded.parameter_gradients["parameter"]) == {"weight_hh"}


@pytest.mark.parametrize("mode", ["DIAGONAL", "MINLSTM"])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, mode):
    config = tiny(mode, epochs=3)
    train_run(config, run_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_run(config, run_dir=tmp_path / "cut", callbacks=[InterruptAfterEpoch(0)], checkpoint_every=0)
    # The interrupted run's rows live in its epoch checkpoint until the run ends.
    assert not (tmp_path / "cut" / schema.RUN_FILES["parameter_gradients"]).exists()
    path = tmp_path / "cut" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    callbacks = RowsFiles(path.parent).internalise(checkpoint["callbacks"], checkpoint.get("rows"), path)
    saved = callbacks["GradientRecording"]
    partial = combine([decode_frame(chunk, "parameter_gradients") for chunk in saved["parameter_rows"]],
                      "parameter_gradients")
    assert 0 < partial["step"].nunique() < 5
    resumed = train_run(config, run_dir=tmp_path / "cut")
    assert not resumed.skipped
    for kind in ("gradients", "parameter_gradients"):
        on_disk = [pd.read_parquet(tmp_path / name / schema.RUN_FILES[kind]) for name in ("whole", "cut")]
        pd.testing.assert_frame_equal(on_disk[0], on_disk[1])


def test_init_options_reach_the_cells():
    def cell(**options):
        return build_model(RunConfig(model=ModelConfig(**options, num_layers=1), data=tiny("LRU").data),
                           load_data(tiny("LRU").data)).rnn.cell(0, "forward")

    diagonal = cell(mode="DIAGONAL", diagonal_lambda_min=0.5, diagonal_lambda_max=0.6)
    assert diagonal.weight_hh.min() >= 0.5 and diagonal.weight_hh.max() <= 0.6
    lru = cell(mode="LRU", lru_r_min=0.2, lru_r_max=0.3, lru_max_phase=0.1)
    assert lru.eigenvalues().abs().min() >= 0.2 - 1e-12 and lru.eigenvalues().abs().max() <= 0.3 + 1e-12
    assert lru.eigenvalues().angle().abs().max() <= 0.1 + 1e-12
    assert cell(mode="INDRNN", indrnn_u_max=0.5).weight_hh.max() <= 0.5
    assert ModelConfig("LRU").cell_options() == {}  # unset options keep the cells' defaults


def test_unset_options_stand_for_the_constructors_defaults():
    defaults = {"diagonal_lambda": inspect.signature(DiagonalCell).parameters["lambda_range"].default,
                "indrnn_u": inspect.signature(IndRNNCell).parameters["u_range"].default}
    assert (CELL_DEFAULTS["diagonal_lambda_min"], CELL_DEFAULTS["diagonal_lambda_max"]) == defaults["diagonal_lambda"]
    assert CELL_DEFAULTS["indrnn_u_max"] == defaults["indrnn_u"][1] and defaults["indrnn_u"][0] == 0.0
    lru = inspect.signature(LRUCell).parameters
    for name in ("r_min", "r_max", "max_phase"):
        assert CELL_DEFAULTS[f"lru_{name}"] == pytest.approx(lru[name].default)


@pytest.mark.parametrize(("options", "message"), [
    ({"mode": "LSTM", "lru_r_min": 0.9}, "--lru-r-min (lru_r_min) sets the LRU cell's initialisation, not LSTM's"),
    ({"mode": "DIAGONAL", "indrnn_u_max": 1.0}, "run INDRNN in a separate sweep"),
    ({"mode": "LRU", "lru_r_min": 0.9, "lru_r_max": 0.5}, "0 <= --lru-r-min <= --lru-r-max <= 1"),
    ({"mode": "LRU", "lru_r_max": 1.5}, "0 <= --lru-r-min <= --lru-r-max <= 1"),
    ({"mode": "LRU", "lru_max_phase": 0.0}, "--lru-max-phase must be > 0"),
    ({"mode": "DIAGONAL", "diagonal_lambda_min": 0.9, "diagonal_lambda_max": 0.5}, "must be <="),
    ({"mode": "INDRNN", "indrnn_u_max": math.nan}, "ModelConfig.indrnn_u_max must be a finite number"),
])
def test_bad_init_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=None) as error:
        ModelConfig(**options)
    assert message in str(error.value)


def test_record_parameters_needs_the_gradient_recording_and_keeps_runs_out_of_ensembles():
    with pytest.raises(ValueError, match="set --record-every or drop --record-parameters"):
        TrainConfig(record_parameters=True, record_every=None)
    assert "--record-parameters" in ensemble_blocker(tiny("LSTM"))
    assert ensemble_blocker(tiny("LSTM", record_parameters=False)) is None


def test_flags_sweep_the_init_options():
    parser = load_script("compare_cells").build_parser()
    chosen, grid = option_values(parser.parse_args(["--cells", "LRU", "--lru-r-min", "0.5,0.9", "--lru-max-phase",
                                                    "0.3", "--record-parameters"]))
    assert grid["lru_r_min"] == [0.5, 0.9] and chosen["lru_max_phase"] == 0.3 and chosen["record_parameters"] is True
    assert set(CELL_OPTIONS) <= {action.dest for action in parser._actions}
