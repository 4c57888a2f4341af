"""Stacked and bidirectional gradlab networks against torch.nn.RNN/LSTM/GRU."""

import pytest
import torch
from torch import nn

from gradlab.nn.models import RecurrentNet, RNNModel, StateKey, load_torch_weights, normalise_mode

TOL = dict(rtol=0, atol=1e-10)
MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]


def _torch_stack(mode, input_size, hidden, layers, bias, bidirectional):
    if mode == "LSTM":
        return nn.LSTM(input_size, hidden, layers, bias, batch_first=True, bidirectional=bidirectional)
    if mode == "GRU":
        return nn.GRU(input_size, hidden, layers, bias, batch_first=True, bidirectional=bidirectional)
    nonlinearity = mode.split("_")[1].lower()
    return nn.RNN(input_size, hidden, layers, nonlinearity, bias, batch_first=True, bidirectional=bidirectional)


def _random_state(mode, count, batch, hidden, generator):
    h = torch.randn(count, batch, hidden, dtype=torch.float64, generator=generator)
    if mode == "LSTM":
        return h, torch.randn(count, batch, hidden, dtype=torch.float64, generator=generator)
    return h


def _flat(state):
    return state if isinstance(state, tuple) else (state,)


def _weighted_sum(tensors, seed):
    generator = torch.Generator().manual_seed(seed)
    return sum((torch.randn(t.shape, dtype=t.dtype, generator=generator) * t).sum() for t in tensors)


def _grads(loss, module):
    return [g for g in torch.autograd.grad(loss, [p for p in module.parameters()])]


@pytest.mark.parametrize("handwritten_bptt", [True, False], ids=["bptt", "autograd"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bidirectional", ["none", "interleaved"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("mode", MODES)
def test_stack_matches_torch(mode, layers, bidirectional, bias, handwritten_bptt):
    torch.manual_seed(0)
    reference = _torch_stack(mode, 5, 6, layers, bias, bidirectional == "interleaved").double()
    ours = RecurrentNet(mode, 5, 6, layers, bias, bidirectional, handwritten_bptt=handwritten_bptt).double()
    load_torch_weights(ours, reference)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 5, dtype=torch.float64, generator=generator)
    h0 = _random_state(mode, layers * ours.num_directions, 3, 6, generator)

    results = []
    for module in (ours, reference):
        out, final = module(x, h0)
        loss = _weighted_sum([out, *_flat(final)], seed=2)
        # Our cells list parameters per cell; torch lists them per layer/direction in
        # the same order (weight_ih, weight_hh, bias_ih, bias_hh), so the lists align.
        results.append((out, _flat(final), _grads(loss, module)))
    (out_a, final_a, grads_a), (out_b, final_b, grads_b) = results
    torch.testing.assert_close(out_a, out_b, **TOL)
    for a, b in zip(final_a, final_b):
        torch.testing.assert_close(a, b, **TOL)
    assert len(grads_a) == len(grads_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("handwritten_bptt", [True, False], ids=["bptt", "autograd"])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("mode", MODES)
def test_separate_matches_two_independent_torch_stacks(mode, layers, handwritten_bptt):
    torch.manual_seed(0)
    forward = _torch_stack(mode, 4, 5, layers, True, False).double()
    backward = _torch_stack(mode, 4, 5, layers, True, False).double()
    ours = RecurrentNet(mode, 4, 5, layers, True, "separate", handwritten_bptt=handwritten_bptt).double()
    load_torch_weights(ours, [forward, backward])
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 4, dtype=torch.float64, generator=generator)
    h0 = _random_state(mode, 2 * layers, 2, 5, generator)

    out, final = ours(x, h0)
    # torch's layout for our state is layer-major: index = layer * 2 + direction.
    pick = lambda s, d: s[d::2]  # noqa: E731
    h0_f = tuple(pick(s, 0) for s in _flat(h0))
    h0_b = tuple(pick(s, 1) for s in _flat(h0))
    out_f, final_f = forward(x, h0_f if mode == "LSTM" else h0_f[0])
    out_b, final_b = backward(x.flip(1), h0_b if mode == "LSTM" else h0_b[0])
    torch.testing.assert_close(out, torch.cat([out_f, out_b.flip(1)], dim=2), **TOL)
    for ours_final, f, b in zip(_flat(final), _flat(final_f), _flat(final_b)):
        torch.testing.assert_close(pick(ours_final, 0), f, **TOL)
        torch.testing.assert_close(pick(ours_final, 1), b, **TOL)

    loss_ours = _weighted_sum([out, *_flat(final)], seed=3)
    ref_out = torch.cat([out_f, out_b.flip(1)], dim=2)
    ref_final = [torch.stack([a, b], dim=1).flatten(0, 1) for a, b in zip(_flat(final_f), _flat(final_b))]
    loss_ref = _weighted_sum([ref_out, *ref_final], seed=3)
    grads_ours = dict(zip([n for n, _ in ours.named_parameters()], _grads(loss_ours, ours)))
    # Forward stack -> direction 0, backward stack -> direction 1 of each layer.
    for d, stack in enumerate((forward, backward)):
        stack_grads = torch.autograd.grad(loss_ref, list(stack.parameters()), retain_graph=True)
        for (name, _), grad in zip(stack.named_parameters(), stack_grads):
            base, layer = name.rsplit("_l", 1)
            torch.testing.assert_close(grads_ours[f"cells.{int(layer) * 2 + d}.{base}"], grad, **TOL)


@pytest.mark.parametrize("bidirectional", ["none", "interleaved", "separate"])
@pytest.mark.parametrize("mode", MODES)
def test_classifier_last_and_mean_readouts(mode, bidirectional):
    torch.manual_seed(0)
    model = RNNModel(mode, 4, 5, 2, True, 3, bidirectional=bidirectional).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    outputs, final = model.rnn(x)
    h_n = final[0] if mode == "LSTM" else final
    if bidirectional == "none":
        expected_last = outputs[:, -1]
        torch.testing.assert_close(h_n[-1], outputs[:, -1], **TOL)
    else:
        # Backward direction's final state is its output at input time 0.
        expected_last = torch.cat([outputs[:, -1, :5], outputs[:, 0, 5:]], dim=1)
        torch.testing.assert_close(torch.cat([h_n[-2], h_n[-1]], dim=1), expected_last, **TOL)
    torch.testing.assert_close(model(x), model.fc(expected_last), **TOL)
    model.readout = "mean"
    torch.testing.assert_close(model(x), model.fc(outputs.mean(dim=1)), **TOL)


@pytest.mark.parametrize("mode", MODES)
def test_batch_of_one_keeps_batch_dimension(mode):
    model = RNNModel(mode, 4, 5, 2, True, 3)
    assert model(torch.randn(1, 6, 4)).shape == (1, 3)
    assert model(torch.randn(1, 1, 4)).shape == (1, 3)


def test_float64_and_parameter_device_are_followed():
    model = RNNModel("GRU", 4, 5, 1, True, 2).double()
    assert model(torch.randn(2, 3, 4, dtype=torch.float64)).dtype == torch.float64
    if torch.cuda.is_available():  # pragma: no cover - exercised on GPU machines
        model = model.float().cuda()
        assert model(torch.randn(2, 3, 4, device="cuda")).device.type == "cuda"


def test_initial_state_is_used():
    torch.manual_seed(0)
    model = RNNModel("LSTM", 4, 5, 2, True, 3)
    x = torch.randn(2, 6, 4)
    h0 = (torch.randn(2, 2, 5), torch.randn(2, 2, 5))
    assert not torch.allclose(model(x), model(x, h0))
    zeros = (torch.zeros(2, 2, 5), torch.zeros(2, 2, 5))
    torch.testing.assert_close(model(x), model(x, zeros))


def test_any_rnn_activation_mode():
    assert normalise_mode("rnn_leaky_relu") == "RNN_LEAKY_RELU"
    model = RNNModel("RNN_GELU", 4, 5, 2, True, 3)
    assert model.rnn.cell(1).nonlinearity == "gelu"
    assert model(torch.randn(2, 3, 4)).shape == (2, 3)


@pytest.mark.parametrize("bidirectional", ["none", "interleaved", "separate"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_state_observer_sees_every_state_once(mode, bidirectional):
    net = RecurrentNet(mode, 3, 4, 2, True, bidirectional)
    seen = {}
    handle = net.add_state_observer(lambda key, tensor: seen.setdefault(key, tensor))
    x = torch.randn(2, 5, 3)
    outputs, _ = net(x)
    states = ("h", "c") if mode == "LSTM" else ("h",)
    expected = {StateKey(l, d, s, t) for l in range(2) for d in net.directions for s in states for t in range(5)}
    assert set(seen) == expected
    # The exposed h_t of the last layer is the output at input time t.
    for d, direction in enumerate(net.directions):
        for t in range(5):
            torch.testing.assert_close(seen[StateKey(1, direction, "h", t)], outputs[:, t, 4 * d : 4 * (d + 1)])
    handle.remove()
    seen.clear()
    net(x)
    assert not seen


def test_bad_names_raise_with_expected_values():
    with pytest.raises(ValueError, match="unknown mode 'TRANSFORMER'.*RNN_TANH"):
        RNNModel("TRANSFORMER", 4, 5)
    with pytest.raises(ValueError, match="unknown mode 'RNN_SWISH'"):
        RNNModel("RNN_SWISH", 4, 5)
    with pytest.raises(ValueError, match="unknown bidirectional choice 'both'.*separate"):
        RNNModel("GRU", 4, 5, bidirectional="both")
    with pytest.raises(ValueError, match="unknown init scheme 'xavier'.*orthogonal"):
        RNNModel("GRU", 4, 5, init="xavier")
    with pytest.raises(ValueError, match="unknown readout 'max'"):
        RNNModel("GRU", 4, 5, readout="max")
    with pytest.raises(ValueError, match="num_layers must be a positive integer, got 0"):
        RNNModel("GRU", 4, 5, num_layers=0)


def test_bad_input_shapes_raise_with_expected_and_actual():
    model = RNNModel("LSTM", 4, 5, 2, True, 3)
    with pytest.raises(ValueError, match=r"shape \(batch, time, features=4\), got a 2-d tensor of shape \(6, 4\)"):
        model(torch.randn(6, 4))
    with pytest.raises(ValueError, match=r"expected 4 features per timestep.*got 7"):
        model(torch.randn(2, 6, 7))
    with pytest.raises(ValueError, match=r"initial state of shape \(2, 2, 5\)"):
        model(torch.randn(2, 6, 4), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)))


@pytest.mark.parametrize("mode,bidirectional", [("LSTM", "interleaved"), ("GRU", "separate"), ("RNN_TANH", "none")])
def test_trajectories_are_the_states_the_network_computes_and_their_inputs(mode, bidirectional):
    generator = torch.Generator().manual_seed(2)
    net = RecurrentNet(mode, 3, 4, 3, bidirectional=bidirectional).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=generator)
    hx = _random_state(mode, 3 * net.num_directions, 2, 4, generator)
    states = {}
    net.add_state_observer(lambda key, t: states.__setitem__((key.layer, key.direction, key.state, key.timestep), t))
    with torch.no_grad():
        outputs, _ = net(x, hx)
        trajectories = net.trajectories(x, hx)
    assert list(trajectories) == [(layer, d) for layer in range(3) for d in net.directions]
    for (layer, direction), trajectory in trajectories.items():
        assert trajectory.cell is net.cell(layer, direction) and trajectory.reverse == (direction == "backward")
        for name in ("h", "c") if mode == "LSTM" else ("h",):
            expected = torch.stack([states[(layer, direction, name, t)] for t in range(5)], dim=1)
            torch.testing.assert_close(getattr(trajectory, name), expected, rtol=0, atol=0)
        # What a layer reads is what the layers below output (forward first when interleaved).
        if layer == 0:
            assert trajectory.inputs is x
        elif bidirectional == "interleaved":
            below = torch.cat([trajectories[(layer - 1, d)].h for d in net.directions], dim=2)
            torch.testing.assert_close(trajectory.inputs, below, rtol=0, atol=0)
        else:
            torch.testing.assert_close(trajectory.inputs, trajectories[(layer - 1, direction)].h, rtol=0, atol=0)
        # The state each step read: the initial state first, then the previous one in reading order.
        index = layer * net.num_directions + net.directions.index(direction)
        initial = torch.cat([hx[0][index], hx[1][index]], dim=1) if mode == "LSTM" else hx[index]
        previous = trajectory.previous()
        first, rest = (4, range(4)) if trajectory.reverse else (0, range(1, 5))
        torch.testing.assert_close(previous[:, first], initial, rtol=0, atol=0)
        for t in rest:
            torch.testing.assert_close(previous[:, t], trajectory.states[:, t + 1 if trajectory.reverse else t - 1])
    torch.testing.assert_close(outputs[..., :4], trajectories[(2, "forward")].h, rtol=0, atol=0)
