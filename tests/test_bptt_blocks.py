"""The LSTM and GRU backward passes work in blocks of timesteps: the same gradients whatever the block.

The recorded dL/dh_t (and dL/dc_t) are the same bit for bit; the parameter gradients, summed block by block,
to rounding.
"""

import pytest
import torch

import gradlab.nn.bptt.functions as functions
from gradlab.nn.bptt import bptt_unroll
from gradlab.nn.cells import GRUCell, LSTMCell
from gradlab.nn.models import unroll_direction


def _loss(out, final, weights):
    finals = final if isinstance(final, tuple) else (final,)
    return (weights * out).sum() + finals[0].square().sum() + sum((state * 0.5).sum() for state in finals[1:])


def _gradients(cell, x, state, reverse, weights):
    seen = []
    out, final = bptt_unroll(cell, x, state, reverse=reverse,
                             on_grad=lambda t, name, grad: seen.append((t, name, grad.clone())))
    inputs = [x, *(state if isinstance(state, tuple) else (state,)), *cell.parameters()]
    return torch.autograd.grad(_loss(out, final, weights), inputs), seen


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_gradients_are_the_same_whatever_the_block(mode, reverse, monkeypatch):
    torch.manual_seed(0)
    cell = (LSTMCell if mode == "LSTM" else GRUCell)(3, 4).double()
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 11, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    parts = [torch.randn(2, 4, dtype=torch.float64, generator=generator, requires_grad=True) for _ in range(2)]
    state = tuple(parts) if mode == "LSTM" else parts[0]
    weights = torch.randn(2, 11, 4, dtype=torch.float64, generator=generator)
    whole, seen_whole = _gradients(cell, x, state, reverse, weights)  # one block: T <= FACTOR_BLOCK
    calls = []
    name = "lstm_factors" if mode == "LSTM" else "gru_factors"
    factors = getattr(functions, name)
    monkeypatch.setattr(functions, name,
                        lambda *args, **kwargs: calls.append(args[0].shape[0]) or factors(*args, **kwargs))
    monkeypatch.setattr(functions, "FACTOR_BLOCK", 4)
    blocked, seen_blocked = _gradients(cell, x, state, reverse, weights)
    assert calls == [4, 4, 3]  # blocks of the backward loop's order: steps 10-7, 6-3, 2-0 (0-3, 4-7, 8-10 reversed)
    for a, b in zip(whole, blocked):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)
    assert [(t, name) for t, name, _ in seen_blocked] == [(t, name) for t, name, _ in seen_whole]
    assert len(seen_whole) == 11 * (2 if mode == "LSTM" else 1)
    assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(seen_whole, seen_blocked))
    # and both are the plain autograd unroll's gradients
    out, final = unroll_direction(cell, x, state, reverse=reverse)
    inputs = [x, *(state if isinstance(state, tuple) else (state,)), *cell.parameters()]
    for a, b in zip(torch.autograd.grad(_loss(out, final, weights), inputs), blocked):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
