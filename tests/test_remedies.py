"""Pascanu's regulariser and gradient flossing: values, gradients by finite differences, one step's effect."""

import pytest
import torch
import torch.nn.functional as F

from gradlab.instruments.lyapunov import lyapunov_exponents
from gradlab.instruments.remedies import gradient_flossing_loss, loss_state_gradients, vanishing_gradient_regulariser
from gradlab.nn.models import RNNModel

CELLS = ["RNN_TANH", "LSTM", "GRU"]


def _model(mode, bidirectional="none", layers=2, hidden=3, seed=0, handwritten_bptt=True):
    return RNNModel(mode, 2, hidden, layers, output_size=2, bidirectional=bidirectional,
                    generator=torch.Generator().manual_seed(seed), handwritten_bptt=handwritten_bptt).double()


def _batch(batch=3, steps=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, 2, dtype=torch.float64, generator=generator)
    return x, torch.randint(0, 2, (batch,), generator=generator)


def _directional_derivative(function, model, direction, epsilon=1e-6):
    """Central difference of ``function()`` along ``direction`` (one tensor per parameter)."""
    parameters = list(model.parameters())
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for parameter, d in zip(parameters, direction):
                parameter.add_(sign * epsilon * d)
        values.append(function().item())
        with torch.no_grad():
            for parameter, d in zip(parameters, direction):
                parameter.sub_(sign * epsilon * d)
    return (values[0] - values[1]) / (2 * epsilon)


def _gradient_along(value, model, direction):
    grads = torch.autograd.grad(value, list(model.parameters()), allow_unused=True)
    return sum((g * d).sum() for g, d in zip(grads, direction) if g is not None).item()


def _random_direction(model, seed=7):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, dtype=p.dtype, generator=generator) for p in model.parameters()]


@pytest.mark.parametrize("mode", CELLS)
def test_state_gradients_match_autograd_on_the_plain_unroll(mode):
    model = _model(mode, "interleaved")  # measured through the hand-written BPTT
    x, y = _batch()
    found = loss_state_gradients(model, x, y)
    reference = _model(mode, "interleaved", handwritten_bptt=False)
    states = {}

    def keep(key, tensor):
        tensor.retain_grad()
        states[(key.layer, key.direction, key.state, key.timestep)] = tensor

    reference.rnn.add_state_observer(keep)
    F.cross_entropy(reference(x), y).backward()
    for (layer, direction), grads in found.items():
        names = ("h", "c") if mode == "LSTM" else ("h",)
        expected = torch.cat([torch.stack([states[(layer, direction, name, t)].grad for t in range(x.shape[1])], dim=1)
                              for name in names], dim=2)
        torch.testing.assert_close(grads, expected, rtol=1e-10, atol=1e-14)
    assert all(p.grad is None for p in model.parameters())


def _omega_by_hand(model, x, state_gradients):
    """Omega from dense per-step Jacobians of the state observer's states (forward layers only)."""
    net = model.rnn
    states = {}
    net.add_state_observer(lambda key, t: states.__setitem__((key.layer, key.state, key.timestep), t.detach()))
    net.handwritten_bptt = False
    with torch.no_grad():
        model(x)
    total = 0.0
    for layer in range(net.num_layers):
        cell = net.cell(layer)
        inputs = x if layer == 0 else torch.stack([states[(layer - 1, "h", t)] for t in range(x.shape[1])], dim=1)
        names = ("h", "c") if net.kind == "LSTM" else ("h",)
        packed = torch.stack([torch.cat([states[(layer, n, t)] for n in names], dim=1) for t in range(x.shape[1])], dim=1)
        for t in range(1, x.shape[1]):
            for b in range(x.shape[0]):
                def step(s, b=b, t=t):
                    state = (s[:3], s[3:]) if net.kind == "LSTM" else s
                    new = cell(inputs[b : b + 1, t], tuple(p.unsqueeze(0) for p in state) if net.kind == "LSTM"
                               else state.unsqueeze(0))
                    return torch.cat(new, dim=1)[0] if net.kind == "LSTM" else new[0]

                jacobian = torch.autograd.functional.jacobian(step, packed[b, t - 1])
                v = state_gradients[(layer, "forward")][b, t]
                total += ((v @ jacobian).norm() / v.norm() - 1).item() ** 2 / x.shape[0]
    return total


@pytest.mark.parametrize("mode", CELLS)
def test_omega_value_and_gradient(mode):
    model = _model(mode)
    x, y = _batch()
    state_gradients = loss_state_gradients(model, x, y)
    omega = vanishing_gradient_regulariser(model, x, state_gradients)
    assert omega.item() == pytest.approx(_omega_by_hand(_model(mode), x, state_gradients), rel=1e-10)
    direction = _random_direction(model)
    analytic = _gradient_along(omega, model, direction)
    numeric = _directional_derivative(lambda: vanishing_gradient_regulariser(model, x, state_gradients), model, direction)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_one_step_on_omega_lowers_it():
    model = _model("RNN_TANH", layers=1, hidden=4)
    x, y = _batch(steps=12)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    before = vanishing_gradient_regulariser(model, x, loss_state_gradients(model, x, y))
    before.backward()
    optimiser.step()
    after = vanishing_gradient_regulariser(model, x, loss_state_gradients(model, x, y))
    assert after.item() < before.item()


@pytest.mark.parametrize("mode", CELLS)
def test_flossing_gradient_matches_finite_differences(mode):
    model = _model(mode, "separate")
    x, _ = _batch()

    def loss():
        return gradient_flossing_loss(model, x, k=2, warmup=1)

    direction = _random_direction(model)
    analytic = _gradient_along(loss(), model, direction)
    assert analytic == pytest.approx(_directional_derivative(loss, model, direction), rel=1e-6, abs=1e-9)


def test_one_flossing_step_moves_the_leading_exponent_towards_zero():
    model = _model("RNN_TANH", layers=1, hidden=4)
    x, _ = _batch(steps=30)

    def leading():
        with torch.no_grad():
            return lyapunov_exponents(model.rnn.trajectories(x)[(0, "forward")], 1).mean().item()

    before = leading()
    assert before < -0.1  # a contracting net at this init: gradients vanish
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    gradient_flossing_loss(model, x, k=1).backward()
    optimiser.step()
    assert before < leading() < 0
