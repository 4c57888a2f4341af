"""gradlab: gradient dynamics in recurrent networks.

The names most uses start from, importable from ``gradlab`` itself:

- :func:`record_gradients`: the gradient norm at every timestep of one forward
  and backward pass, of a gradlab model or a ``torch.nn.RNN``/``LSTM``/``GRU``;
- :class:`RNNModel` and :class:`GradientRecorder`: a classifier built from
  gradlab's cells, and the recorder that watches it through training;
- :func:`train_run`: one run into a run folder; :func:`load_runs`: saved runs as
  DataFrames; :func:`lyapunov_spectrum`: a model's Lyapunov exponents.

They load on first use, so ``import gradlab`` (and the torch-free
:mod:`gradlab.analysis`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    "GradientRecorder": "gradlab.instruments.recorder",
    "RNNModel": "gradlab.nn.models",
    "load_runs": "gradlab.analysis",
    "lyapunov_spectrum": "gradlab.instruments.lyapunov",
    "record_gradients": "gradlab.instruments.measure",
    "train_run": "gradlab.training",
}
__all__ = ["__version__", *sorted(_WHERE)]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'gradlab' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    """The module's names, the lazily loaded ones included."""
    return sorted(set(globals()) | set(__all__))
