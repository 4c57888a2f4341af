"""GradientRecorder(parameters=True): per-unit gradients of the memory parameters against torch.autograd.grad."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlab.instruments.recorder import GradientRecorder
from gradlab.nn.models import RNNModel
from gradlab.store import schema

RUN = {"run_id": "test", "seed": 0}


def _expected(model, loss):
    """{(layer, parameter): (H,) norms}, computed here from autograd.grad of the named tensors."""
    out = {}
    for layer in range(model.rnn.num_layers):
        cell = model.rnn.cell(layer)
        hidden = cell.hidden_size
        if model.mode == "LRU":
            grads = torch.autograd.grad(loss, [cell.nu_log, cell.theta_log], retain_graph=True)
            out.update({(layer, "nu_log"): grads[0].abs(), (layer, "theta_log"): grads[1].abs()})
        elif model.mode in ("MINGRU", "MINLSTM"):
            weight, bias = torch.autograd.grad(loss, [cell.weight_ih, cell.bias_ih], retain_graph=True)
            joined = torch.cat([weight, bias[:, None]], dim=1)  # (G*H, I+1)
            for index, gate in enumerate(("z",) if model.mode == "MINGRU" else ("f", "i")):
                out[(layer, gate)] = joined[index * hidden : (index + 1) * hidden].norm(dim=1)
        else:
            (grad,) = torch.autograd.grad(loss, [cell.weight_hh], retain_graph=True)
            if grad.dim() == 1:  # DIAGONAL's lambda, INDRNN's u
                out[(layer, "weight_hh")] = grad.abs()
            else:  # unit i owns row i of every gate block
                out[(layer, "weight_hh")] = torch.stack([grad[i::hidden].norm() for i in range(hidden)])
    return out


@pytest.mark.parametrize("mode", ["DIAGONAL", "INDRNN", "MINGRU", "MINLSTM", "LRU", "LSTM", "GRU", "RNN_TANH"])
def test_parameter_rows_match_autograd(mode):
    model = RNNModel(mode, 3, 4, 2, output_size=3, generator=torch.Generator().manual_seed(0)).double()
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 6, 3, dtype=torch.float64, generator=generator), torch.tensor([0, 1, 2])
    recorder = GradientRecorder(model, every=1, run_info=RUN, parameters=True)
    for step in range(2):
        model.zero_grad()
        with recorder.record(step=step):
            F.cross_entropy(model(x), y).backward()
    frame = recorder.parameter_frame()
    assert list(frame.columns[: len(schema.PARAMETER_GRADIENTS)]) == list(schema.PARAMETER_GRADIENTS)
    expected = _expected(model, F.cross_entropy(model(x), y))
    assert len(frame) == 2 * sum(norms.numel() for norms in expected.values())
    for (layer, parameter), norms in expected.items():
        rows = frame[(frame.step == 1) & (frame.layer == layer) & (frame.parameter == parameter)].sort_values("unit")
        np.testing.assert_allclose(rows.grad_norm, norms.detach().numpy(), rtol=1e-12, atol=1e-300)


def test_parameter_rows_are_opt_in():
    model = RNNModel("GRU", 3, 4, 1, output_size=3)
    recorder = GradientRecorder(model, every=1, run_info=RUN)
    with recorder.record():
        F.cross_entropy(model(torch.randn(2, 5, 3)), torch.tensor([0, 1])).backward()
    assert recorder.parameter_frame().empty and len(recorder.frame())
