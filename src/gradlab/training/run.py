"""One run: assemble the model, optimiser and callbacks of a :class:`RunConfig`, fit, test, summarise.

Evaluation, unlike the coursework's loop: validation covers the whole
validation split; model selection uses validation only; ``test_accuracy`` is
the validation-selected checkpoint's accuracy on the test split alone and
``final_test_accuracy`` the last model's. A run that diverges keeps its history,
and its test accuracy is the best checkpoint's from before the divergence (NaN
if none).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gradlab.config import RunConfig
from gradlab.data import TASK_SEQUENCE_CLASSIFICATION, DataSplits
from gradlab.data.from_config import load_data
from gradlab.nn.models import RNNModel
from gradlab.store import schema
from gradlab.store.io import DIVERGED, FINISHED, RUN_TABLES, RunFolder, write_json, write_table
from gradlab.training.callbacks import (
    BestCheckpoint,
    Diagnostics,
    Divergence,
    GradientRecording,
    History,
    Progress,
    collect_tables,
)
from gradlab.training.dynamics import GradientFlossing, LyapunovRecording, VanishingGradientRegulariser
from gradlab.training.epoch_checkpoint import CHECKPOINT_EVERY, EpochCheckpoint, check_checkpoint_every
from gradlab.training.evaluate import evaluate, has_predictions, predictions
from gradlab.training.loop import Callback, TrainState, fit
from gradlab.training.parameter_recording import ParameterRecording
from gradlab.training.seeding import resolve_device, seed_everything, set_deterministic


@dataclass(frozen=True)
class RunResult:
    """What a run produced: its summary row and its tables (also in ``run_dir`` when given).

    ``skipped`` is true when the run had already ended in ``run_dir`` and was
    read back instead of trained.
    """

    metrics: dict[str, Any]
    history: pd.DataFrame
    gradients: pd.DataFrame
    gates: pd.DataFrame
    jacobian: pd.DataFrame
    predictions: pd.DataFrame
    lyapunov: pd.DataFrame
    parameter_gradients: pd.DataFrame | None = None  # with TrainConfig.record_parameters (empty without)
    run_dir: Path | None = None
    skipped: bool = False

    @property
    def status(self) -> str:
        return self.metrics["status"]


def read_run(run_dir: str | os.PathLike) -> RunResult:
    """Read a run folder written by :func:`train_run` (tables it lacks are empty)."""
    folder = RunFolder(run_dir)
    return RunResult(metrics=folder.metrics(), run_dir=folder.path, skipped=True,
                     **{kind: folder.table(kind) for kind in RUN_TABLES})


def build_model(config: RunConfig, data: DataSplits, generator: torch.Generator | None = None) -> RNNModel:
    """The :class:`RNNModel` of ``config`` sized for ``data`` (on the CPU).

    Raises:
        ValueError: the readout does not fit the task (per-step targets need
            ``readout="sequence"``, and only they may use it).
    """
    per_step = data.task == TASK_SEQUENCE_CLASSIFICATION
    if per_step != (config.model.readout == "sequence"):
        raise ValueError(
            f"readout {config.model.readout!r} does not fit task {data.task!r}: per-step targets "
            "(copy-memory) need readout 'sequence', and other tasks need 'last' or 'mean'"
        )
    return RNNModel.from_config(
        config.model, input_size=data.input_size, output_size=data.num_outputs, chrono_t_max=max(data.seq_len, 2),
        generator=generator, handwritten_bptt=not config.train.amp,  # the hand-written backward does not autocast
    )


class _OptimiserToCome:
    """Stands for the optimiser a caller of ``prepare(..., optimiser=False)`` sets: using it is a bug."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and hasattr probe these: absent, as on any object
            raise AttributeError(name)
        raise RuntimeError(f"optimiser.{name}: this run's optimiser was left for its caller to set (an ensemble "
                           "sets its members' own), and it has not been set")


def prepare(config: RunConfig, data: DataSplits | None, run_dir: Path | None, *, progress: bool,
            optimiser: bool = True) -> TrainState:
    """The state a run starts from: device, data, seeded generators, model and optimiser.

    With ``optimiser=False`` the caller sets ``state.optimiser``: an ensemble's members share one
    (:class:`gradlab.training.ensemble.EnsembleOptimiser`), and making a torch optimiser imports
    ``torch._dynamo`` on first use (about 1 s per process), which an ensemble's worker need not pay.
    """
    train = config.train
    set_deterministic(train.deterministic)
    device = resolve_device(train.device)
    data = (data if data is not None else load_data(config.data, progress=progress)).to(device, getattr(torch, train.dtype))
    generators = seed_everything(train.seed)
    model = build_model(config, data, generator=generators["init"]).to(device, getattr(torch, train.dtype))
    own: Any = _OptimiserToCome()
    if optimiser:
        optimiser_type = torch.optim.Adam if train.optimiser == "adam" else torch.optim.SGD
        own = optimiser_type([p for p in model.parameters() if p.requires_grad], lr=train.lr,
                             weight_decay=train.weight_decay)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if train.amp else contextlib.nullcontext
    run_info = {"run_id": config.run_id, "cell": model.mode, "activation": model.rnn.activation, "seed": train.seed}
    return TrainState(config=config, model=model, optimiser=own, data=data, device=device,
                      generators=generators, run_info=run_info, autocast=autocast, run_dir=run_dir)


def standard_callbacks(state: TrainState, command: list[str] | None, progress: bool,
                       checkpoint_every: float = CHECKPOINT_EVERY) -> list[Callback]:
    """The callbacks every run has, in the order they act at each hook."""
    train = state.config.train
    callbacks: list[Callback] = [History(), Divergence(), BestCheckpoint()]
    if train.omega_weight:  # before the recorder: Omega's own backward follows the recorded one
        callbacks.append(VanishingGradientRegulariser(train.omega_weight))
    if train.floss_weight:
        callbacks.append(GradientFlossing(train.floss_weight, train.floss_k, train.floss_every, train.floss_until))
    if train.record_every is not None:
        recording = ParameterRecording if train.record_parameters else GradientRecording
        callbacks.append(recording(state, train.record_every))
    if train.diagnostics:
        callbacks.append(Diagnostics())
    if train.lyapunov_every is not None:
        callbacks.append(LyapunovRecording(train.lyapunov_every, train.lyapunov_k))
    if state.run_dir is not None:
        callbacks.append(EpochCheckpoint(state.run_dir, command, checkpoint_every))  # saves (and restores) the above
    if progress:
        callbacks.append(Progress())
    return callbacks


def train_run(
    config: RunConfig,
    *,
    data: DataSplits | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    command: list[str] | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
    checkpoint_every: float = CHECKPOINT_EVERY,
) -> RunResult:
    """Train one configuration; write its run folder when ``run_dir`` is given.

    Args:
        config: the run (model, data, training settings, run id).
        data: the loaded dataset; loaded from ``config.data`` when None.
        run_dir: the run's folder (:data:`gradlab.store.schema.RUN_FILES`); files are
            written atomically, the checkpoint at epoch ends (``checkpoint_every``), the
            tables and metrics when the run ends.
        resume: with a ``run_dir`` that already holds this run: return a run
            that ended without training, continue one from its checkpoint.
            With False an existing run folder raises ``FileExistsError``.
        command: the command line, stored in ``config.json``.
        callbacks: more callbacks, acting after the standard ones at each hook.
        progress: show a progress bar over the run's steps.
        checkpoint_every: seconds of training between epoch checkpoints (0: every epoch); see
            :class:`~gradlab.training.epoch_checkpoint.EpochCheckpoint`.

    Raises:
        ValueError: a bad configuration, a readout that does not fit the task,
            or a checkpoint of a different configuration.
    """
    check_checkpoint_every(checkpoint_every)
    folder = RunFolder(run_dir) if run_dir is not None else None
    if folder is not None and (folder.has("metrics") or folder.has("checkpoint")):
        if not resume:
            raise FileExistsError(f"run folder {folder.path} already holds a run; resume it or choose another folder")
        if folder.ended:
            return read_run(folder.path)
    state = prepare(config, data, folder.path if folder else None, progress=progress)
    fit(state, standard_callbacks(state, command, progress, checkpoint_every) + list(callbacks))
    return finish_run(state)


def finish_run(state: TrainState) -> RunResult:
    """Summarise a run whose training ended; write its tables and metrics into ``state.run_dir`` if it has one."""
    metrics = summary_row(state)
    tables = {**collect_tables(state.callbacks), "predictions": best_predictions(state)}
    if state.run_dir is not None:
        folder = RunFolder(state.run_dir)
        for kind, frame in tables.items():
            write_table(frame, folder.file(kind), kind=kind)
        write_json(folder.file("metrics"), metrics)
    return RunResult(metrics=metrics, run_dir=state.run_dir,
                     **{kind: tables.get(kind, schema.empty(kind)) for kind in RUN_TABLES})


def _best(state: TrainState) -> dict[str, Any]:
    return next(callback.best for callback in state.callbacks if isinstance(callback, BestCheckpoint))


def _scratch(state: TrainState, weights: dict[str, torch.Tensor]) -> RNNModel:
    model = build_model(state.config, state.data).to(state.device, getattr(torch, state.config.train.dtype))
    model.load_state_dict(weights)
    return model


def best_predictions(state: TrainState) -> pd.DataFrame:
    """Per-example predictions of the validation-selected weights on validation and test."""
    weights = _best(state)["state"]
    if weights is None or not has_predictions(state.data.task):
        return schema.empty("predictions")
    splits = {"validation": state.data.validation, "test": state.data.test}
    return predictions(_scratch(state, weights), splits, batch_size=state.config.train.batch_size,
                       run_info=state.run_info, autocast=state.autocast)


def _test(state: TrainState, weights: dict[str, torch.Tensor] | None) -> tuple[float, float]:
    if weights is None:
        return float("nan"), float("nan")
    train, data = state.config.train, state.data
    return evaluate(_scratch(state, weights), data.test, data.task, batch_size=train.batch_size,
                    class_names=data.class_names, max_batches=train.max_eval_batches, autocast=state.autocast)


def summary_row(state: TrainState) -> dict[str, Any]:
    """The run's SUMMARY row (:data:`gradlab.store.schema.SUMMARY`, then more configuration and results)."""
    config, train, data, best = state.config, state.config.train, state.data, _best(state)
    diverged = state.diverged_step is not None
    test_loss, test_accuracy = _test(state, best["state"])
    final_test_loss, final_test_accuracy = (math.nan, math.nan) if diverged else _test(state, state.model.state_dict())
    epochs = max(state.epochs_done, 1)
    share = 1 / state.ensemble_size  # an ensemble's time is shared by its members
    info = data.info if isinstance(getattr(data, "info", None), dict) else {}
    skipped = getattr(data, "skipped", None) or {}
    return {
        **state.run_info,
        "dataset": config.data.dataset,
        "bidirectional": config.model.bidirectional,
        "readout": config.model.readout,
        "normalise": config.data.normalise if config.data.is_audio else None,
        "hidden_size": config.model.hidden_size,
        "num_layers": config.model.num_layers,
        "seq_len": data.seq_len,
        "status": DIVERGED if diverged else FINISHED,
        "diverged_step": state.diverged_step,
        "best_val_accuracy": best["accuracy"] if best["state"] is not None and math.isfinite(best["accuracy"]) else math.nan,
        "best_epoch": best["epoch"],
        "test_accuracy": test_accuracy,
        "final_test_accuracy": final_test_accuracy,
        "n_params": sum(parameter.numel() for parameter in state.model.parameters()),
        "time_per_epoch": state.wall() * share / epochs,
        # extra configuration and results, after the schema's columns
        "task": data.task,
        "init": config.model.init,
        "lr": train.lr,
        "batch_size": train.batch_size,
        "epochs": train.epochs,
        "weight_decay": train.weight_decay,
        "clip_grad_norm": train.clip_grad_norm,
        "hop_length": config.data.hop_length if config.data.is_audio else None,
        "device": str(state.device),
        "dtype": train.dtype,
        "best_step": best["step"],
        "best_val_loss": best["loss"] if best["state"] is not None else math.nan,
        "test_loss": test_loss,
        "final_test_loss": final_test_loss,
        "train_time_per_epoch": state.train_time * share / epochs,
        "steps": state.step,
        "wall_time": state.wall() * share,
        "num_classes": len(data.class_names),
        "n_train": len(data.train),
        "n_validation": len(data.validation),
        "n_test": len(data.test),
        "split": info.get("split"),
        # the FSDD speaker fold (None for other data): each speaker is the test speaker of one fold
        "test_speaker": _only(info.get("speakers", {}).get("test")) if info.get("split") == "speakers" else None,
        "validation_speaker": (_only(info.get("speakers", {}).get("validation"))
                               if info.get("split") == "speakers" else None),
        "train_fraction": config.data.train_fraction if config.data.is_audio else None,
        "param_target": config.model.param_target,
        "omega_weight": train.omega_weight,
        "floss_weight": train.floss_weight,
        "pad": config.data.pad if config.data.is_audio else None,
        "delay": config.data.delay if config.data.is_audio else None,
        "noise_std": config.data.noise_std if config.data.dataset == "distance" else None,
        "skipped_files": sum(len(names) for names in skipped.values()),  # by reason in sweep.json
        "ensemble_size": state.ensemble_size,
    }


def _only(names: list[str] | None) -> str | None:
    """The one name of a list of one (a split's speaker), else None."""
    return names[0] if names and len(names) == 1 else None
