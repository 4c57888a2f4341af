"""The training loop: :func:`fit` over a :class:`TrainState`, with everything optional in callbacks.

The loop itself only trains and validates. Step numbering follows
:mod:`gradlab.store.schema`: ``step`` counts optimiser updates. A training batch's
values (loss and accuracy of the model before update s, the gradient norm
before clipping, the learning rate used) belong to step s (1-based);
validation at step s describes the model after s updates. Validation runs on
the whole validation split at step 0, every ``val_every`` updates, and at the
end of every epoch.

A :class:`Callback` can wrap each step's forward and backward
(:meth:`Callback.step_context`, how the gradient recorder listens), add a term
to the loss (:meth:`Callback.extra_loss`, how regularisers act), see each
batch's values, validations, recorded gradients (:meth:`Callback.on_record`)
and epoch ends, contribute tables to the run folder, and save and restore its
own state for resume. Callbacks run in list order at each hook.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from gradlab.config import RunConfig
from gradlab.data import DataSplits, iterate_batches
from gradlab.nn.models import RNNModel
from gradlab.training.evaluate import Autocast, batch_correct, batch_loss, evaluate, scored_targets


@dataclass
class TrainState:
    """Everything a run's loop and callbacks share: the model, its optimiser and data, and where it is."""

    config: RunConfig
    model: RNNModel
    optimiser: torch.optim.Optimizer
    data: DataSplits
    device: torch.device
    generators: dict[str, torch.Generator]
    run_info: dict[str, Any]  # run_id, cell, activation, seed: the key columns of every table
    autocast: Autocast = contextlib.nullcontext
    run_dir: Path | None = None
    step: int = 0  # optimiser updates so far
    epoch: int = 0  # the epoch being trained (0-based)
    epochs_done: int = 0
    diverged_step: int | None = None
    last_validated: int = -1
    batch: tuple[Tensor, Tensor] | None = None  # the training batch of the step in progress
    train_time: float = 0.0  # seconds inside training epochs (without set-up and testing)
    ensemble_size: int = 1  # runs trained together as one batched model (gradlab.training.ensemble_run)
    started: float = field(default_factory=time.perf_counter)
    callbacks: list[Callback] = field(default_factory=list)
    # Measurements made for this run by whoever trains it, for its callbacks to take instead of measuring
    # again, keyed by (table, step): an ensemble measures all its members' gates at once.
    premeasured: dict[tuple[str, int], Any] = field(default_factory=dict)

    @property
    def parameters(self) -> list[torch.nn.Parameter]:
        return [parameter for parameter in self.model.parameters() if parameter.requires_grad]

    def wall(self) -> float:
        """Seconds since the run started (across resumes)."""
        return time.perf_counter() - self.started


class Callback:
    """Base class of the loop's callbacks: every hook does nothing unless overridden.

    ``state_key`` names the callback's entry in an epoch checkpoint; by default
    (None) it is the class name, with ``#1``, ``#2`` ... appended for the
    second, third ... instance of one class in a run's list
    (:func:`gradlab.training.callbacks.callback_keys`). Set it where the list
    order of same-class callbacks may change between a run and its resume.
    """

    state_key: str | None = None

    def on_fit_start(self, state: TrainState) -> None:
        """Before the first step (also when resuming)."""

    def step_context(self, state: TrainState) -> contextlib.AbstractContextManager:
        """A context entered around the forward and backward pass of each training step."""
        return contextlib.nullcontext()

    def extra_loss(self, state: TrainState, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        """A term added to the training loss of this step (a regulariser), or None."""
        return None

    def extra_values(self, state: TrainState) -> dict[str, float]:
        """More training values of this step (e.g. a regulariser's), recorded beside the loss."""
        return {}

    def on_train_batch(self, state: TrainState, values: dict[str, float]) -> None:
        """After backward, before clipping and the update; ``values`` are the batch's loss, accuracy, grad_norm, lr."""

    def on_step_end(self, state: TrainState) -> None:
        """After the optimiser's update."""

    def on_validation(self, state: TrainState, loss: float, accuracy: float) -> None:
        """After a validation (accuracy is NaN for regression)."""

    def on_record(self, state: TrainState, rows: pd.DataFrame) -> None:
        """After a step whose gradients were recorded (:class:`gradlab.training.callbacks.GradientRecording`).

        ``rows`` are that step's rows of the ``gradients`` table only
        (:data:`gradlab.store.schema.GRADIENTS`, with the run's columns): one
        per layer, direction, state and timestep, built once per recorded step
        and shared by every callback (do not modify it). It comes after the
        step's ``on_train_batch`` of the recording callback and before those of
        the callbacks after it; the final model's recording comes in the
        recording callback's ``on_fit_end``.
        """

    def on_epoch_end(self, state: TrainState) -> None:
        """After an epoch's last validation (``state.epochs_done`` already counts it)."""

    def on_fit_end(self, state: TrainState) -> None:
        """After the last epoch, or after divergence."""

    def tables(self) -> dict[str, pd.DataFrame]:
        """Tables this callback writes into the run folder (by kind of :mod:`gradlab.store.schema`)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What an epoch checkpoint keeps of this callback."""
        return {}

    def load_state_dict(self, saved: dict[str, Any], state: TrainState) -> None:
        """Restore from :meth:`state_dict` when a run resumes (``state`` is already at the checkpoint)."""


def validate(state: TrainState) -> None:
    """Validate on the whole validation split and tell the callbacks."""
    train = state.config.train
    data = state.data
    loss, accuracy = evaluate(
        state.model, data.validation, data.task, batch_size=train.batch_size, class_names=data.class_names,
        max_batches=train.max_eval_batches, autocast=state.autocast,
    )
    state.last_validated = state.step
    for callback in state.callbacks:
        callback.on_validation(state, loss, accuracy)


def notify_record(state: TrainState, rows: pd.DataFrame) -> None:
    """Tell every callback of ``state`` about a recorded step's gradient ``rows`` (:meth:`Callback.on_record`)."""
    for callback in state.callbacks:
        callback.on_record(state, rows)


def train_step(state: TrainState, x: Tensor, y: Tensor) -> tuple[dict[str, float], Tensor]:
    """Forward and backward on one batch.

    Returns:
        The batch's values (loss, accuracy, grad_norm, lr) and the gradient
        norm as a tensor, which clipping uses as it is (the update is the caller's).
    """
    state.optimiser.zero_grad(set_to_none=True)
    state.batch = (x, y)
    with contextlib.ExitStack() as stack:
        for callback in state.callbacks:
            stack.enter_context(callback.step_context(state))
        with state.autocast():
            logits = state.model(x)
        loss = batch_loss(logits, y, state.data.task)
        objective = loss
        for callback in state.callbacks:
            extra = callback.extra_loss(state, x, y, logits)
            objective = objective if extra is None else objective + extra
        objective.backward()
    gradients = [parameter.grad for parameter in state.parameters if parameter.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(gradients)  # before clipping
    scored = scored_targets(state.data.task, state.data.class_names)
    hits, counted = batch_correct(logits.detach(), y, scored)
    loss_value, grad_norm_value, hits_value, counted_value = torch.stack(
        [loss.detach().double(), grad_norm.double(), hits, counted]
    ).tolist()
    values = {"loss": loss_value}
    if scored is not None:
        values["accuracy"] = hits_value / counted_value if counted_value else float("nan")
    values.update(grad_norm=grad_norm_value, lr=state.optimiser.param_groups[0]["lr"])
    for callback in state.callbacks:
        values.update(callback.extra_values(state))
    return values, grad_norm


def _update(state: TrainState, grad_norm: Tensor) -> None:
    train = state.config.train
    if train.clip_grad_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(state.parameters, train.clip_grad_norm, grad_norm)
    if train.clip_grad_value is not None:
        torch.nn.utils.clip_grad_value_(state.parameters, train.clip_grad_value)
    state.optimiser.step()


def fit(state: TrainState, callbacks: Sequence[Callback]) -> TrainState:
    """Train ``state.model`` for the epochs of ``state.config`` (from ``state.epochs_done`` on).

    Returns:
        The same state, at the end of training (or at the diverged step).
    """
    train = state.config.train
    state.callbacks = list(callbacks)
    for callback in state.callbacks:
        callback.on_fit_start(state)
    if state.epochs_done == 0:
        validate(state)
    for epoch in range(state.epochs_done, train.epochs):
        state.epoch = epoch
        state.model.train()
        epoch_start = time.perf_counter()
        batches = iterate_batches(state.data.train, train.batch_size, shuffle=True, generator=state.generators["shuffle"])
        for index, (x, y) in enumerate(batches):
            if train.max_steps_per_epoch is not None and index >= train.max_steps_per_epoch:
                break
            values, grad_norm = train_step(state, x, y)
            state.step += 1
            for callback in state.callbacks:
                callback.on_train_batch(state, values)
            if state.diverged_step is not None:
                break
            _update(state, grad_norm)
            for callback in state.callbacks:
                callback.on_step_end(state)
            if train.val_every is not None and state.step % train.val_every == 0:
                validate(state)
        if state.diverged_step is not None:
            break
        if state.last_validated != state.step:
            validate(state)
        state.train_time += time.perf_counter() - epoch_start
        state.epochs_done = epoch + 1
        for callback in state.callbacks:
            callback.on_epoch_end(state)
    for callback in state.callbacks:
        callback.on_fit_end(state)
    return state


def finite(*values: float) -> bool:
    """Whether every value is a finite number."""
    return all(math.isfinite(value) for value in values)
