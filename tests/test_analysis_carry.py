"""The carry paths: the cell state's gradient against the product of the forget gates it crosses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from gradlab.analysis.carry import carry_profile
from gradlab.instruments.diagnostics import gate_statistics
from gradlab.instruments.recorder import GradientRecorder
from gradlab.nn.models import RNNModel

RUN = {"run_id": "r", "seed": 0}


def _profile(model, x, seq_len):
    recorder = GradientRecorder(model, every=1, run_info=RUN)
    with recorder.record(step=0, epoch=0):
        model(x).sum().backward()  # the loss attaches at the last step only
    gates = gate_statistics(model, x, run_info=RUN, step=0, epoch=0)
    summary = pd.DataFrame({"run_id": ["r"], "seq_len": [seq_len]})
    return carry_profile(recorder.frame(), gates, summary)


def test_without_recurrent_weights_the_cell_state_gradient_is_exactly_the_forget_product():
    # W_hh = 0 and a forget gate set by its bias alone: dL/dc_{t-1} = f_t * dL/dc_t, nothing else.
    torch.manual_seed(0)
    model = RNNModel("LSTM", 3, 4, 1, 2, generator=torch.Generator().manual_seed(0)).double()
    cell = model.rnn.cells[0]
    with torch.no_grad():
        cell.weight_hh.zero_()
        cell.weight_ih[cell.chunk("f")] = 0.0
        cell.bias_ih[cell.chunk("f")] = 0.8
        cell.bias_hh[cell.chunk("f")] = 0.0
    profile = _profile(model, torch.randn(5, 9, 3, dtype=torch.float64), 9)
    f = 1 / (1 + np.exp(-0.8))
    np.testing.assert_allclose(profile["gate_product"], f ** profile["distance"], rtol=1e-12)
    np.testing.assert_allclose(profile["carried"], profile["gate_product"], rtol=1e-10)
    assert profile["distance"].tolist() == list(range(9))
    assert (profile["hidden"].iloc[1:] == 0).all()  # no path back through h when W_hh = 0


def test_opening_the_forget_gate_raises_both_the_product_and_the_cell_state_gradient():
    x = torch.randn(16, 30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    far = {}
    for shift in (0.0, 1.0):
        model = RNNModel("LSTM", 3, 32, 1, 2, generator=torch.Generator().manual_seed(1)).double()
        cell = model.rnn.cells[0]
        with torch.no_grad():
            cell.bias_ih[cell.chunk("f")] += shift
        far[shift] = _profile(model, x, 30).set_index("distance").loc[29]
    # Default init: f is about 1/2, so 29 steps of it give about 1e-9; a bias of +1 gives about 1e-4.
    assert 1e-10 < far[0.0]["gate_product"] < 1e-7 and 1e-5 < far[1.0]["gate_product"] < 1e-3
    assert far[1.0]["carried"] > 100 * far[0.0]["carried"]
    # At random weights the paths through h and the gates add to the forget path: the measured
    # cell-state gradient is never below the product of mean forget gates here.
    assert far[0.0]["carried"] > far[0.0]["gate_product"] and far[1.0]["carried"] > far[1.0]["gate_product"]


def test_gru_carry_gate_is_z():
    model = RNNModel("GRU", 3, 8, 1, 2, generator=torch.Generator().manual_seed(3)).double()
    profile = _profile(model, torch.randn(4, 6, 3, dtype=torch.float64), 6)
    assert set(profile["cell"]) == {"GRU"}
    np.testing.assert_allclose(profile["carried"], profile["hidden"])
    assert profile.loc[profile.distance == 0, "gate_product"].item() == 1.0
