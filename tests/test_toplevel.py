"""The names ``gradlab`` itself offers load lazily, are the real objects, and show in help(gradlab)."""

import pydoc

import pandas as pd
import pytest
import torch

import gradlab
from gradlab.analysis import load_runs
from gradlab.instruments.lyapunov import lyapunov_spectrum
from gradlab.instruments.measure import record_gradients
from gradlab.instruments.recorder import GradientRecorder
from gradlab.nn.models import RNNModel
from gradlab.training import train_run

NAMES = {"GradientRecorder": GradientRecorder, "RNNModel": RNNModel, "record_gradients": record_gradients,
         "train_run": train_run, "load_runs": load_runs, "lyapunov_spectrum": lyapunov_spectrum}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_top_level_name_is_the_defined_object(name):
    assert getattr(gradlab, name) is NAMES[name]
    assert name in gradlab.__all__ and name in dir(gradlab)


def test_unknown_names_fail_clearly():
    # That `import gradlab` alone does not import torch is tests/test_layout.py's.
    with pytest.raises(AttributeError, match="has no attribute 'Missing'"):
        gradlab.Missing


def test_help_shows_every_top_level_name():
    text = pydoc.render_doc(gradlab, renderer=pydoc.plaintext)
    assert "class GradientRecorder" in text and "class RNNModel" in text
    for name in ("record_gradients", "train_run", "load_runs", "lyapunov_spectrum"):
        assert f"\n    {name}(" in text, name  # listed with its signature under FUNCTIONS


def test_top_level_names_work_together():
    model = gradlab.RNNModel("RNN_TANH", 2, 3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 4, 2)
    frame = gradlab.record_gradients(model, x)
    recorder = gradlab.GradientRecorder(model)
    with recorder.record():
        model.rnn(x)[0][:, -1].sum().backward()  # record_gradients' default loss, written out
    pd.testing.assert_frame_equal(recorder.frame(), frame)
    spectrum = gradlab.lyapunov_spectrum(model, x)
    assert isinstance(spectrum, pd.DataFrame) and len(spectrum) > 0
