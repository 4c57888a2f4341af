"""Shared helpers of the training and sweep tests."""

from __future__ import annotations

from gradlab.training import Callback


class InterruptAfterEpoch(Callback):
    """Raises KeyboardInterrupt after epoch ``epoch``'s checkpoint is written, as a killed run would stop."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state) -> None:
        if state.epoch == self.epoch:
            raise KeyboardInterrupt
