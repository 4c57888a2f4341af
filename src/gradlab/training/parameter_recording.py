"""The ``parameter_gradients`` table in training runs (``TrainConfig.record_parameters``).

:class:`ParameterRecording` is the gradient recorder with ``parameters=True``: on the same steps as
the ``gradients`` table (every ``record_every`` steps and the final model's fixed batch) it also
records, per unit, the gradient norm of the parameters that set the unit's memory and the memory
itself (:mod:`gradlab.instruments.parameters`). It takes the plain recorder's place, and its
checkpoint entry, so a run resumes exactly as one without it does: rows of the epochs a checkpoint
covers are read back from the run folder, the rest are recorded again.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pandas as pd

from gradlab.instruments.recorder import GradientRecorder
from gradlab.training.callbacks import GradientRecording, _saved_rows, combine
from gradlab.training.loop import TrainState


class ParameterRecording(GradientRecording):
    """:class:`GradientRecording` plus the ``parameter_gradients`` table."""

    state_key = "GradientRecording"  # the plain recorder's checkpoint entry: the two resume each other's runs

    def __init__(self, state: TrainState, every: int) -> None:
        super().__init__(state, every)
        self.recorder = GradientRecorder(state.model, every=every, run_info=state.run_info, parameters=True)
        self.parameter_frames: list[pd.DataFrame] = []

    def step_context(self, state: TrainState) -> contextlib.AbstractContextManager:
        inputs = state.batch[0] if state.batch is not None else None
        return self.recorder.maybe_record(step=state.step, epoch=state.epoch, inputs=inputs)

    def tables(self) -> dict[str, pd.DataFrame]:
        # The recorder's rows move into the frames here (GradientRecording.tables clears it), so read them first.
        self.parameter_frames = [combine([*self.parameter_frames, self.recorder.parameter_frame()],
                                         "parameter_gradients")]
        return {**super().tables(), "parameter_gradients": self.parameter_frames[0]}

    def load_state_dict(self, saved: dict[str, Any], state: TrainState) -> None:
        super().load_state_dict(saved, state)
        frame = _saved_rows(state, "parameter_gradients")
        self.parameter_frames = [frame[frame["step"] < state.step].reset_index(drop=True)]
