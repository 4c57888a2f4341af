"""Lyapunov exponents and Jacobian singular values against eigenvalues and dense Jacobians."""

import math

import numpy as np
import pytest
import torch
from test_instrument_diagnostics import _layer_inputs

from gradlab.instruments.diagnostics import jacobian_singular_values, lyapunov_exponents, lyapunov_spectrum
from gradlab.instruments.lyapunov import random_basis
from gradlab.nn.models import RecurrentNet, RNNModel, unroll_direction
from gradlab.store import schema

RUN = {"run_id": "test", "seed": 0}
CELLS = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]


def _model(mode, bidirectional="none", layers=2, hidden=4, features=2, seed=0):
    return RNNModel(mode, features, hidden, layers, bidirectional=bidirectional,
                    generator=torch.Generator().manual_seed(seed)).double()


def _x(batch=3, steps=6, features=2, seed=1):
    return torch.randn(batch, steps, features, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _linear_net(weight_hh):
    """h_t = W h_{t-1}: identity activation, no input weights, no bias."""
    hidden = weight_hh.shape[0]
    net = RecurrentNet("RNN_IDENTITY", 1, hidden, bias=False).double()
    with torch.no_grad():
        net.cell(0).weight_ih.zero_()
        net.cell(0).weight_hh.copy_(weight_hh)
    return net


def test_linear_recurrence_with_diagonal_weights_gives_log_moduli_of_its_eigenvalues():
    diagonal = torch.tensor([1.3, -0.9, 0.6, -0.25, 0.1], dtype=torch.float64)
    net = _linear_net(torch.diag(diagonal))
    frame = lyapunov_spectrum(net, torch.zeros(2, 200, 1, dtype=torch.float64))
    expected = np.sort(np.log(diagonal.abs().numpy()))[::-1]
    assert list(frame["index"]) == list(range(5)) and (frame.timesteps == 180).all() and (frame.warmup == 20).all()
    np.testing.assert_allclose(frame.exponent, expected, atol=1e-3)
    np.testing.assert_allclose(frame.exponent_std, 0.0, atol=1e-12)  # every sample sees the same W


def test_linear_recurrence_with_scaled_orthogonal_weights_has_one_repeated_exponent():
    orthogonal = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))).Q
    net = _linear_net(0.8 * orthogonal)
    eigenvalues = torch.linalg.eigvals(0.8 * orthogonal)
    frame = lyapunov_spectrum(net, torch.zeros(1, 200, 1, dtype=torch.float64), k=4)
    assert len(frame) == 4
    np.testing.assert_allclose(frame.exponent, np.log(eigenvalues.abs().numpy()[:4]), rtol=1e-12)
    np.testing.assert_allclose(frame.exponent, math.log(0.8), rtol=1e-12)


def _dense_state_jacobian(model, x, layer, direction, steps):
    """Each sample's dense d s_{steps-1} / d s_{-1} over the first ``steps`` reads, (B, n, n)."""
    net = model.rnn
    cell = net.cell(layer, direction)
    inputs = _layer_inputs(model, x)[(layer, direction)]
    inputs = inputs[:, -steps:] if direction == "backward" else inputs[:, :steps]
    hidden = net.hidden_size

    def final(packed):
        state = (packed[:, :hidden], packed[:, hidden:]) if net.kind == "LSTM" else packed
        _, last = unroll_direction(cell, inputs, state, reverse=direction == "backward")
        return torch.cat(last, dim=1) if net.kind == "LSTM" else last

    size = hidden * (2 if net.kind == "LSTM" else 1)
    start = torch.zeros(x.shape[0], size, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(final, start)  # (B, n, B, n)
    return torch.stack([jacobian[b, :, b, :] for b in range(x.shape[0])])


def _log_diagonal(matrices):
    return torch.linalg.qr(matrices).R.diagonal(dim1=-2, dim2=-1).abs().log()  # (B, k)


def _per_step_jacobians(trajectory):
    """Dense d s_t / d s_{t-1} of every step in reading order, (T, B, n, n), by reverse-mode autograd."""
    cell = trajectory.cell
    x_proj = cell.project_input(trajectory.inputs)
    previous = trajectory.previous()
    found = []
    for t in trajectory.positions():
        def step(packed, t=t):
            return cell.pack_state(cell.step(x_proj[:, t], cell.unpack_state(packed)))

        jacobian = torch.autograd.functional.jacobian(step, previous[:, t])  # (B, n, B, n)
        found.append(torch.stack([jacobian[b, :, b, :] for b in range(jacobian.shape[0])]))
    return torch.stack(found)


@pytest.mark.parametrize("mode,bidirectional", [(mode, "none") for mode in CELLS]
                         + [("LSTM", "interleaved"), ("GRU", "separate")])
def test_qr_method_equals_qr_of_the_dense_jacobian_product(mode, bidirectional):
    model = _model(mode, bidirectional)
    if mode == "RNN_RELU":
        # Keep every unit on: an off unit zeroes a row of J_t exactly, which the
        # dense product only rounds to about 1e-18, so both logs would mean "-inf".
        with torch.no_grad():
            for cell in model.rnn.cells:
                cell.bias_ih.add_(2.0)
    x = _x()
    steps, warmup = x.shape[1], 2
    with torch.no_grad():
        trajectories = model.rnn.trajectories(x)
    for (layer, direction), trajectory in trajectories.items():
        size = trajectory.cell.state_size
        basis = random_basis(size, size - 1, torch.Generator().manual_seed(5))
        exponents = lyapunov_exponents(trajectory, warmup=0, basis=basis)
        after_warmup = lyapunov_exponents(trajectory, warmup=warmup, basis=basis)
        # The definition: QR of the whole product M = J_{T-1} ... J_0 applied to
        # the basis, from the network's own unroll and wiring. M's rounding error
        # grows with its condition number, exp(T * (lambda_0 - lambda_i)).
        whole = _dense_state_jacobian(model, x, layer, direction, steps) @ basis
        start = _dense_state_jacobian(model, x, layer, direction, warmup) @ basis
        conditioning = torch.exp(steps * (exponents[:, :1] - exponents))
        tolerance = 1e-10 + 1e-15 * conditioning
        assert ((exponents - _log_diagonal(whole) / steps).abs() <= tolerance).all()
        expected = (_log_diagonal(whole) - _log_diagonal(start)) / (steps - warmup)
        assert ((after_warmup - expected).abs() <= tolerance * steps / (steps - warmup)).all()
        # Step by step with dense per-step Jacobians: no conditioning loss, tight.
        q, growth = basis.expand(x.shape[0], size, size - 1), 0.0
        for position, jacobian in enumerate(_per_step_jacobians(trajectory)):
            q, r = torch.linalg.qr(jacobian @ q)
            growth = growth + (r.diagonal(dim1=-2, dim2=-1).abs().log() if position >= warmup else 0.0)
        torch.testing.assert_close(after_warmup, growth / (steps - warmup), rtol=1e-10, atol=1e-12)


def test_spectrum_table_schema_defaults_and_arguments():
    model = _model("LSTM", "separate", layers=2, hidden=3)
    x = _x(steps=20)
    frame = lyapunov_spectrum(model, x, run_info=RUN, step=4, epoch=1)
    assert frame.dtypes[list(schema.LYAPUNOV)].astype(str).to_dict() == schema.LYAPUNOV
    assert len(frame) == 2 * 2 * 6  # all 2H exponents of (h, c), per layer and direction
    assert (frame.warmup == 2).all() and (frame.timesteps == 18).all()
    for _, group in frame.groupby(["layer", "direction"]):
        assert (np.diff(group.exponent) <= 1e-12).all()
    bare = lyapunov_spectrum(model, x, k=2)
    assert "run_id" not in bare and "step" not in bare and (bare.cell == "LSTM").all() and len(bare) == 8
    with torch.no_grad():
        trajectory = model.rnn.trajectories(x)[(1, "backward")]
        # Gram-Schmidt: the first columns of the basis evolve the same whatever k is.
        torch.testing.assert_close(lyapunov_exponents(trajectory, 2), lyapunov_exponents(trajectory)[:, :2])
    assert not any(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="k must be"):
        lyapunov_spectrum(model, x, k=7)
    with pytest.raises(ValueError, match="warmup"):
        lyapunov_spectrum(model, x, warmup=20)


def _dense_singular_values(model, x, layer, direction, gap):
    """Each sample's singular values of the dense d h_last / d h_t, t = gap steps before the last, (B, H)."""
    net = model.rnn
    cell = net.cell(layer, direction)
    inputs = _layer_inputs(model, x)[(layer, direction)]
    steps = x.shape[1]
    with torch.no_grad():
        trajectory = net.trajectories(x)[(layer, direction)]
    t = steps - 1 - gap if direction == "forward" else gap
    rest = inputs[:, t + 1:] if direction == "forward" else inputs[:, :t]

    def h_last(h):
        if gap == 0:
            return h
        state = (h, trajectory.c[:, t]) if trajectory.c is not None else h
        _, final = unroll_direction(cell, rest, state, reverse=direction == "backward")
        return final[0] if trajectory.c is not None else final

    jacobian = torch.autograd.functional.jacobian(h_last, trajectory.h[:, t])  # (B, H, B, H)
    return torch.stack([torch.linalg.svdvals(jacobian[b, :, b, :]) for b in range(x.shape[0])])


@pytest.mark.parametrize("mode,bidirectional", [(mode, "none") for mode in CELLS] + [("GRU", "interleaved")])
def test_singular_values_match_a_dense_svd(mode, bidirectional):
    model = _model(mode, bidirectional, hidden=5)
    x = _x(steps=8)
    gaps = [0, 1, 3, 7]
    sketched = jacobian_singular_values(model, x, k=2, gaps=gaps, iterations=60, oversample=1,
                                        run_info=RUN, step=0, epoch=0)
    exact = jacobian_singular_values(model, x, k=3, gaps=gaps, iterations=0, oversample=2)  # spans all H
    assert sketched.dtypes[list(schema.JACOBIAN_SINGULAR_VALUES)].astype(str).to_dict() == schema.JACOBIAN_SINGULAR_VALUES
    for (layer, direction), group in sketched.groupby(["layer", "direction"]):
        full = exact[(exact.layer == layer) & (exact.direction == direction)]
        for gap in gaps:
            dense = _dense_singular_values(model, x, layer, direction, gap)  # (B, H)
            rows = group[group.distance == gap].sort_values("index")
            np.testing.assert_allclose(rows.singular_value, dense[:, :2].mean(dim=0), rtol=1e-6, atol=1e-12)
            np.testing.assert_allclose(rows.singular_value_std, dense[:, :2].std(dim=0), rtol=1e-5, atol=1e-12)
            expected_t = x.shape[1] - 1 - gap if direction == "forward" else gap
            assert (rows.timestep == expected_t).all()
            rows = full[full.distance == gap].sort_values("index")
            # Rank-deficient (relu) Jacobians have singular values that are rounding-level zeros.
            floor = 1e-12 * dense.max().item()
            np.testing.assert_allclose(rows.singular_value, dense[:, :3].mean(dim=0), rtol=1e-10, atol=floor)


def test_singular_values_default_gaps_and_bad_arguments():
    model = _model("RNN_TANH", hidden=3, layers=1)
    x = _x(steps=40)
    frame = jacobian_singular_values(model, x, k=1)
    assert frame.distance.min() == 1 and frame.distance.max() == 39 and 15 <= frame.distance.nunique() <= 24
    with pytest.raises(ValueError, match="gaps"):
        jacobian_singular_values(model, x, k=1, gaps=[40])
    with pytest.raises(ValueError, match="k must be"):
        jacobian_singular_values(model, x, k=4)


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_leading_exponent_is_the_decay_rate_of_the_largest_singular_value(mode):
    # Two independent routes to the same rate: QR on per-step Jacobians, and how
    # fast the norm of the Jacobian product d h_last / d h_t shrinks with the gap.
    # They average over different windows of one finite trajectory, so they
    # agree up to O(1) / (window of 110 steps).
    model = _model(mode, layers=1, hidden=8, features=3)
    x = torch.randn(1, 150, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    exponent = lyapunov_spectrum(model, x, k=1).exponent.item()
    norms = jacobian_singular_values(model, x, k=1, gaps=[30, 140], iterations=4).set_index("distance").singular_value
    assert exponent < -0.3
    assert (math.log(norms[140]) - math.log(norms[30])) / 110 == pytest.approx(exponent, abs=0.03)
