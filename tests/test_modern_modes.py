"""The modern cells as modes: the config vocabulary, --cells and --match-params, ensembles, and a whole run."""

import argparse

import numpy as np
import pytest

from gradlab.cli import add_sweep_arguments
from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig, normalise_mode, parse_mode
from gradlab.nn.models import RNNModel
from gradlab.store.io import RunFolder
from gradlab.sweep.plan import count_parameters, expand_cells, hidden_for_params, plan_runs
from gradlab.training import train_run
from gradlab.training.ensemble.grouping import ensemble_blocker, group_runs

MODERN = ["INDRNN", "MINGRU", "MINLSTM", "LRU", "DIAGONAL"]


def test_modes_parse_case_insensitively_and_reject_inits_that_do_not_apply():
    assert [normalise_mode(mode.lower()) for mode in MODERN] == MODERN
    assert parse_mode("indrnn") == ("INDRNN", "relu") and parse_mode("LRU") == ("LRU", "identity")
    with pytest.raises(ValueError, match="MINGRU"):  # the error lists the modern modes among the valid ones
        parse_mode("MINGRUU")
    with pytest.raises(ValueError, match="not MINGRU; run MINGRU in a separate sweep, or use init 'default'"):
        ModelConfig("MINGRU", init="orthogonal")


@pytest.mark.parametrize("mode", MODERN)
@pytest.mark.parametrize("bidirectional", ["none", "separate", "interleaved"])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_formula_equals_the_models(mode, bidirectional, bias):
    for hidden, layers in ((3, 1), (7, 2)):
        model = RNNModel(mode, 20, hidden, layers, bias, 3, bidirectional=bidirectional)
        expected = sum(parameter.numel() for parameter in model.parameters())
        assert count_parameters(mode, 20, hidden, layers, 3, bidirectional=bidirectional, bias=bias) == expected


def test_cells_flag_and_match_params_plan_the_modern_modes():
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    args = parser.parse_args(["--cells", "MINGRU,lru,DIAGONAL", "--match-params", "3000"])
    modes = expand_cells(args.cells, args.activations)
    assert modes == ("MINGRU", "LRU", "DIAGONAL")
    base = RunConfig(model=ModelConfig("GRU", num_layers=2), data=DataConfig("distance"))
    runs = plan_runs(base, modes=list(modes), seeds=[0], match_params=args.match_params, shapes=(20, 3))
    assert [run.run_id for run in runs] == ["MINGRU-p3000-s0", "LRU-p3000-s0", "DIAGONAL-p3000-s0"]
    for run in runs:
        hidden = run.model.hidden_size
        assert (hidden, count_parameters(run.model.mode, 20, hidden, 2, 3)) == hidden_for_params(
            3000, run.model.mode, 20, 2, 3)
        counts = [count_parameters(run.model.mode, 20, h, 2, 3) for h in (hidden - 1, hidden, hidden + 1)]
        assert abs(counts[1] - 3000) == min(abs(count - 3000) for count in counts)


def test_auto_ensembles_leave_the_modern_modes_to_run_one_by_one():
    runs = [RunConfig(model=ModelConfig(mode), data=DataConfig("distance"), train=TrainConfig(seed=seed))
            for mode in ("MINGRU", "GRU") for seed in (0, 1)]
    assert "no batched backward" in ensemble_blocker(runs[0])
    assert [len(unit) for unit in group_runs(runs, ensemble="auto")] == [1, 1, 2]


@pytest.mark.parametrize("mode", MODERN)
def test_a_training_run_writes_gradients_diagnostics_and_lyapunov(mode, tmp_path):
    config = RunConfig(
        model=ModelConfig(mode, hidden_size=4, num_layers=2),
        data=DataConfig("distance", seq_len=10, n_train=16, n_validation=8, n_test=8),
        train=TrainConfig(epochs=2, batch_size=8, lr=1e-2, record_every=1, diagnostics_batch=2, jacobian_batch=2,
                          lyapunov_every=2),
        run_id=f"{mode}-s0",
    )
    result = train_run(config, run_dir=tmp_path / "run")
    assert result.status == "finished"
    folder = RunFolder(tmp_path / "run")
    gradients = folder.table("gradients")
    assert set(gradients.cell) == {mode} and set(gradients.state) == {"h"}
    assert len(gradients) == gradients.step.nunique() * 2 * 10 and np.isfinite(gradients.grad_norm).all()
    assert (gradients.grad_norm > 0).all()
    jacobian, lyapunov = folder.table("jacobian"), folder.table("lyapunov")
    assert len(jacobian) and np.isfinite(jacobian.spectral_norm).all()
    state_size = 8 if mode == "LRU" else 4
    assert len(lyapunov) == lyapunov.step.nunique() * 2 * state_size
    assert len(folder.table("gates")) > 0 or mode in ("LRU", "DIAGONAL")
