"""Each gradlab cell against torch.nn's cell with the same weights (float64)."""

import pytest
import torch
from torch import nn

from gradlab.nn.cells import ACTIVATIONS, GRUCell, LSTMCell, RNNCell, get_activation

TOL = dict(rtol=0, atol=1e-12)

# (our cell factory, torch cell factory)
CASES = {
    "rnn_tanh": (lambda i, h, b: RNNCell(i, h, b, "tanh"), lambda i, h, b: nn.RNNCell(i, h, b, "tanh")),
    "rnn_relu": (lambda i, h, b: RNNCell(i, h, b, "relu"), lambda i, h, b: nn.RNNCell(i, h, b, "relu")),
    "lstm": (LSTMCell, nn.LSTMCell),
    "gru": (GRUCell, nn.GRUCell),
}


def _pair(name, bias, seed=0):
    ours_factory, torch_factory = CASES[name]
    torch.manual_seed(seed)
    reference = torch_factory(5, 4, bias).double()
    ours = ours_factory(5, 4, bias).double()
    ours.load_state_dict(reference.state_dict())  # names and shapes match 1:1
    return ours, reference


def _state(name, batch, generator):
    h = torch.randn(batch, 4, dtype=torch.float64, generator=generator)
    if name == "lstm":
        return h, torch.randn(batch, 4, dtype=torch.float64, generator=generator)
    return h


def _loss(output, generator):
    outputs = output if isinstance(output, tuple) else (output,)
    weights = [torch.randn(o.shape, dtype=o.dtype, generator=generator) for o in outputs]
    return sum((w * o).sum() for w, o in zip(weights, outputs))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cell_matches_torch_outputs_and_gradients(name, bias):
    ours, reference = _pair(name, bias)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, dtype=torch.float64, generator=generator)
    state = _state(name, 3, generator)
    outputs = []
    for module in (ours, reference):
        out = module(x, state)
        loss = _loss(out, torch.Generator().manual_seed(2))
        grads = torch.autograd.grad(loss, list(module.parameters()))
        outputs.append((out if isinstance(out, tuple) else (out,), grads))
    (ours_out, ours_grads), (ref_out, ref_grads) = outputs
    for a, b in zip(ours_out, ref_out):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cell_default_state_is_zero(name):
    ours, reference = _pair(name, True)
    x = torch.randn(2, 5, dtype=torch.float64)
    a, b = ours(x), reference(x)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        torch.testing.assert_close(u, v, **TOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cell_gradcheck(name):
    ours, _ = _pair(name, True)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    state = _state(name, 2, generator)
    if name == "lstm":
        h, c = (s.requires_grad_() for s in state)
        assert torch.autograd.gradcheck(lambda x, h, c: ours(x, (h, c)), (x, h, c))
    else:
        h = state.requires_grad_()
        assert torch.autograd.gradcheck(lambda x, h: ours(x, h), (x, h))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_rnn_cell_activation_matches_formula(activation):
    cell = RNNCell(3, 4, nonlinearity=activation).double()
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    pre = x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    expected = {
        "tanh": torch.tanh(pre), "relu": pre.clamp_min(0), "sigmoid": 1 / (1 + torch.exp(-pre)),
        "leaky_relu": torch.where(pre > 0, pre, 0.01 * pre), "identity": pre,
        "gelu": 0.5 * pre * (1 + torch.erf(pre / 2 ** 0.5)), "elu": torch.where(pre > 0, pre, torch.expm1(pre)),
        "softplus": torch.log1p(torch.exp(pre)),
    }[activation]
    torch.testing.assert_close(cell(x, h), expected, **TOL)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: cell(x, h), (x,))


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
def test_preactivations_reproduce_step(name):
    ours, _ = _pair(name, True)
    x = torch.randn(3, 5, dtype=torch.float64)
    state = _state(name, 3, torch.Generator().manual_seed(4))
    pre = ours.preactivations(ours.project_input(x), state)
    if name == "lstm":
        c = torch.sigmoid(pre["f"]) * state[1] + torch.sigmoid(pre["i"]) * torch.tanh(pre["g"])
        torch.testing.assert_close(ours(x, state)[1], c, **TOL)
        torch.testing.assert_close(ours(x, state)[0], torch.sigmoid(pre["o"]) * torch.tanh(c), **TOL)
    elif name == "gru":
        z = torch.sigmoid(pre["z"])
        torch.testing.assert_close(ours(x, state), (1 - z) * torch.tanh(pre["n"]) + z * state, **TOL)
    else:
        torch.testing.assert_close(ours(x, state), torch.tanh(pre["h"]), **TOL)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'swish'.*tanh"):
        RNNCell(3, 4, nonlinearity="swish")
    with pytest.raises(ValueError, match="unknown activation"):
        get_activation("Tanh")


def test_cell_rejects_bad_sizes_and_shapes():
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        LSTMCell(3, 0)
    cell = GRUCell(3, 4)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 3\), got \(2, 5\)"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"expects hx of shape \(2, 4\)"):
        cell(torch.randn(2, 3), torch.randn(2, 5))


def test_config_names_every_activation():
    from gradlab.config import ACTIVATION_NAMES
    from gradlab.nn.cells import ACTIVATIONS

    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
