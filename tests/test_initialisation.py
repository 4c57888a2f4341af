"""Initialisation schemes: each sets what its paper prescribes, and nothing else breaks."""

import math

import pytest
import torch

from gradlab.nn.cells import GRUCell, LSTMCell, RNNCell
from gradlab.nn.initialisation import initialise_
from gradlab.nn.models import RNNModel


def test_default_is_torch_uniform_and_seeded():
    a = initialise_(LSTMCell(3, 16), generator=torch.Generator().manual_seed(0))
    b = initialise_(LSTMCell(3, 16), generator=torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(16)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
        assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound


@pytest.mark.parametrize("cell", [RNNCell(3, 8), LSTMCell(3, 8), GRUCell(3, 8)])
def test_orthogonal_recurrent_blocks(cell):
    initialise_(cell, "orthogonal", generator=torch.Generator().manual_seed(1))
    for block in cell.weight_hh.detach().split(8):
        torch.testing.assert_close(block @ block.T, torch.eye(8), atol=1e-5, rtol=0)


def test_identity_is_irnn():
    cell = initialise_(RNNCell(3, 5, nonlinearity="relu"), "identity")
    assert torch.equal(cell.weight_hh, torch.eye(5))
    assert not cell.bias_ih.any() and not cell.bias_hh.any()
    # A ReLU IRNN copies a non-negative state forward when the input is zero.
    h = torch.rand(2, 5)
    torch.testing.assert_close(cell(torch.zeros(2, 3), h), h)
    with pytest.raises(ValueError, match="'identity'.*RNN cells, not LSTMCell"):
        initialise_(LSTMCell(3, 5), "identity")


def test_forget_bias_sets_total_forget_bias():
    cell = initialise_(LSTMCell(3, 5), "orthogonal+forget_bias", forget_bias=1.0)
    f = cell.chunk("f")
    torch.testing.assert_close(cell.bias_ih[f] + cell.bias_hh[f], torch.ones(5))
    # Gate pre-activation at zero input and state is exactly the bias.
    pre = cell.preactivations(cell.project_input(torch.zeros(1, 3)), cell.zero_state(1, torch.zeros(1)))
    torch.testing.assert_close(pre["f"], torch.ones(1, 5))
    with pytest.raises(ValueError, match="applies to LSTM cells, not GRUCell"):
        initialise_(GRUCell(3, 5), "forget_bias")
    with pytest.raises(ValueError, match="bias=False"):
        initialise_(LSTMCell(3, 5, bias=False), "forget_bias")


def test_chrono_lstm_and_gru():
    t_max = 100
    lstm = initialise_(LSTMCell(3, 400), "chrono", chrono_t_max=t_max, generator=torch.Generator().manual_seed(0))
    total = lstm.bias_ih + lstm.bias_hh
    forget, inputs = total[lstm.chunk("f")], total[lstm.chunk("i")]
    assert forget.min() >= 0 and forget.max() <= math.log(t_max - 1)
    assert forget.max() > 0.9 * math.log(t_max - 1)  # spread up to log(T_max - 1)
    torch.testing.assert_close(inputs, -forget)
    gru = initialise_(GRUCell(3, 50), "chrono", chrono_t_max=t_max)
    z = (gru.bias_ih + gru.bias_hh)[gru.chunk("z")]
    assert z.min() >= 0 and z.max() <= math.log(t_max - 1)
    with pytest.raises(ValueError, match="chrono_t_max >= 2"):
        initialise_(LSTMCell(3, 5), "chrono")


def test_model_init_is_reproducible_from_generator():
    a = RNNModel("LSTM", 3, 4, 2, init="orthogonal+forget_bias", generator=torch.Generator().manual_seed(5))
    b = RNNModel("LSTM", 3, 4, 2, init="orthogonal+forget_bias", generator=torch.Generator().manual_seed(5))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
