"""The callbacks a run is assembled from: each one measurement, output or safeguard.

- :class:`History`: the training and validation rows of ``history``.
- :class:`Divergence`: stops the run before the update of a step whose loss or
  gradient norm is not finite.
- :class:`BestCheckpoint`: keeps the weights with the best validation accuracy
  (ties: lower loss; regression: lowest loss); the untrained model is no candidate.
- :class:`GradientRecording`: per-timestep gradient norms (``gradients``) every
  ``record_every`` steps, plus the final model's on a fixed training batch.
- :class:`Diagnostics`: gate statistics at init and every epoch end; Jacobian
  norms at init, every ``jacobian_every`` epochs and after the last epoch.
- :class:`~gradlab.training.epoch_checkpoint.EpochCheckpoint` (its own module)
  saves and restores the state of these callbacks.
- :class:`Progress` (:mod:`gradlab.training.progress`): a progress bar over
  the run's steps, or one line per epoch in a log.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from gradlab.data import TASK_REGRESSION, iterate_batches
from gradlab.instruments.diagnostics import gate_columns, jacobian_spectral_norms
from gradlab.instruments.frames import measurement_columns
from gradlab.instruments.recorder import GradientRecorder
from gradlab.store import schema
from gradlab.store.io import read_table, write_table
from gradlab.training.evaluate import batch_loss
from gradlab.training.loop import Callback, TrainState, finite, notify_record
from gradlab.training.progress import Progress
from gradlab.training.table_rows import TableRows, combine

__all__ = [
    "BestCheckpoint", "Diagnostics", "Divergence", "GradientRecording", "History", "Progress", "callback_keys",
    "collect_tables", "combine", "save_tables", "state_copy",
]


def _saved_rows(state: TrainState, kind: str) -> pd.DataFrame:
    """Rows of table ``kind`` that the run folder holds from epochs a format-2 checkpoint covers."""
    path = state.run_dir / schema.RUN_FILES[kind]
    if not path.is_file():
        return schema.empty(kind)
    frame = read_table(path, kind)
    keep = frame["epoch"] < state.epochs_done
    if kind == "gradients":  # a recording at step s precedes update s + 1
        keep &= frame["step"] < state.step
    return frame[keep].reset_index(drop=True)


def state_copy(model: torch.nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of ``model``'s state_dict."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


class History(Callback):
    """The ``history`` table: one row per (step, split, metric)."""

    COLUMNS = ("step", "epoch", "split", "metric", "value", "wall_time")

    def __init__(self) -> None:
        self.rows: dict[str, list] = {name: [] for name in self.COLUMNS}
        self.run_info: dict[str, Any] = {}

    def on_fit_start(self, state: TrainState) -> None:
        self.run_info = state.run_info

    def add(self, state: TrainState, split: str, values: dict[str, float]) -> None:
        wall = state.wall()
        for metric, value in values.items():
            for name, item in zip(self.COLUMNS, (state.step, state.epoch, split, metric, float(value), wall)):
                self.rows[name].append(item)

    def on_train_batch(self, state: TrainState, values: dict[str, float]) -> None:
        self.add(state, "train", values)

    def on_validation(self, state: TrainState, loss: float, accuracy: float) -> None:
        self.add(state, "validation", {"loss": loss} if math.isnan(accuracy) else {"loss": loss, "accuracy": accuracy})

    def tables(self) -> dict[str, pd.DataFrame]:
        count = len(self.rows["step"])
        keys = {key: [value] * count for key, value in self.run_info.items()}
        return {"history": schema.conform({**keys, **self.rows}, "history")}

    def state_dict(self) -> dict[str, Any]:
        return {"rows": {name: list(values) for name, values in self.rows.items()}}

    def load_state_dict(self, saved: dict[str, Any], state: TrainState) -> None:
        self.run_info = state.run_info
        if "rows" in saved:
            self.rows = {name: list(saved["rows"][name]) for name in self.COLUMNS}
            return
        frame = _saved_rows(state, "history")
        self.rows = {name: frame[name].tolist() for name in self.COLUMNS}


class Divergence(Callback):
    """Marks the run diverged at the first step whose loss or gradient norm is not finite."""

    def on_train_batch(self, state: TrainState, values: dict[str, float]) -> None:
        if not finite(values["loss"], values["grad_norm"]):
            state.diverged_step = state.step


class BestCheckpoint(Callback):
    """Keeps (in memory, and in the epoch checkpoint) the validation-selected weights."""

    def __init__(self) -> None:
        self.best: dict[str, Any] = {"accuracy": -math.inf, "loss": math.inf, "epoch": None, "step": None, "state": None}

    def on_validation(self, state: TrainState, loss: float, accuracy: float) -> None:
        if state.step == 0:
            return  # the untrained model is not a candidate
        best = self.best
        if state.data.task == TASK_REGRESSION or math.isnan(accuracy):
            better = loss < best["loss"]
        else:
            better = accuracy > best["accuracy"] or (accuracy == best["accuracy"] and loss < best["loss"])
        if better:
            best.update(accuracy=accuracy, loss=loss, epoch=state.epoch, step=state.step, state=state_copy(state.model))

    def state_dict(self) -> dict[str, Any]:
        return dict(self.best)

    def load_state_dict(self, saved: dict[str, Any], state: TrainState) -> None:
        self.best = dict(saved)


class GradientRecording(Callback):
    """Per-timestep gradient norms through BPTT (:class:`gradlab.instruments.recorder.GradientRecorder`)."""

    def __init__(self, state: TrainState, every: int) -> None:
        self.recorder = GradientRecorder(state.model, every=every, run_info=state.run_info)
        self.rows = TableRows("gradients")

    def step_context(self, state: TrainState) -> contextlib.AbstractContextManager:
        return self.recorder.maybe_record(step=state.step, epoch=state.epoch)

    def latest_rows(self, step: int) -> pd.DataFrame | None:
        """The rows recorded at ``step`` if the latest recording is of that step, else None."""
        return self.recorder.latest_frame(step)

    def on_train_batch(self, state: TrainState, values: dict[str, float]) -> None:
        recorded = state.step - 1  # the recording is labelled with the updates before this step's
        if self.recorder.should_record(recorded) and _listened(state):
            rows = self.latest_rows(recorded)
            if rows is not None:
                notify_record(state, rows)

    def on_fit_end(self, state: TrainState) -> None:
        if state.diverged_step is not None or state.step == 0:
            return
        # The final model's gradients, on a fixed training batch; no update follows.
        x, y = next(iterate_batches(state.data.train, state.config.train.batch_size, shuffle=False))
        state.optimiser.zero_grad(set_to_none=True)
        with self.recorder.record(step=state.step, epoch=max(state.epochs_done - 1, 0), inputs=x):
            with state.autocast():
                logits = state.model(x)
            batch_loss(logits, y, state.data.task).backward()
        state.optimiser.zero_grad(set_to_none=True)
        rows = self.latest_rows(state.step) if _listened(state) else None
        if rows is not None:
            notify_record(state, rows)

    def collect(self) -> None:
        """Move the recorder's rows into :attr:`rows`."""
        self.rows.add(self.recorder.frame())
        self.recorder.clear()

    def tables(self) -> dict[str, pd.DataFrame]:
        self.collect()
        return {"gradients": self.rows.frame()}

    def state_dict(self) -> dict[str, Any]:
        self.collect()
        return {"rows": self.rows.state_dict()}

    def load_state_dict(self, saved: dict[str, Any], state: TrainState) -> None:
        if "rows" in saved:
            self.rows.load_state_dict(saved["rows"])
        else:
            self.rows.replace(_saved_rows(state, "gradients"))


def _listened(state: TrainState) -> bool:
    """Whether a callback of ``state`` overrides :meth:`Callback.on_record` (else no step's rows are built for it)."""
    return any(type(callback).on_record is not Callback.on_record for callback in state.callbacks)


class Diagnostics(Callback):
    """Gate statistics and Jacobian norms (:mod:`gradlab.instruments.diagnostics`) on a few validation samples."""

    def __init__(self) -> None:
        self.rows = {kind: TableRows(kind) for kind in ("gates", "jacobian")}

    def diagnose(self, state: TrainState) -> None:
        # Gate statistics are cheap; the Jacobian costs T^2/2 cell steps per sample and
        # layer, so by default it runs at initialisation and after the last epoch only.
        train, data = state.config.train, state.data
        epoch, step = state.epoch, state.step
        measured = state.premeasured.pop(("gates", step), None)
        if measured is None:
            measured = gate_columns(state.model, data.validation.x[: train.diagnostics_batch])
        self.rows["gates"].add_columns(measurement_columns(measured, state.model, run_info=state.run_info, step=step,
                                                           epoch=epoch))
        every = train.jacobian_every
        wanted = step == 0 or epoch == train.epochs - 1 or (every is not None and (epoch + 1) % every == 0)
        if wanted and data.seq_len <= train.jacobian_max_len:
            self.rows["jacobian"].add(jacobian_spectral_norms(
                state.model, data.validation.x[: train.jacobian_batch], run_info=state.run_info, step=step,
                epoch=epoch, iterations=10, generator=state.generators["diagnostics"],
            ))

    def on_validation(self, state: TrainState, loss: float, accuracy: float) -> None:
        if state.step == 0:  # the untrained model, once, on a fresh start
            self.diagnose(state)

    def on_epoch_end(self, state: TrainState) -> None:
        self.diagnose(state)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {kind: rows.frame() for kind, rows in self.rows.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"rows": {kind: rows.state_dict() for kind, rows in self.rows.items()}}

    def load_state_dict(self, saved: dict[str, Any], state: TrainState) -> None:
        for kind, rows in self.rows.items():
            if "rows" in saved:
                rows.load_state_dict(saved["rows"][kind])
            else:
                rows.replace(_saved_rows(state, kind))


def collect_tables(callbacks: list[Callback]) -> dict[str, pd.DataFrame]:
    """Every callback's tables, those of one kind from several callbacks combined."""
    frames: dict[str, list[pd.DataFrame]] = {}
    for callback in callbacks:
        for kind, frame in callback.tables().items():
            frames.setdefault(kind, []).append(frame)
    return {kind: combine(parts, kind) for kind, parts in frames.items()}


def save_tables(state: TrainState, run_dir: Path) -> None:
    """Write every callback's tables into ``run_dir`` (atomically, one file per table)."""
    for kind, frame in collect_tables(state.callbacks).items():
        write_table(frame, run_dir / schema.RUN_FILES[kind], kind=kind)


def callback_keys(callbacks: list[Callback]) -> list[str]:
    """Each callback's key in an epoch checkpoint: its ``state_key``, else its class name with ``#n`` for repeats.

    The first instance of a class keeps the bare class name, so a checkpoint of a
    run with one callback of each class has the keys it always had; the second
    instance is ``Name#1``, the third ``Name#2``, counted in list order.

    Raises:
        ValueError: two callbacks end up with one key (an explicit ``state_key`` repeated or clashing).
    """
    counts: dict[str, int] = {}
    keys = []
    for callback in callbacks:
        if callback.state_key is not None:
            keys.append(callback.state_key)
            continue
        name = type(callback).__name__
        seen = counts.get(name, 0)
        counts[name] = seen + 1
        keys.append(name if seen == 0 else f"{name}#{seen}")
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"callbacks share the checkpoint keys {repeated}; give each a distinct state_key")
    return keys
