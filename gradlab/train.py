"""Train one configuration, evaluate it honestly and write its run folder.

:func:`train_run` is the library's training function: it builds the model of a
:class:`gradlab.config.RunConfig`, trains it with Adam (or SGD), and returns
(and, given a folder, writes) every table of :mod:`gradlab.schema`.

Evaluation, unlike the coursework's loop:

- Validation loss and accuracy are computed on the *whole* validation split
  every ``val_every`` optimiser steps and at the end of every epoch (and once
  at initialisation, step 0).
- Model selection uses validation only: the checkpoint with the best
  validation accuracy (ties: lower validation loss; regression: lowest loss)
  is kept in memory. ``test_accuracy`` is *that* checkpoint's accuracy on the
  test split alone; ``final_test_accuracy`` is the last model's. Accuracies
  are fractions (floats), never floored.
- For copy memory (per-step targets) accuracy counts only the steps whose
  target is a symbol, not the blanks a constant guess gets right.

Step numbering follows :mod:`gradlab.schema`: ``step`` counts optimiser
updates. A training row at step s describes the batch of update s (1-based:
loss and accuracy of the model before it, the gradient norm before clipping,
the learning rate used); validation rows at step s describe the model after s
updates. Gradient recordings at step s are the gradients of the model after s
updates: step 0 is at initialisation, then every ``record_every`` steps, plus
one of the final model on a fixed training batch (not followed by an update).

Randomness comes from the run's seed only: it derives the init, shuffle and
diagnostics generators (and seeds torch, numpy and ``random`` globally for
anything else). On CPU the same seed gives the same numbers bit for bit, and
a run resumed from its epoch checkpoint (which holds every generator's state)
ends with the same numbers as one that was never interrupted.

A non-finite loss or gradient norm stops the run before the update: it is
marked ``diverged`` with that step, its history is kept, and its test accuracy
is the best validation checkpoint's from before the divergence (NaN if none).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradlab import schema
from gradlab.atomic import write_atomic
from gradlab.config import RunConfig
from gradlab.data import (
    TASK_REGRESSION,
    TASK_SEQUENCE_CLASSIFICATION,
    DataSplits,
    FeatureConfig,
    SplitTensors,
    iterate_batches,
    load_dataset,
)
from gradlab.diagnostics import gate_statistics, jacobian_spectral_norms
from gradlab.instrument import GradientRecorder, load_frame, save_frame
from gradlab.models import RNNModel

#: Version of the checkpoint layout; a checkpoint of another version is not resumed.
CHECKPOINT_FORMAT = 1
#: Statuses of a run, as in :data:`gradlab.schema.SUMMARY`.
FINISHED, DIVERGED, RUNNING = "finished", "diverged", "running"
#: Tables a run writes beside its metrics.
RUN_TABLES: tuple[str, ...] = ("history", "gradients", "gates", "jacobian")

EpochCallback = Callable[[int, int], None]


def _json_default(value: object) -> object:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if value is pd.NA:
        return None
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str | os.PathLike, payload: object) -> Path:
    """Write ``payload`` as indented JSON, atomically (NaN becomes ``NaN``, as Python's json reads it)."""
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    return write_atomic(path, lambda temporary: temporary.write_text(text))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without CUDA raises ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


def set_deterministic(deterministic: bool) -> None:
    """Ask torch for deterministic kernels (and set what cuBLAS needs for them), or leave the defaults."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` (``init``, ``shuffle``, ``diagnostics``) derived from the run's seed."""
    entropy = [seed] + [ord(char) for char in purpose]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's and torch's global generators (for code that uses them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # numpy's and python's states as plain lists, so torch.load(weights_only=True) reads them
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }


def _restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


def load_data(config: RunConfig | Any, *, progress: bool = False, num_workers: int | None = None) -> DataSplits:
    """Load the dataset of ``config`` (a :class:`RunConfig` or its :class:`DataConfig`)."""
    data = config.data if isinstance(config, RunConfig) else config
    if data.is_audio:
        features = FeatureConfig(
            n_mfcc=data.n_mfcc, n_fft=data.n_fft, hop_length=data.hop_length, amplitude_scale=data.amplitude_scale
        )
        options: dict[str, Any] = {
            "words": data.words,
            "features": features,
            "normalise": data.normalise,
            "cache_dir": data.cache_dir,
            "num_workers": num_workers,
            "progress": progress,
        }
        if data.data_dir is not None:
            options["root"] = data.data_dir
        if data.dataset == "speech-commands":
            options["download"] = data.download
        elif data.takes is not None:
            options["takes"] = data.takes
    else:
        options = {"seed": data.data_seed}
        for name in ("seq_len", "n_train", "n_validation", "n_test"):
            if getattr(data, name) is not None:
                options[name] = getattr(data, name)
        if data.dataset == "distance" and data.distance is not None:
            options["distance"] = data.distance
    return load_dataset(data.dataset, **options)


def build_model(config: RunConfig, data: DataSplits, generator: torch.Generator | None = None) -> RNNModel:
    """The :class:`RNNModel` of ``config`` sized for ``data`` (on the CPU).

    Raises:
        ValueError: if the readout does not fit the task (per-step targets need
            ``readout="sequence"``, and only they may use it).
    """
    model = config.model
    per_step = data.task == TASK_SEQUENCE_CLASSIFICATION
    if per_step != (model.readout == "sequence"):
        raise ValueError(
            f"readout {model.readout!r} does not fit task {data.task!r}: per-step targets "
            "(copy-memory) need readout 'sequence', and other tasks need 'last' or 'mean'"
        )
    return RNNModel(
        model.mode,
        data.input_size,
        model.hidden_size,
        model.num_layers,
        model.bias,
        data.num_outputs,
        bidirectional=model.bidirectional,
        readout=model.readout,
        init=model.init,
        forget_bias=model.forget_bias,
        chrono_t_max=max(data.seq_len, 2),
        generator=generator,
        handwritten_bptt=not config.train.amp,  # the hand-written backward does not autocast
    )


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _scored(task: str, class_names: tuple[str, ...]) -> Callable[[Tensor], Tensor] | None:
    """Which targets count towards accuracy: all, symbols only (copy memory), or none (regression)."""
    if task == TASK_REGRESSION:
        return None
    if task == TASK_SEQUENCE_CLASSIFICATION and class_names[:1] == ("blank",):
        return lambda y: y != 0
    return lambda y: torch.ones_like(y, dtype=torch.bool)


def batch_loss(logits: Tensor, y: Tensor, task: str, reduction: str = "mean") -> Tensor:
    """The training loss of a batch: cross-entropy, per-step cross-entropy, or MSE for regression."""
    logits = logits.float()
    if task == TASK_REGRESSION:
        return F.mse_loss(logits[:, 0], y, reduction=reduction)  # (B, 1) vs (B,): compare column 0
    if task == TASK_SEQUENCE_CLASSIFICATION:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


def batch_correct(logits: Tensor, y: Tensor, scored: Callable[[Tensor], Tensor] | None) -> tuple[Tensor, Tensor]:
    """(correct, counted) predictions of a batch, as tensors on its device."""
    if scored is None:
        zero = logits.new_zeros((), dtype=torch.float64)
        return zero, zero
    mask = scored(y)
    hits = (logits.argmax(dim=-1) == y) & mask
    return hits.sum().double(), mask.sum().double()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: SplitTensors,
    task: str,
    *,
    batch_size: int,
    class_names: tuple[str, ...] = (),
    max_batches: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` over a whole split (or its first ``max_batches`` batches).

    Returns:
        ``(loss, accuracy)``: the loss averaged over samples (over every step
        for per-step targets), the accuracy a fraction in [0, 1] (NaN for
        regression).
    """
    was_training = model.training
    model.eval()
    scored = _scored(task, class_names)
    total_loss = torch.zeros((), dtype=torch.float64, device=split.x.device)
    correct = torch.zeros((), dtype=torch.float64, device=split.x.device)
    counted = torch.zeros((), dtype=torch.float64, device=split.x.device)
    elements = 0
    for index, (x, y) in enumerate(iterate_batches(split, batch_size, shuffle=False)):
        if max_batches is not None and index >= max_batches:
            break
        with autocast():
            logits = model(x)
        total_loss += batch_loss(logits, y, task, reduction="sum").double()
        elements += y.numel()
        hits, count = batch_correct(logits, y, scored)
        correct += hits
        counted += count
    model.train(was_training)
    loss, correct_value, counted_value = torch.stack([total_loss, correct, counted]).tolist()
    accuracy = correct_value / counted_value if scored is not None and counted_value else float("nan")
    return loss / max(elements, 1), accuracy


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
    run_dir: Path | None = None
    skipped: bool = False

    @property
    def status(self) -> str:
        return self.metrics["status"]


def read_run(run_dir: str | os.PathLike) -> RunResult:
    """Read a run folder written by :func:`train_run` (tables it lacks are empty)."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / schema.RUN_FILES["metrics"])
    tables = {}
    for kind in RUN_TABLES:
        path = run_dir / schema.RUN_FILES[kind]
        tables[kind] = load_frame(path, kind) if path.is_file() else schema.empty(kind)
    return RunResult(metrics=metrics, run_dir=run_dir, skipped=True, **tables)


def run_ended(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a run that finished or diverged."""
    path = Path(run_dir) / schema.RUN_FILES["metrics"]
    if not path.is_file():
        return False
    return read_json(path).get("status") in (FINISHED, DIVERGED)


class _Tables:
    """Rows of the history table plus recorded frames, kept in memory during a run."""

    def __init__(self, run_info: dict[str, Any]) -> None:
        self.run_info = run_info
        self.history: dict[str, list] = {name: [] for name in ("step", "epoch", "split", "metric", "value", "wall_time")}
        self.frames: dict[str, list[pd.DataFrame]] = {"gradients": [], "gates": [], "jacobian": []}

    def add(self, step: int, epoch: int, split: str, values: dict[str, float], wall_time: float) -> None:
        for metric, value in values.items():
            self.history["step"].append(step)
            self.history["epoch"].append(epoch)
            self.history["split"].append(split)
            self.history["metric"].append(metric)
            self.history["value"].append(float(value))
            self.history["wall_time"].append(wall_time)

    def history_frame(self) -> pd.DataFrame:
        rows = len(self.history["step"])
        columns = {key: [value] * rows for key, value in self.run_info.items()}
        return schema.conform({**columns, **self.history}, "history")

    def frame(self, kind: str) -> pd.DataFrame:
        frames = [frame for frame in self.frames[kind] if len(frame)]
        if not frames:
            frame = schema.empty(kind)
            for key, value in self.run_info.items():
                if key not in frame.columns:
                    frame[key] = pd.Series([], dtype=object)
            return frame
        return schema.conform(pd.concat(frames, ignore_index=True), kind)

    def restore(self, run_dir: Path, epochs_done: int, steps_done: int) -> None:
        """Reload the tables written with a checkpoint, keeping rows of the first ``epochs_done`` epochs."""
        path = run_dir / schema.RUN_FILES["history"]
        if path.is_file():
            history = load_frame(path, "history")
            history = history[history["epoch"] < epochs_done]
            for name in self.history:
                self.history[name] = history[name].tolist()
        for kind in self.frames:
            path = run_dir / schema.RUN_FILES[kind]
            if path.is_file():
                frame = load_frame(path, kind)
                keep = frame["epoch"] < epochs_done
                if kind == "gradients":  # a recording at step s precedes update s + 1
                    keep &= frame["step"] < steps_done
                self.frames[kind] = [frame[keep].reset_index(drop=True)]

    def save(self, run_dir: Path, recorder: GradientRecorder | None) -> None:
        if recorder is not None:
            self.frames["gradients"].append(recorder.frame())
            recorder.clear()
            self.frames["gradients"] = [self.frame("gradients")]
        save_frame(self.history_frame(), run_dir / schema.RUN_FILES["history"], kind="history")
        for kind in self.frames:
            save_frame(self.frame(kind), run_dir / schema.RUN_FILES[kind], kind=kind)


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def config_differences(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two config dicts, with both values."""
    differences = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, f"{prefix}{key}.")
        elif (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            differences.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return differences


def train_run(
    config: RunConfig,
    *,
    data: DataSplits | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    command: list[str] | None = None,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = False,
) -> RunResult:
    """Train one configuration; write its run folder when ``run_dir`` is given.

    Args:
        config: the run (model, data, training settings, run id).
        data: the loaded dataset; loaded from ``config.data`` when None.
        run_dir: the run's folder (:data:`gradlab.schema.RUN_FILES`); files are
            written atomically, tables and the checkpoint at every epoch end.
        resume: with a ``run_dir`` that already holds this run: return a run
            that ended without training, continue one from its checkpoint.
            With False an existing run folder raises ``FileExistsError``.
        command: the command line, stored in ``config.json``.
        on_epoch_end: called as ``on_epoch_end(epoch, step)`` after each
            epoch's checkpoint is written (tests interrupt runs here).
        progress: show a progress bar over the run's steps.

    Returns:
        The run's :class:`RunResult`.

    Raises:
        ValueError: a bad configuration, a readout that does not fit the task,
            or a checkpoint of a different configuration.
    """
    run_path = Path(run_dir) if run_dir is not None else None
    checkpoint_path = run_path / schema.RUN_FILES["checkpoint"] if run_path else None
    if run_path is not None and (run_path / schema.RUN_FILES["metrics"]).exists():
        if not resume:
            raise FileExistsError(f"run folder {run_path} already holds a run; resume it or choose another folder")
        if run_ended(run_path):
            return read_run(run_path)
    if run_path is not None and not resume and checkpoint_path.exists():
        raise FileExistsError(f"run folder {run_path} already holds a checkpoint; resume it or choose another folder")

    train_config = config.train
    set_deterministic(train_config.deterministic)
    device = resolve_device(train_config.device)
    if data is None:
        data = load_data(config, progress=progress)
    dtype = getattr(torch, train_config.dtype)
    data = data.to(device, dtype)
    use_amp = train_config.amp and device.type == "cuda"

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()

    seed = train_config.seed
    seed_everything(seed)
    generators = {name: torch.Generator().manual_seed(derive_seed(seed, name)) for name in ("init", "shuffle", "diagnostics")}
    model = build_model(config, data, generator=generators["init"]).to(device, dtype)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if train_config.optimiser == "adam":
        optimiser: torch.optim.Optimizer = torch.optim.Adam(parameters, lr=train_config.lr, weight_decay=train_config.weight_decay)
    else:
        optimiser = torch.optim.SGD(parameters, lr=train_config.lr, weight_decay=train_config.weight_decay)

    run_info = {"run_id": config.run_id, "cell": model.mode, "activation": model.rnn.activation, "seed": seed}
    recorder = (
        GradientRecorder(model, every=train_config.record_every, run_info=run_info)
        if train_config.record_every is not None
        else None
    )
    tables = _Tables(run_info)
    scored_task = (data.task, data.class_names)
    best: dict[str, Any] = {"accuracy": -math.inf, "loss": math.inf, "epoch": None, "step": None, "state": None}
    step, epochs_done, elapsed, train_time = 0, 0, 0.0, 0.0
    diverged_step: int | None = None
    config_dict = config.to_dict()

    if checkpoint_path is not None and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{checkpoint_path} has checkpoint format {checkpoint.get('format')!r}, not {CHECKPOINT_FORMAT}")
        differences = config_differences(checkpoint["config"], config_dict)
        if differences:
            raise ValueError(f"{checkpoint_path} was written by a different configuration: {'; '.join(differences)}")
        model.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        best = dict(checkpoint["best"])
        step, epochs_done = checkpoint["step"], checkpoint["epochs_done"]
        elapsed, train_time = checkpoint["elapsed"], checkpoint["train_time"]
        _restore_rng(checkpoint["rng"], generators)
        tables.restore(run_path, epochs_done, step)

    started = time.perf_counter() - elapsed

    def wall() -> float:
        return time.perf_counter() - started

    diagnostics_x = data.validation.x[: train_config.diagnostics_batch]

    def diagnose(epoch: int) -> None:
        # Gate statistics are cheap; the Jacobian costs T^2/2 cell steps per sample and
        # layer, so by default it runs at initialisation and after the last epoch only.
        if not train_config.diagnostics:
            return
        tables.frames["gates"].append(gate_statistics(model, diagnostics_x, run_info=run_info, step=step, epoch=epoch))
        every = train_config.jacobian_every
        wanted = step == 0 or epoch == train_config.epochs - 1 or (every is not None and (epoch + 1) % every == 0)
        if wanted and data.seq_len <= train_config.jacobian_max_len:
            tables.frames["jacobian"].append(jacobian_spectral_norms(
                model, data.validation.x[: train_config.jacobian_batch], run_info=run_info, step=step, epoch=epoch,
                iterations=10, generator=generators["diagnostics"],
            ))

    def validate(epoch: int) -> None:
        loss, accuracy = evaluate(
            model, data.validation, data.task, batch_size=train_config.batch_size, class_names=data.class_names,
            max_batches=train_config.max_eval_batches, autocast=autocast,
        )
        values = {"loss": loss} if math.isnan(accuracy) else {"loss": loss, "accuracy": accuracy}
        tables.add(step, epoch, "validation", values, wall())
        if step == 0:
            return  # the untrained model is not a candidate
        if data.task == TASK_REGRESSION or math.isnan(accuracy):
            better = loss < best["loss"]
        else:
            better = accuracy > best["accuracy"] or (accuracy == best["accuracy"] and loss < best["loss"])
        if better:
            best.update(accuracy=accuracy, loss=loss, epoch=epoch, step=step, state=_state_copy(model))

    if run_path is not None and epochs_done == 0:
        run_path.mkdir(parents=True, exist_ok=True)
        write_json(run_path / schema.RUN_FILES["config"], {**config_dict, "command": command})
    if epochs_done == 0:
        validate(0)
        diagnose(0)

    total_steps_per_epoch = math.ceil(len(data.train) / train_config.batch_size)
    if train_config.max_steps_per_epoch is not None:
        total_steps_per_epoch = min(total_steps_per_epoch, train_config.max_steps_per_epoch)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps_per_epoch * train_config.epochs, initial=total_steps_per_epoch * epochs_done,
                   desc=config.run_id, leave=False, unit="step", dynamic_ncols=True)

    scored = _scored(*scored_task)
    last_validated = -1
    for epoch in range(epochs_done, train_config.epochs):
        model.train()
        epoch_start = time.perf_counter()
        batches = iterate_batches(data.train, train_config.batch_size, shuffle=True, generator=generators["shuffle"])
        for index, (x, y) in enumerate(batches):
            if train_config.max_steps_per_epoch is not None and index >= train_config.max_steps_per_epoch:
                break
            optimiser.zero_grad(set_to_none=True)
            recording = recorder.maybe_record(step=step, epoch=epoch) if recorder else contextlib.nullcontext()
            with recording:
                with autocast():
                    logits = model(x)
                loss = batch_loss(logits, y, data.task)
                loss.backward()
            gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm(gradients)  # before clipping
            hits, counted = batch_correct(logits.detach(), y, scored)
            loss_value, grad_norm_value, hits_value, counted_value = torch.stack(
                [loss.detach().double(), grad_norm.double(), hits, counted]
            ).tolist()
            step += 1
            values = {"loss": loss_value}
            if scored is not None:
                values["accuracy"] = hits_value / counted_value if counted_value else float("nan")
            values.update(grad_norm=grad_norm_value, lr=optimiser.param_groups[0]["lr"])
            tables.add(step, epoch, "train", values, wall())
            if not (math.isfinite(loss_value) and math.isfinite(grad_norm_value)):
                diverged_step = step
                break
            if train_config.clip_grad_norm is not None:
                torch.nn.utils.clip_grads_with_norm_(parameters, train_config.clip_grad_norm, grad_norm)
            optimiser.step()
            if bar is not None:
                bar.update(1)
            if train_config.val_every is not None and step % train_config.val_every == 0:
                validate(epoch)
                last_validated = step
        if diverged_step is not None:
            break
        if last_validated != step:
            validate(epoch)
        train_time += time.perf_counter() - epoch_start
        diagnose(epoch)
        epochs_done = epoch + 1
        if run_path is not None:
            tables.save(run_path, recorder)
            checkpoint = {
                "format": CHECKPOINT_FORMAT,
                "config": config_dict,
                "epochs_done": epochs_done,
                "step": step,
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "best": best,
                "rng": _rng_state(generators),
                "elapsed": wall(),
                "train_time": train_time,
            }
            write_atomic(checkpoint_path, lambda temporary, c=checkpoint: torch.save(c, temporary))
        if on_epoch_end is not None:
            on_epoch_end(epoch, step)
    if bar is not None:
        bar.close()

    last_epoch = max(epochs_done - 1, 0) if diverged_step is None else epoch
    if recorder is not None and diverged_step is None and step > 0:
        # The final model's gradients, on a fixed training batch; no update follows.
        x, y = next(iterate_batches(data.train, train_config.batch_size, shuffle=False))
        optimiser.zero_grad(set_to_none=True)
        with recorder.record(step=step, epoch=last_epoch):
            with autocast():
                logits = model(x)
            batch_loss(logits, y, data.task).backward()
        optimiser.zero_grad(set_to_none=True)

    def test(state: dict[str, Tensor] | None) -> tuple[float, float]:
        if state is None:
            return float("nan"), float("nan")
        scratch = build_model(config, data).to(device, dtype)
        scratch.load_state_dict(state)
        return evaluate(scratch, data.test, data.task, batch_size=train_config.batch_size,
                        class_names=data.class_names, max_batches=train_config.max_eval_batches, autocast=autocast)

    test_loss, test_accuracy = test(best["state"])
    final_test_loss, final_test_accuracy = (float("nan"), float("nan")) if diverged_step is not None else test(_state_copy(model))
    epochs_counted = max(epochs_done, 1)
    metrics = {
        **run_info,
        "dataset": config.data.dataset,
        "bidirectional": config.model.bidirectional,
        "readout": config.model.readout,
        "normalise": config.data.normalise if config.data.is_audio else None,
        "hidden_size": config.model.hidden_size,
        "num_layers": config.model.num_layers,
        "seq_len": data.seq_len,
        "status": DIVERGED if diverged_step is not None else FINISHED,
        "diverged_step": diverged_step,
        "best_val_accuracy": best["accuracy"] if best["state"] is not None and math.isfinite(best["accuracy"]) else float("nan"),
        "best_epoch": best["epoch"],
        "test_accuracy": test_accuracy,
        "final_test_accuracy": final_test_accuracy,
        "n_params": count_parameters(model),
        "time_per_epoch": wall() / epochs_counted,
        # extra configuration and results, after the schema's columns
        "task": data.task,
        "init": config.model.init,
        "lr": train_config.lr,
        "batch_size": train_config.batch_size,
        "epochs": train_config.epochs,
        "weight_decay": train_config.weight_decay,
        "clip_grad_norm": train_config.clip_grad_norm,
        "hop_length": config.data.hop_length if config.data.is_audio else None,
        "device": str(device),
        "dtype": train_config.dtype,
        "best_step": best["step"],
        "best_val_loss": best["loss"] if best["state"] is not None else float("nan"),
        "test_loss": test_loss,
        "final_test_loss": final_test_loss,
        "train_time_per_epoch": train_time / epochs_counted,
        "steps": step,
        "wall_time": wall(),
    }
    if run_path is not None:
        tables.save(run_path, recorder)
        write_json(run_path / schema.RUN_FILES["metrics"], metrics)
    elif recorder is not None:
        tables.frames["gradients"].append(recorder.frame())
    return RunResult(
        metrics=metrics,
        history=tables.history_frame(),
        gradients=tables.frame("gradients"),
        gates=tables.frame("gates"),
        jacobian=tables.frame("jacobian"),
        run_dir=run_path,
    )
