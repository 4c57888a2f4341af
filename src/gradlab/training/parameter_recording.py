"""The ``parameter_gradients`` table in training runs (``TrainConfig.record_parameters``).

:class:`ParameterRecording` is the gradient recorder with ``parameters=True``: on the same steps as
the ``gradients`` table (every ``record_every`` steps and the final model's fixed batch) it also
records, per unit, the gradient norm of the parameters that set the unit's memory and the memory
itself (:mod:`gradlab.instruments.parameters`). It takes the plain recorder's place, and its
checkpoint entry, so a run resumes exactly as one without it does: the epoch checkpoint holds the
rows so far (:class:`gradlab.training.table_rows.TableRows`), the rest are recorded again.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pandas as pd

from gradlab.instruments.recorder import GradientRecorder
from gradlab.training.callbacks import GradientRecording, _saved_rows
from gradlab.training.loop import TrainState
from gradlab.training.table_rows import TableRows


class ParameterRecording(GradientRecording):
    """:class:`GradientRecording` plus the ``parameter_gradients`` table."""

    state_key = "GradientRecording"  # the plain recorder's checkpoint entry: the two resume each other's runs

    def __init__(self, state: TrainState, every: int) -> None:
        super().__init__(state, every)
        self.recorder = GradientRecorder(state.model, every=every, run_info=state.run_info, parameters=True)
        self.parameter_rows = TableRows("parameter_gradients")

    def step_context(self, state: TrainState) -> contextlib.AbstractContextManager:
        inputs = state.batch[0] if state.batch is not None else None
        return self.recorder.maybe_record(step=state.step, epoch=state.epoch, inputs=inputs)

    def collect(self) -> None:
        # Read the parameter rows first: GradientRecording.collect clears the recorder.
        self.parameter_rows.add(self.recorder.parameter_frame())
        super().collect()

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = super().tables()  # collects
        return {**tables, "parameter_gradients": self.parameter_rows.frame()}

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()  # collects
        return {**saved, "parameter_rows": self.parameter_rows.state_dict()}

    def load_state_dict(self, saved: dict[str, Any], state: TrainState) -> None:
        super().load_state_dict(saved, state)
        if "parameter_rows" in saved:
            self.parameter_rows.load_state_dict(saved["parameter_rows"])
        elif "rows" not in saved:  # a format-2 checkpoint: the rows it covers are in the run folder
            frame = _saved_rows(state, "parameter_gradients")
            self.parameter_rows.replace(frame[frame["step"] < state.step].reset_index(drop=True))
