"""The hand-written BPTT layers: gradcheck, and the same gradients as plain autograd."""

import pytest
import torch

from gradlab.nn.bptt import bptt_unroll, has_handwritten_backward
from gradlab.nn.cells import GRUCell, LSTMCell, RNNCell
from gradlab.nn.models import RecurrentNet, StateKey, unroll_direction

CELLS = {
    "lstm": lambda: LSTMCell(3, 4),
    "gru": lambda: GRUCell(3, 4),
    "rnn_tanh": lambda: RNNCell(3, 4, nonlinearity="tanh"),
    "rnn_relu": lambda: RNNCell(3, 4, nonlinearity="relu"),
    "gru_nobias": lambda: GRUCell(3, 4, bias=False),
}


def _state(cell, batch, generator, requires_grad=False):
    make = lambda: torch.randn(batch, 4, dtype=torch.float64, generator=generator, requires_grad=requires_grad)  # noqa: E731
    return (make(), make()) if isinstance(cell, LSTMCell) else make()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_bptt_gradcheck(name, reverse):
    torch.manual_seed(0)
    cell = CELLS[name]().double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    state = _state(cell, 2, generator, requires_grad=True)
    params = [p for p in cell.parameters()]
    flat_state = state if isinstance(state, tuple) else (state,)

    def run(x, *state_parts):
        st = state_parts if len(state_parts) == 2 else state_parts[0]
        out, final = bptt_unroll(cell, x, st, reverse=reverse)
        return (out, *(final if isinstance(final, tuple) else (final,)))

    assert torch.autograd.gradcheck(run, (x, *flat_state))
    # Parameter gradients: the plain autograd unroll (itself checked against torch.nn).
    out_f, final_f = bptt_unroll(cell, x, state, reverse=reverse)
    out_a, final_a = unroll_direction(cell, x, state, reverse=reverse)
    weights = torch.randn(out_f.shape, dtype=torch.float64, generator=generator)
    finals = lambda f: f if isinstance(f, tuple) else (f,)  # noqa: E731
    loss_f = (weights * out_f).sum() + sum(s.square().sum() for s in finals(final_f))
    loss_a = (weights * out_a).sum() + sum(s.square().sum() for s in finals(final_a))
    inputs = [x, *flat_state, *params]
    for a, b in zip(torch.autograd.grad(loss_f, inputs), torch.autograd.grad(loss_a, inputs)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_has_handwritten_backward():
    assert has_handwritten_backward(LSTMCell(2, 2)) and has_handwritten_backward(GRUCell(2, 2)) and has_handwritten_backward(RNNCell(2, 2, nonlinearity="relu"))
    assert not has_handwritten_backward(RNNCell(2, 2, nonlinearity="gelu"))
    with pytest.raises(ValueError, match="no hand-written backward"):
        bptt_unroll(RNNCell(2, 2, nonlinearity="gelu"), torch.randn(1, 2, 2), torch.zeros(1, 2), reverse=False)


@pytest.mark.parametrize("bidirectional", ["none", "interleaved", "separate"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_gradient_observer_gives_total_state_gradients_on_both_paths(mode, bidirectional):
    torch.manual_seed(0)
    net = RecurrentNet(mode, 3, 4, 2, True, bidirectional).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    weights = torch.randn(2, 5, net.output_size, dtype=torch.float64)

    # Independent computation: retain every state on the autograd path, then autograd.grad.
    states: dict[StateKey, torch.Tensor] = {}
    handle = net.add_state_observer(lambda key, tensor: states.__setitem__(key, tensor))
    out, _ = net(x)
    handle.remove()
    keys = list(states)
    expected = dict(zip(keys, torch.autograd.grad((weights * out).sum(), [states[k] for k in keys])))

    for handwritten_bptt in (True, False):
        net.handwritten_bptt = handwritten_bptt
        seen: dict[StateKey, torch.Tensor] = {}
        handle = net.add_gradient_observer(lambda key, grad: seen.__setitem__(key, grad.clone()))
        out, _ = net(x)
        (weights * out).sum().backward()
        handle.remove()
        assert set(seen) == set(expected)
        for key in keys:
            torch.testing.assert_close(seen[key], expected[key], rtol=0, atol=1e-12, msg=f"{key} handwritten_bptt={handwritten_bptt}")
