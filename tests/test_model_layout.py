"""RNNModel's input layout: batch_first, and a clear error for an input of the wrong shape."""

import pytest
import torch

from gradlab.nn.models import RNNModel


def _pair(readout, **options):
    """A batch-first model and a time-major one with the same weights."""
    first = RNNModel("GRU", 5, 4, 2, True, 3, readout=readout, generator=torch.Generator().manual_seed(0)).double()
    major = RNNModel("GRU", 5, 4, 2, True, 3, readout=readout, batch_first=False, **options).double()
    major.load_state_dict(first.state_dict())
    return first, major


@pytest.mark.parametrize("readout", ["last", "mean", "sequence"])
def test_time_major_model_equals_batch_first_on_transposed_input(readout):
    first, major = _pair(readout)
    x = torch.randn(6, 7, 5, dtype=torch.float64)  # (B, T, F)
    expected = first(x)
    got = major(x.transpose(0, 1))  # (T, B, F)
    if readout == "sequence":
        assert got.shape == (7, 6, 3)  # per-step logits follow the input's layout, as torch.nn.LSTM's output does
        got = got.transpose(0, 1)
    else:
        assert got.shape == (6, 3)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_batch_first_is_keyword_only_and_true_by_default():
    model = RNNModel("LSTM", 20, 8, 1, True, 3)
    assert model.batch_first is True
    assert model(torch.randn(50, 16, 20)).shape == (50, 3)
    with pytest.raises(TypeError):
        RNNModel("LSTM", 20, 8, 1, True, 3, "none")  # bidirectional and everything after stay keywords
    with pytest.raises(ValueError, match="batch_first must be True or False"):
        RNNModel("LSTM", 20, 8, batch_first="yes")


def test_time_major_input_to_a_time_major_model_gives_one_row_per_sequence():
    # The input that a batch-first model reads as 50 sequences of 16 steps.
    model = RNNModel("LSTM", 20, 8, batch_first=False)
    assert model(torch.randn(50, 16, 20)).shape == (16, 3)


@pytest.mark.parametrize("batch_first,shape,layout", [
    (True, (50, 16, 21), r"expected 20 features.*\(batch, time, features=20\).*got 21.*batch_first=False"),
    (True, (16, 20), r"\(batch, time, features=20\), got a 2-d tensor of shape \(16, 20\).*batch dimension"),
    (False, (50, 16, 2), r"\(time, batch, features=20\), batch_first=False\), got 2.*batch_first=True"),
    (True, (2, 50, 16, 20), r"got a 4-d tensor of shape \(2, 50, 16, 20\)"),
])
def test_wrong_input_shape_names_the_expected_layout(batch_first, shape, layout):
    model = RNNModel("RNN_TANH", 20, 8, batch_first=batch_first)
    with pytest.raises(ValueError, match=layout):
        model(torch.randn(*shape))
    with pytest.raises(ValueError, match=layout):
        model.features(torch.randn(*shape))
