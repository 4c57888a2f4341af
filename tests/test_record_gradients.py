"""record_gradients against torch.autograd.grad through torch's own cells, unrolled by hand."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradlab
from gradlab.instruments.measure import record_gradients
from gradlab.nn.models import RNNModel, load_torch_weights
from gradlab.store import schema

KINDS = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
BATCH, STEPS, FEATURES, HIDDEN, LAYERS = 3, 5, 3, 4, 2


def _module(kind, *, bidirectional, batch_first, bias=True, layers=LAYERS, seed=0):
    torch.manual_seed(seed)
    options = dict(num_layers=layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    if kind.startswith("RNN"):
        module = nn.RNN(FEATURES, HIDDEN, nonlinearity=kind[4:].lower(), **options)
    else:
        module = getattr(nn, kind)(FEATURES, HIDDEN, **options)
    return module.double()


def _input(batch_first, seed=1):
    x = torch.randn(BATCH, STEPS, FEATURES, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return x if batch_first else x.transpose(0, 1).contiguous()


def _cell(module, layer, suffix):
    """torch's own cell for one layer and direction, holding the module's very parameters."""
    size = module.hidden_size * (2 if module.bidirectional else 1) if layer else module.input_size
    if isinstance(module, nn.LSTM):
        cell = nn.LSTMCell(size, module.hidden_size, bias=module.bias)
    elif isinstance(module, nn.GRU):
        cell = nn.GRUCell(size, module.hidden_size, bias=module.bias)
    else:
        cell = nn.RNNCell(size, module.hidden_size, bias=module.bias, nonlinearity=module.nonlinearity)
    for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if module.bias else ()):
        setattr(cell, name, getattr(module, f"{name}_l{layer}{suffix}"))
    return cell


def _unroll_by_hand(module, x):
    """(output in the module's layout, {(layer, direction, state, t): state tensor (B, H)})."""
    steps = list((x if not module.batch_first else x.transpose(0, 1)).unbind(0))  # T x (B, F)
    lstm = isinstance(module, nn.LSTM)
    states = {}
    for layer in range(module.num_layers):
        outputs = []
        for direction, suffix in [("forward", ""), ("backward", "_reverse")][: 1 + module.bidirectional]:
            cell = _cell(module, layer, suffix)
            h = c = torch.zeros(x.shape[0 if module.batch_first else 1], module.hidden_size, dtype=x.dtype)
            out = [None] * len(steps)
            order = range(len(steps)) if direction == "forward" else reversed(range(len(steps)))
            for t in order:
                if lstm:
                    h, c = cell(steps[t], (h, c))
                    states[(layer, direction, "c", t)] = c
                else:
                    h = cell(steps[t], h)
                states[(layer, direction, "h", t)] = h
                out[t] = h
            outputs.append(out)
        steps = [torch.cat([out[t] for out in outputs], dim=1) for t in range(len(steps))]
    output = torch.stack(steps, dim=1 if module.batch_first else 0)
    return output, states


def _reference_rows(loss, states):
    """{key: (grad_norm, grad_norm_per_sample, ratio_to_last)} from torch.autograd.grad."""
    keys = list(states)
    grads = torch.autograd.grad(loss, [states[key] for key in keys], allow_unused=True, retain_graph=True)
    norms = {}
    for key, grad in zip(keys, grads):
        grad = torch.zeros_like(states[key]) if grad is None else grad
        norms[key] = (grad.norm().item(), grad.shape[0] * grad.norm(dim=1).mean().item())
    last = {"forward": STEPS - 1, "backward": 0}
    return {
        key: (norm, per_sample, norm / norms[key[:3] + (last[key[1]],)][0] if norms[key[:3] + (last[key[1]],)][0]
              else np.nan)
        for key, (norm, per_sample) in norms.items()
    }


def _assert_matches(frame, reference, **constants):
    assert list(frame.columns) == list(schema.GRADIENTS)
    assert len(frame) == len(reference)
    for column, value in {"epoch": 0, "step": 0, **constants}.items():
        assert (frame[column] == value).all(), column
    for row in frame.itertuples(index=False):
        norm, per_sample, ratio = reference[(row.layer, row.direction, row.state, row.timestep)]
        assert row.grad_norm == pytest.approx(norm, rel=1e-10, abs=1e-13)
        assert row.grad_norm_per_sample == pytest.approx(per_sample, rel=1e-10, abs=1e-13)
        if np.isfinite(ratio):
            assert row.ratio_to_last == pytest.approx(ratio, rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("kind,bidirectional,batch_first",
                         list(itertools.product(KINDS, [False, True], [True, False])))
def test_torch_module_without_target_matches_cells_unrolled_by_hand(kind, bidirectional, batch_first):
    module = _module(kind, bidirectional=bidirectional, batch_first=batch_first)
    x = _input(batch_first)
    output, states = _unroll_by_hand(module, x)
    torch.testing.assert_close(output, module(x)[0], rtol=1e-12, atol=1e-12)  # the reference is torch's module
    loss = output[:, -1].sum() if batch_first else output[-1].sum()
    reference = _reference_rows(loss, states)
    assert len(reference) == LAYERS * (1 + bidirectional) * (2 if kind == "LSTM" else 1) * STEPS

    frame = record_gradients(module, x)
    _assert_matches(frame, reference, cell=kind, activation="relu" if kind == "RNN_RELU" else "tanh")
    if bidirectional:
        # Only the backward direction's first state reaches the last step's output in the top layer.
        top = frame[(frame.layer == LAYERS - 1) & (frame.direction == "backward")]
        assert (top[top.timestep < STEPS - 1].grad_norm == 0).all() and (top.grad_norm > 0).any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_module_with_target_and_loss_fn(kind, batch_first):
    module = _module(kind, bidirectional=True, batch_first=batch_first, bias=False)
    x = _input(batch_first)
    target = torch.randn(module(x)[0].shape, dtype=torch.float64)

    def loss_fn(output, y):
        return ((output - y) ** 3).abs().mean()  # time-weighted: every step's output enters the loss

    output, states = _unroll_by_hand(module, x)
    frame = record_gradients(module, x, target, loss_fn=loss_fn, run_info={"run_id": "a", "seed": 3}, step=7,
                             epoch=2)
    _assert_matches(frame, _reference_rows(loss_fn(output, target), states), run_id="a", seed=3, step=7, epoch=2)
    # Without loss_fn the default is the mean squared error against a target shaped like the output.
    _assert_matches(record_gradients(module, x, target), _reference_rows(F.mse_loss(output, target), states))


@pytest.mark.parametrize("kind", ["RNN_TANH", "LSTM"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_rnn_model_is_measured_on_its_logits_with_cross_entropy(kind, batch_first):
    module = _module(kind, bidirectional=True, batch_first=batch_first)
    model = RNNModel(kind, FEATURES, HIDDEN, LAYERS, output_size=3, bidirectional="interleaved",
                     batch_first=batch_first).double()
    load_torch_weights(model.rnn, module)
    x, y = _input(batch_first), torch.tensor([0, 2, 1])
    output, states = _unroll_by_hand(module, x)
    steps = output if batch_first else output.transpose(0, 1)  # (B, T, 2H)
    final = torch.cat([steps[:, -1, :HIDDEN], steps[:, 0, HIDDEN:]], dim=1)  # the "last" readout
    reference = _reference_rows(F.cross_entropy(model.fc(final), y), states)
    _assert_matches(record_gradients(model, x, y), reference)
    # Without y the head takes no part: the same loss as for the torch module.
    loss = steps[:, -1].sum()
    _assert_matches(record_gradients(model, x), _reference_rows(loss, states))
    # A RecurrentNet always reads batch-first input.
    _assert_matches(record_gradients(model.rnn, x if batch_first else x.transpose(0, 1)), _reference_rows(loss, states))


def test_nothing_of_the_caller_changes():
    module = _module("LSTM", bidirectional=False, batch_first=True)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    model = RNNModel("GRU", FEATURES, HIDDEN).double()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    record_gradients(module, _input(True))
    record_gradients(model, _input(True), torch.tensor([0, 1, 2]))
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)  # the global random stream did not move
    assert all(p.grad is None for p in module.parameters()) and all(p.grad is None for p in model.parameters())
    for name, p in module.named_parameters():
        assert torch.equal(p, before[name])


def test_inside_no_grad_and_with_frozen_parameters():
    module = _module("GRU", bidirectional=False, batch_first=True).requires_grad_(False)
    x = _input(True)
    with torch.no_grad():
        frame = record_gradients(module, x)
    module.requires_grad_(True)
    output, states = _unroll_by_hand(module, x)
    _assert_matches(frame, _reference_rows(output[:, -1].sum(), states))


def test_top_level_name_and_initial_state():
    module = _module("LSTM", bidirectional=False, batch_first=True, layers=1)
    x = _input(True)
    hx = (torch.randn(1, BATCH, HIDDEN, dtype=torch.float64), torch.randn(1, BATCH, HIDDEN, dtype=torch.float64))
    with_state = gradlab.record_gradients(module, x, hx=hx)
    without = gradlab.record_gradients(module, x)
    assert not np.allclose(with_state.grad_norm, without.grad_norm)
    assert isinstance(with_state, pd.DataFrame) and len(with_state) == 2 * STEPS


@pytest.mark.parametrize("make,x,message", [
    (lambda: nn.LSTM(FEATURES, HIDDEN, proj_size=2), torch.randn(STEPS, BATCH, FEATURES), "proj_size=0"),
    (lambda: nn.GRU(FEATURES, HIDDEN, num_layers=2, dropout=0.5), torch.randn(STEPS, BATCH, FEATURES), "eval()"),
    (lambda: nn.LSTM(FEATURES, HIDDEN), torch.randn(STEPS, FEATURES), "batch dimension"),
    (lambda: nn.LSTM(FEATURES, HIDDEN), torch.randn(STEPS, BATCH, FEATURES + 1), "features=3"),
    (lambda: nn.Linear(FEATURES, HIDDEN), torch.randn(STEPS, BATCH, FEATURES), "torch.nn.RNN, LSTM or GRU"),
])
def test_what_cannot_be_measured_says_what_to_do(make, x, message):
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        record_gradients(make(), x)


def test_dropout_in_eval_mode_is_measured():
    module = nn.GRU(FEATURES, HIDDEN, num_layers=2, dropout=0.5).double().eval()
    x = _input(False)
    output, states = _unroll_by_hand(module, x)
    _assert_matches(record_gradients(module, x), _reference_rows(output[-1].sum(), states))


def test_target_errors():
    module = nn.RNN(FEATURES, HIDDEN, batch_first=True).double()
    x = _input(True)
    with pytest.raises(TypeError, match="pass y too"):
        record_gradients(module, x, loss_fn=F.mse_loss)
    with pytest.raises(ValueError, match="pass loss_fn"):
        record_gradients(module, x, torch.zeros(BATCH))


@pytest.mark.parametrize("kind", KINDS)
def test_from_torch_computes_what_the_module_computes(kind):
    from gradlab.nn.network import RecurrentNet

    module = _module(kind, bidirectional=True, batch_first=False, bias=kind != "GRU")
    net = RecurrentNet.from_torch(module)
    assert net.bidirectional == "interleaved" and net.bias == module.bias
    assert next(net.parameters()).dtype == torch.float64
    x = _input(False)
    expected, expected_final = module(x)
    output, final = net(x.transpose(0, 1))
    torch.testing.assert_close(output.transpose(0, 1), expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(final if kind == "LSTM" else [final], expected_final if kind == "LSTM" else [expected_final]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        next(net.parameters()).add_(1.0)  # a copy: the module keeps its weights
    torch.testing.assert_close(module(x)[0], expected, rtol=0, atol=0)


def test_module_docstring_example_runs_as_written():
    import re

    import gradlab.instruments.measure as measure

    example = re.search(r"Example::\n\n(.*?)\n\"*$", measure.__doc__, re.S).group(1)
    code = "\n".join(line[4:] for line in example.splitlines())
    lines = code.strip().splitlines()
    namespace = {}
    exec(compile("\n".join(lines[:-1]) + f"\nresult = {lines[-1]}", "measure docstring", "exec"), namespace)
    assert len(namespace["df"]) == 2 * 2 * 50  # layers x states x timesteps
    assert list(namespace["result"].columns) == ["first", "last"] and len(namespace["result"]) == 4
