"""Epoch checkpoints: what makes an interrupted run resumable, bit for bit.

:class:`EpochCheckpoint` writes config.json when a run starts, and a checkpoint
(weights, optimiser, the callbacks' states with their table rows so far, every
RNG) at the end of an epoch, at most every ``every`` seconds of training; it
resumes a run from it, so a resumed run equals an uninterrupted one bit for
bit. The run's tables themselves are written once, when it ends.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from gradlab.config import CHECKPOINT_EVERY, check_checkpoint_every
from gradlab.store.atomic import write_atomic
from gradlab.store.io import RunFolder, RunFolderError, config_differences, provenance, write_json
from gradlab.training.callbacks import callback_keys, state_copy
from gradlab.training.checkpoint_rows import RowsFiles, save_torch
from gradlab.training.loop import Callback, TrainState
from gradlab.training.seeding import restore_rng, rng_state

__all__ = ["CHECKPOINT_EVERY", "CHECKPOINT_FORMAT", "EpochCheckpoint", "RESUMABLE_FORMATS", "check_checkpoint_every"]

#: Version of the checkpoint layout written now: callback states, keyed by :func:`callback_keys`, reference
#: their table rows (:mod:`gradlab.training.table_rows`) in rows files (:mod:`gradlab.training.checkpoint_rows`).
CHECKPOINT_FORMAT = 4
#: Layouts resumed: format 2 kept the rows in the run folder's tables, rewritten at every epoch end;
#: format 3 held them in the checkpoint itself.
RESUMABLE_FORMATS: tuple[int, ...] = (2, 3, 4)


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
    """config.json at the start; a resumable checkpoint at epoch ends, every ``every`` seconds, and at the last.

    ``every`` counts training time (``TrainState.train_time``, which the members of
    an ensemble share, so they checkpoint at the same epochs): the first epoch end
    after ``every`` seconds of training since the last checkpoint (or the start)
    writes one, and the last epoch's end always does (an ended run's folder keeps
    its final and best weights there; a diverged run keeps its last checkpoint).
    A killed run loses at most about ``every`` seconds of work, and a short run
    skips most of the checkpoint's cost (a tenth of a small FSDD run's time when
    written every epoch); ``every=0`` writes one at every epoch end. Resume is
    exact from any checkpoint, or from the start without one.

    It comes after the callbacks whose state (table rows included) it saves,
    so that their epoch-end work is in the checkpoint; when it resumes a run,
    it restores their state after their ``on_fit_start``. Their table rows go
    to append-only rows files, each epoch's once (:mod:`gradlab.training.checkpoint_rows`). The run's tables
    are written when it ends (:func:`gradlab.training.run.finish_run`), once.
    """

    def __init__(self, run_dir: Path, command: list[str] | None, every: float = CHECKPOINT_EVERY) -> None:
        self.folder = RunFolder(run_dir)
        self.command = command
        self.rows_files = RowsFiles(run_dir)
        self.every = check_checkpoint_every(every)
        self.saved_at = 0.0  # train_time at the last checkpoint (or at the start)

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
        self.saved_at = state.train_time

    def on_epoch_end(self, state: TrainState) -> None:
        last = state.epochs_done >= state.config.train.epochs  # the ended run's weights stay in its folder
        if not last and state.train_time - self.saved_at < self.every:
            return
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
        self.saved_at = state.train_time
