"""Shared helpers of the training and sweep tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from gradlab.training import Callback

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """An experiment script (``experiments/<name>.py``) as a module, without running it."""
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", REPO / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InterruptAfterEpoch(Callback):
    """Raises KeyboardInterrupt after epoch ``epoch``'s checkpoint is written, as a killed run would stop."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state) -> None:
        if state.epoch == self.epoch:
            raise KeyboardInterrupt
