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
- :class:`EpochCheckpoint`: writes config.json at the start, and a checkpoint
  (weights, optimiser, callbacks with their table rows so far, every RNG) at
  each epoch end; resumes from it, so a resumed run equals an uninterrupted one
  bit for bit. The tables themselves are written once, when the run ends.
- :class:`Progress` (:mod:`gradlab.training.progress`): a progress bar over
  the run's steps, or one line per epoch in a log.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from gradlab.data import TASK_REGRESSION, iterate_batches
from gradlab.instruments.diagnostics import gate_statistics, jacobian_spectral_norms
from gradlab.instruments.recorder import GradientRecorder
from gradlab.store import schema
from gradlab.store.atomic import write_atomic
from gradlab.store.io import (
    RunFolder,
    RunFolderError,
    config_differences,
    provenance,
    read_table,
    write_json,
    write_table,
)
from gradlab.training.checkpoint_rows import RowsFiles, save_torch
from gradlab.training.evaluate import batch_loss
from gradlab.training.loop import Callback, TrainState, finite, notify_record
from gradlab.training.progress import Progress
from gradlab.training.seeding import restore_rng, rng_state
from gradlab.training.table_rows import TableRows, combine

#: Version of the checkpoint layout written now: callback states, keyed by :func:`callback_keys`, reference
#: their table rows (:mod:`gradlab.training.table_rows`) in rows files (:mod:`gradlab.training.checkpoint_rows`).
CHECKPOINT_FORMAT = 4
#: Layouts resumed: format 2 kept the rows in the run folder's tables, rewritten at every epoch end;
#: format 3 held them in the checkpoint itself.
RESUMABLE_FORMATS: tuple[int, ...] = (2, 3, 4)

__all__ = [
    "BestCheckpoint", "CHECKPOINT_FORMAT", "Diagnostics", "Divergence", "EpochCheckpoint", "GradientRecording",
    "History", "Progress", "RESUMABLE_FORMATS", "callback_keys", "collect_tables", "combine", "save_tables",
    "state_copy",
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
        self.rows["gates"].add(gate_statistics(
            state.model, data.validation.x[: train.diagnostics_batch], run_info=state.run_info, step=step, epoch=epoch))
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


def _load_failure(error: BaseException) -> str:
    """What ``torch.load`` found wrong with a file, without its advice about ``weights_only``.

    That advice (load with ``weights_only=False``) is wrong for a damaged file
    and runs to several lines; the reason sits after ``WeightsUnpickler error:``.
    """
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no reason given"


class EpochCheckpoint(Callback):
    """config.json at the start; a resumable checkpoint at each epoch end.

    It comes after the callbacks whose state (table rows included) it saves,
    so that their epoch-end work is in the checkpoint; when it resumes a run,
    it restores their state after their ``on_fit_start``. Their table rows go
    to append-only rows files, each epoch's once (:mod:`gradlab.training.checkpoint_rows`). The run's tables
    are written when it ends (:func:`gradlab.training.run.finish_run`), once.
    """

    def __init__(self, run_dir: Path, command: list[str] | None) -> None:
        self.folder = RunFolder(run_dir)
        self.command = command
        self.rows_files = RowsFiles(run_dir)

    def on_fit_start(self, state: TrainState) -> None:
        path = self.folder.file("checkpoint")
        if not path.is_file():  # write_json makes the folder, after the sweep's checks on writes
            write_json(self.folder.file("config"), {**state.config.to_dict(), **provenance(self.command)})
            return
        self.folder.check_layout("resume")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged file
            raise RunFolderError(f"{path} is damaged ({type(error).__name__}: {_load_failure(error)}); delete it "
                                 "to train that run from the start on --resume, or use --overwrite") from None
        if checkpoint.get("format") not in RESUMABLE_FORMATS:
            raise RunFolderError(f"{path} has checkpoint format {checkpoint.get('format')!r}, not one of "
                                 f"{list(RESUMABLE_FORMATS)}; delete it to train that run again")
        differences = config_differences(checkpoint["config"], state.config.to_dict())
        if differences:
            raise RunFolderError(f"{path} was written by a different configuration: {'; '.join(differences)}; "
                                 "use --overwrite or a new --name")
        state.model.load_state_dict(checkpoint["model"])
        state.optimiser.load_state_dict(checkpoint["optimiser"])
        state.step, state.epochs_done = checkpoint["step"], checkpoint["epochs_done"]
        state.train_time = checkpoint["train_time"]
        restore_rng(checkpoint["rng"], state.generators)
        rows = checkpoint.get("rows") if checkpoint["format"] >= 4 else None  # older formats hold rows inline
        callbacks = self.rows_files.internalise(checkpoint["callbacks"], rows, path)
        for callback, key in zip(state.callbacks, callback_keys(state.callbacks)):
            callback.load_state_dict(callbacks.get(key, {}), state)
        state.started = time.perf_counter() - checkpoint["elapsed"]

    def on_epoch_end(self, state: TrainState) -> None:
        callbacks, rows = self.rows_files.externalise(
            {key: callback.state_dict() for callback, key in zip(state.callbacks, callback_keys(state.callbacks))},
            state.epochs_done)
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "config": state.config.to_dict(),
            "epochs_done": state.epochs_done,
            "step": state.step,
            "model": state_copy(state.model),  # a copy: an ensemble member's weights are views of the whole ensemble
            "optimiser": state.optimiser.state_dict(),
            "callbacks": callbacks,
            "rows": rows,  # the rows files the callbacks' references name
            "rng": rng_state(state.generators),
            "elapsed": state.wall(),
            "train_time": state.train_time,
        }
        write_atomic(self.folder.file("checkpoint"), lambda temporary: save_torch(checkpoint, temporary))
        self.rows_files.sweep(rows["files"])
