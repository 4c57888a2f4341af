"""Gate statistics and Jacobian spectral norms against hand-computed and dense answers."""

import math

import numpy as np
import pytest
import torch

from gradlab.instruments.diagnostics import gate_statistics, jacobian_spectral_norms
from gradlab.nn.models import RecurrentNet, RNNModel, unroll_direction
from gradlab.store import schema

RUN = {"run_id": "test", "seed": 0}


def _model(mode, bidirectional="none", layers=2, hidden=3, features=2, seed=0):
    return RNNModel(mode, features, hidden, layers, bidirectional=bidirectional,
                    generator=torch.Generator().manual_seed(seed)).double()


def _x(batch=2, steps=5, features=2, seed=1):
    return torch.randn(batch, steps, features, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _layer_inputs(model, x):
    """Each (layer, direction)'s input sequence, from 1-layer nets that share the lower cells.

    RecurrentNet's own outputs give the layer above its input, independently of
    the diagnostics' reconstruction of the wiring.
    """
    net = model.rnn
    inputs = {(0, d): x for d in net.directions}
    for layer in range(1, net.num_layers):
        below = RecurrentNet(net.mode, net.input_size, net.hidden_size, layer, bidirectional=net.bidirectional).double()
        below.cells.load_state_dict({k: v for k, v in net.cells.state_dict().items()
                                     if int(k.split(".")[0]) < layer * net.num_directions})
        with torch.no_grad():
            outputs, _ = below(x)  # (B, T, D*H)
        for d, direction in enumerate(net.directions):
            if net.bidirectional == "separate":
                inputs[(layer, direction)] = outputs[..., d * net.hidden_size:(d + 1) * net.hidden_size]
            else:
                inputs[(layer, direction)] = outputs
    return inputs


def _states(model, x):
    states = {}
    handle = model.rnn.add_state_observer(lambda key, tensor: states.__setitem__(
        (key.layer, key.direction, key.state, key.timestep), tensor))
    with torch.no_grad():
        model(x)
    handle.remove()
    return states


def _dense_spectral_norms(model, x, layer, direction):
    """Each sample's largest singular value of the dense d h_last / d h_t, (T, B)."""
    cell = model.rnn.cell(layer, direction)
    inputs = _layer_inputs(model, x)[(layer, direction)]
    states = _states(model, x)
    steps = x.shape[1]
    result = torch.zeros(steps, x.shape[0], dtype=torch.float64)
    for t in range(steps):
        c_t = states.get((layer, direction, "c", t))

        def h_last(h, c_t=c_t, t=t):
            state = (h, c_t) if c_t is not None else h
            if direction == "forward":
                if t == steps - 1:
                    return h
                _, final = unroll_direction(cell, inputs[:, t + 1:], state, reverse=False)
            else:
                if t == 0:
                    return h
                _, final = unroll_direction(cell, inputs[:, :t], state, reverse=True)
            return final[0] if c_t is not None else final

        jacobian = torch.autograd.functional.jacobian(h_last, states[(layer, direction, "h", t)])  # (B, H, B, H)
        for b in range(x.shape[0]):
            result[t, b] = torch.linalg.svdvals(jacobian[b, :, b, :])[0]
    return result


@pytest.mark.parametrize("mode,bidirectional", [("LSTM", "interleaved"), ("GRU", "separate"),
                                                ("RNN_TANH", "none"), ("LSTM", "none")])
def test_spectral_norms_match_the_dense_jacobian(mode, bidirectional):
    model = _model(mode, bidirectional)
    x = _x()
    kwargs = dict(run_info=RUN, step=3, epoch=1, iterations=100, generator=torch.Generator().manual_seed(0))
    means = jacobian_spectral_norms(model, x, reduction="mean", **kwargs)
    maxes = jacobian_spectral_norms(model, x, reduction="max", **kwargs)
    steps = x.shape[1]
    assert len(means) == model.rnn.num_layers * model.rnn.num_directions * steps
    for (layer, direction), group in means.groupby(["layer", "direction"]):
        dense = _dense_spectral_norms(model, x, layer, direction)  # (T, B)
        group = group.sort_values("timestep")
        np.testing.assert_allclose(group.spectral_norm, dense.mean(dim=1), rtol=1e-6)
        top = maxes[(maxes.layer == layer) & (maxes.direction == direction)].sort_values("timestep")
        np.testing.assert_allclose(top.spectral_norm, dense.amax(dim=1), rtol=1e-6)
        # Power iteration approaches the largest singular value from below.
        assert (top.spectral_norm.to_numpy() <= dense.amax(dim=1).numpy() * (1 + 1e-12)).all()
        expected_distance = steps - 1 - group.timestep if direction == "forward" else group.timestep
        assert (group.distance == expected_distance).all()
        assert group.loc[group.distance == 0, "spectral_norm"].item() == pytest.approx(1.0, rel=1e-12)


def test_jacobian_table_schema_and_arguments():
    model = _model("GRU", "separate", layers=1)
    frame = jacobian_spectral_norms(model, _x(), run_info=RUN, step=7, epoch=2, iterations=2)
    assert frame.dtypes[list(schema.JACOBIAN)].astype(str).to_dict() == schema.JACOBIAN
    assert (frame.step == 7).all() and (frame.epoch == 2).all() and (frame.cell == "GRU").all()
    assert not any(p.grad is not None for p in model.parameters())  # diagnostics leave .grad alone
    with pytest.raises(ValueError, match="reduction"):
        jacobian_spectral_norms(model, _x(), run_info=RUN, step=0, epoch=0, reduction="median")
    with pytest.raises(ValueError, match="iterations"):
        jacobian_spectral_norms(model, _x(), run_info=RUN, step=0, epoch=0, iterations=0)


def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


def _constant_gates(model, biases, hidden_biases=None):
    """Zero every weight and set each gate's bias, so pre-activations are known by hand."""
    with torch.no_grad():
        for cell in model.rnn.cells:
            cell.weight_ih.zero_()
            cell.weight_hh.zero_()
            cell.bias_hh.zero_()
            for gate, value in biases.items():
                cell.bias_ih[cell.chunk(gate)] = value
            for gate, value in (hidden_biases or {}).items():
                cell.bias_hh[cell.chunk(gate)] = value


def _table(frame):
    return {(r.layer, r.direction, r.timestep, r.gate, r.stat): r.value for r in frame.itertuples()}


def test_lstm_gate_statistics_by_hand():
    model = _model("LSTM", "separate")
    _constant_gates(model, {"i": 3.0, "f": 0.0, "g": -2.0, "o": 1.0})
    steps = 5
    frame = gate_statistics(model, _x(steps=steps), run_info=RUN, step=0, epoch=0)
    table = _table(frame)
    assert len(frame) == 2 * 2 * 5 * 2 * steps  # layers, directions, gates i f g o c, stats, T
    # c_k = f c_{k-1} + i g after k+1 steps read, with f = 1/2: c_k = 2 i g (1 - 2^-(k+1)).
    ig = _sigmoid(3.0) * math.tanh(-2.0)
    for layer in (0, 1):
        for direction in ("forward", "backward"):
            for t in range(steps):
                read = t + 1 if direction == "forward" else steps - t  # states computed so far
                c = 2 * ig * (1 - 0.5 ** read)
                expected = {
                    ("i", "mean"): _sigmoid(3.0), ("i", "saturated"): 1.0,  # 3 > 2.65
                    ("f", "mean"): 0.5, ("f", "saturated"): 0.0,
                    ("g", "mean"): math.tanh(-2.0), ("g", "saturated"): 1.0,  # 2 > 1.325
                    ("o", "mean"): _sigmoid(1.0), ("o", "saturated"): 0.0,
                    ("c", "mean"): math.tanh(c), ("c", "saturated"): float(abs(c) > 1.325),
                }
                for (gate, stat), value in expected.items():
                    assert table[(layer, direction, t, gate, stat)] == pytest.approx(value, rel=1e-12), (
                        layer, direction, t, gate, stat)
    assert frame.dtypes[list(schema.GATES)].astype(str).to_dict() == schema.GATES


def test_gru_and_rnn_gate_statistics_by_hand():
    model = _model("GRU", "interleaved", layers=1)
    # n's pre-activation is b_in + r * b_hn = 0.5 + 2 sigmoid(1) = 1.96: saturated.
    _constant_gates(model, {"r": 1.0, "z": -3.0, "n": 0.5}, hidden_biases={"n": 2.0})
    table = _table(gate_statistics(model, _x(), run_info=RUN, step=0, epoch=0))
    n = 0.5 + 2.0 * _sigmoid(1.0)
    for direction in ("forward", "backward"):
        for t in range(5):
            assert table[(0, direction, t, "r", "mean")] == pytest.approx(_sigmoid(1.0), rel=1e-12)
            assert table[(0, direction, t, "r", "saturated")] == 0.0
            assert table[(0, direction, t, "z", "mean")] == pytest.approx(_sigmoid(-3.0), rel=1e-12)
            assert table[(0, direction, t, "z", "saturated")] == 1.0
            assert table[(0, direction, t, "n", "mean")] == pytest.approx(math.tanh(n), rel=1e-12)
            assert table[(0, direction, t, "n", "saturated")] == 1.0

    relu = _model("RNN_RELU", layers=1)
    _constant_gates(relu, {"h": 0.7})
    frame = gate_statistics(relu, _x(), run_info=RUN, step=0, epoch=0)
    assert set(frame.stat) == {"mean", "slope", "slope_rms"}  # relu does not saturate
    np.testing.assert_allclose(frame[frame.stat == "mean"].value, 0.7, rtol=1e-12)
    np.testing.assert_allclose(frame[frame.stat != "mean"].value, 1.0, rtol=1e-12)  # relu'(0.7) = 1
    tanh = _model("RNN_TANH", layers=1)
    _constant_gates(tanh, {"h": -1.4})
    table = _table(gate_statistics(tanh, _x(), run_info=RUN, step=0, epoch=0))
    assert table[(0, "forward", 2, "h", "mean")] == pytest.approx(math.tanh(-1.4), rel=1e-12)
    assert table[(0, "forward", 2, "h", "saturated")] == 1.0
    assert table[(0, "forward", 2, "h", "slope")] == pytest.approx(1 - math.tanh(-1.4) ** 2, rel=1e-12)
    assert table[(0, "forward", 2, "h", "slope_rms")] == pytest.approx(1 - math.tanh(-1.4) ** 2, rel=1e-12)


@pytest.mark.parametrize("mode", ["RNN_TANH", "RNN_RELU", "RNN_SIGMOID", "RNN_LEAKY_RELU"])
def test_rnn_slopes_equal_the_closed_form_derivative(mode):
    # At random weights units differ, so slope (mean f') and slope_rms (sqrt of mean f'^2) differ too.
    model = _model(mode, layers=1)
    x = _x(steps=6)
    frame = gate_statistics(model, x, run_info=RUN, step=0, epoch=0)
    cell = model.rnn.cells[0]
    derivative = {
        "RNN_TANH": lambda a: 1 - torch.tanh(a) ** 2,
        "RNN_RELU": lambda a: (a > 0).to(a.dtype),
        "RNN_SIGMOID": lambda a: torch.sigmoid(a) * (1 - torch.sigmoid(a)),
        "RNN_LEAKY_RELU": lambda a: torch.where(a > 0, torch.ones_like(a), torch.full_like(a, 0.01)),
    }[mode]
    h = x.new_zeros(x.shape[0], cell.hidden_size)
    for t in range(x.shape[1]):
        a = x[:, t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh  # (B, H)
        h = cell.activation(a)
        rows = frame[(frame.direction == "forward") & (frame.timestep == t)].set_index("stat")["value"]
        assert rows["slope"] == pytest.approx(derivative(a).mean().item(), rel=1e-10)
        assert rows["slope_rms"] == pytest.approx(derivative(a).square().mean().sqrt().item(), rel=1e-10)


def _manual_lstm_gates(cell, inputs, reverse):
    """Per-timestep means of i, f, g, o by a plain loop over the equations, (T,) each."""
    batch, steps, _ = inputs.shape
    h = inputs.new_zeros(batch, cell.hidden_size)
    c = inputs.new_zeros(batch, cell.hidden_size)
    means = {gate: [None] * steps for gate in "ifgo"}
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        a = inputs[:, t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        for gate, value in zip("ifgo", (i, f, g, o)):
            means[gate][t] = value.mean().item()
    return means


def test_lstm_gate_means_match_a_plain_loop_in_both_directions_and_layers():
    model = _model("LSTM", "interleaved", hidden=4)
    x = _x(batch=3, steps=6)
    table = _table(gate_statistics(model, x, run_info=RUN, step=0, epoch=0))
    inputs = _layer_inputs(model, x)
    with torch.no_grad():
        for (layer, direction), layer_input in inputs.items():
            manual = _manual_lstm_gates(model.rnn.cell(layer, direction), layer_input, direction == "backward")
            for gate, values in manual.items():
                for t, value in enumerate(values):
                    assert table[(layer, direction, t, gate, "mean")] == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("mode,bidirectional", [("LSTM", "interleaved"), ("GRU", "separate"),
                                                ("RNN_TANH", "none"), ("RNN_RELU", "interleaved")])
def test_dense_products_equal_the_chained_steps(mode, bidirectional, monkeypatch):
    """The classic cells' dense per-step Jacobians give the chained recurrence's table to rounding (float64)."""
    from gradlab.instruments import spectra

    model, x = _model(mode, bidirectional, hidden=4), _x(batch=3, steps=7)
    kwargs = dict(run_info=RUN, step=3, epoch=1, iterations=10)
    dense = jacobian_spectral_norms(model, x, generator=torch.Generator().manual_seed(5), **kwargs)
    monkeypatch.setattr(spectra, "CLASSIC_CELLS", ())  # every cell chains its steps, as the modern ones do
    chained = jacobian_spectral_norms(model, x, generator=torch.Generator().manual_seed(5), **kwargs)
    assert not np.array_equal(dense.spectral_norm, np.ones(len(dense)))
    np.testing.assert_allclose(dense.spectral_norm, chained.spectral_norm, rtol=1e-13, atol=0)
    assert dense.drop(columns="spectral_norm").equals(chained.drop(columns="spectral_norm"))
