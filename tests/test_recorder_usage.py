"""GradientRecorder as a newcomer meets it: defaults, positional steps, the module's example, torch modules."""

import re

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradlab.instruments.recorder as recorder_module
from gradlab.instruments.recorder import DEFAULT_RUN_INFO, GradientRecorder
from gradlab.nn.models import RNNModel
from gradlab.store import schema


def _model():
    return RNNModel("GRU", 3, 4, 2, True, 2, generator=torch.Generator().manual_seed(0)).double()


def _backward(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 3, dtype=torch.float64, generator=generator)
    F.cross_entropy(model(x), torch.tensor([0, 1, 1])).backward()


def test_module_docstring_example_runs_as_written(tmp_path, monkeypatch):
    example = re.search(r"Usage in a training loop::\n\n(.*?)\n\S", recorder_module.__doc__, re.S).group(1)
    code = "\n".join(line[4:] for line in example.splitlines())
    assert "write_table" in code and "save_frame" not in code
    monkeypatch.setattr("tempfile.mkdtemp", lambda: str(tmp_path))
    namespace = {}
    exec(compile(code, "recorder docstring", "exec"), namespace)
    frame = namespace["frame"]
    assert len(frame) == 20 and sorted(frame.step.unique()) == [0, 10]  # what the example's comment says
    saved = pd.read_parquet(tmp_path / "gradients.parquet")
    assert list(saved.columns) == list(schema.GRADIENTS) and len(saved) == 20


def test_recorder_without_run_info_and_with_positional_step():
    model = _model()
    recorder = GradientRecorder(model)
    with recorder.record():
        _backward(model)
    with recorder.record(4, 1):
        _backward(model)
    with recorder.maybe_record(3):  # every=10: not recorded
        _backward(model)
    frame = recorder.frame()
    assert list(frame.columns) == list(schema.GRADIENTS)
    assert (frame.run_id == DEFAULT_RUN_INFO["run_id"]).all() and (frame.seed == DEFAULT_RUN_INFO["seed"]).all()
    assert (frame.cell == "GRU").all() and (frame.activation == "tanh").all()
    assert sorted(set(zip(frame.step, frame.epoch))) == [(0, 0), (4, 1)]
    # The defaults are only defaults: what is given wins, and the rest is filled in.
    partial = GradientRecorder(model, run_info={"run_id": "mine"})
    assert partial.run_info == {"run_id": "mine", "seed": -1, "cell": "GRU", "activation": "tanh"}


@pytest.mark.parametrize("step,epoch", [(-1, 0), (0, 1.5), (True, 0), ("3", 0)])
def test_bad_step_or_epoch_is_named(step, epoch):
    recorder = GradientRecorder(_model())
    with pytest.raises(ValueError, match="must be an integer >= 0"):
        with recorder.record(step, epoch):
            pass


@pytest.mark.parametrize("module", [nn.LSTM(3, 4), nn.GRU(3, 4, batch_first=True), nn.RNN(3, 4)])
def test_torch_module_gets_the_way_to_measure_it(module):
    with pytest.raises(TypeError, match=r"record_gradients\(module, x\).*RecurrentNet.from_torch"):
        GradientRecorder(module)
