"""Dynamics during training: Lyapunov recording and the two remedies act exactly as their definitions say."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.data.from_config import load_data
from gradlab.instruments.lyapunov import lyapunov_spectrum
from gradlab.instruments.remedies import gradient_flossing_loss, loss_state_gradients, vanishing_gradient_regulariser
from gradlab.training import batch_loss, build_model, train_run
from gradlab.training.seeding import seed_everything

BASE = RunConfig(
    model=ModelConfig("RNN_TANH", hidden_size=5, num_layers=2),
    data=DataConfig("distance", seq_len=10, n_train=24, n_validation=8, n_test=8),
    train=TrainConfig(epochs=1, batch_size=24, lr=0.1, optimiser="sgd", dtype="float64", device="cpu",
                      record_every=None, val_every=None, diagnostics=False, diagnostics_batch=4),
)


def _one_step(config: RunConfig, tmp_path):
    """Weights after one SGD step of ``config`` (the whole training set in one batch), and the initial model."""
    result = train_run(config, run_dir=tmp_path / "run")
    after = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    data = load_data(config.data).to(torch.device("cpu"), torch.float64)
    generators = seed_everything(config.train.seed)
    model = build_model(config, data, generator=generators["init"]).double()
    return result, after, model, data


def _task_loss(model, x, y):
    return batch_loss(model(x), y, "classification")  # as training computes it


def _expected(model, objective, lr):
    parameters = dict(model.named_parameters())
    grads = torch.autograd.grad(objective, list(parameters.values()))
    return {name: parameter.detach() - lr * grad for (name, parameter), grad in zip(parameters.items(), grads)}


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_omega_adds_its_weighted_gradient_to_the_task_gradient(tmp_path, mode):
    config = replace(BASE, model=replace(BASE.model, mode=mode), train=replace(BASE.train, omega_weight=0.5))
    result, after, model, data = _one_step(config, tmp_path)
    x, y = data.train.x, data.train.y  # one batch of all examples: the mean loss ignores their order
    state_gradients = loss_state_gradients(model, x, y, lambda logits, target: batch_loss(logits, target, "classification"))
    objective = _task_loss(model, x, y) + 0.5 * vanishing_gradient_regulariser(model, x, state_gradients)
    for name, value in _expected(model, objective, 0.1).items():
        torch.testing.assert_close(after[name], value, rtol=1e-9, atol=1e-12, msg=name)
    omega = result.history[(result.history["metric"] == "omega")]["value"]
    assert len(omega) == 1 and omega.iloc[0] > 0


def test_flossing_adds_the_squared_exponents_on_its_schedule(tmp_path):
    config = replace(BASE, train=replace(BASE.train, floss_weight=0.3, floss_k=2))
    result, after, model, data = _one_step(config, tmp_path)
    x, y = data.train.x, data.train.y
    objective = _task_loss(model, x, y) + 0.3 * gradient_flossing_loss(model, x, 2)
    for name, value in _expected(model, objective, 0.1).items():
        torch.testing.assert_close(after[name], value, rtol=1e-9, atol=1e-12, msg=name)
    schedule = replace(config, train=replace(config.train, batch_size=6, epochs=2, floss_every=2, floss_until=6))
    history = train_run(schedule).history
    floss = history[history["metric"] == "floss"].sort_values("step")
    flossed = floss.dropna(subset=["value"])["step"].tolist()
    assert floss["step"].tolist() == list(range(1, 9)) and flossed == [1, 3, 5]  # updates 0, 2, 4 (before 6)


def test_clipping_by_value_bounds_every_update(tmp_path):
    config = replace(BASE, train=replace(BASE.train, clip_grad_value=1e-3))
    _, after, model, data = _one_step(config, tmp_path)
    objective = _task_loss(model, data.train.x, data.train.y)
    parameters = dict(model.named_parameters())
    grads = torch.autograd.grad(objective, list(parameters.values()))
    for (name, parameter), grad in zip(parameters.items(), grads):
        torch.testing.assert_close(after[name], parameter.detach() - 0.1 * grad.clamp(-1e-3, 1e-3), msg=name)


def test_lyapunov_spectrum_is_recorded_at_init_every_k_steps_and_at_the_end(tmp_path):
    config = replace(BASE, train=replace(BASE.train, batch_size=8, epochs=2, lyapunov_every=2, lyapunov_k=3))
    result = train_run(config, run_dir=tmp_path / "run")
    table = result.lyapunov
    assert sorted(table["step"].unique()) == [0, 2, 4, 6]  # 3 steps an epoch: init, every 2, the end
    assert set(table["index"]) == {0, 1, 2} and set(table["layer"]) == {0, 1}
    data = load_data(config.data).to(torch.device("cpu"), torch.float64)
    generators = seed_everything(config.train.seed)
    model = build_model(config, data, generator=generators["init"]).double()
    expected = lyapunov_spectrum(model, data.validation.x[:4], 3)
    start = table[table["step"] == 0].sort_values(["layer", "index"])
    torch.testing.assert_close(torch.tensor(start["exponent"].to_numpy()),
                               torch.tensor(expected.sort_values(["layer", "index"])["exponent"].to_numpy()))
    assert (tmp_path / "run" / "lyapunov.parquet").is_file()
