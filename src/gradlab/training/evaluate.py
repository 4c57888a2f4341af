"""Losses, accuracies and per-example predictions of a model on a split.

Accuracies are fractions (floats), never floored. For copy memory (per-step
targets whose class 0 is the blank) accuracy counts only the steps whose target
is a symbol, not the blanks a constant guess gets right; regression has no
accuracy (NaN).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradlab.data import (
    TASK_CLASSIFICATION,
    TASK_REGRESSION,
    TASK_SEQUENCE_CLASSIFICATION,
    SplitTensors,
    iterate_batches,
)
from gradlab.store import schema

Autocast = Callable[[], contextlib.AbstractContextManager]
Scored = Callable[[Tensor], Tensor] | None


def scored_targets(task: str, class_names: tuple[str, ...]) -> Scored:
    """Which targets count towards accuracy: all, symbols only (copy memory), or none (regression)."""
    if task == TASK_REGRESSION:
        return None
    if task == TASK_SEQUENCE_CLASSIFICATION and class_names[:1] == ("blank",):
        return lambda y: y != 0
    return lambda y: torch.ones_like(y, dtype=torch.bool)


def loss_precision(logits: Tensor) -> Tensor:
    """``logits`` in the dtype a loss is computed in: float32 for half precision, else unchanged."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def batch_loss(logits: Tensor, y: Tensor, task: str, reduction: str = "mean") -> Tensor:
    """The training loss of a batch: cross-entropy, per-step cross-entropy, or MSE for regression.

    The loss is computed in the run's dtype (float64 runs keep float64 gradients); only
    half-precision logits (autocast) are lifted to float32, where a reduction over the batch
    would lose digits.
    """
    logits = loss_precision(logits)
    if task == TASK_REGRESSION:
        return F.mse_loss(logits[:, 0], y, reduction=reduction)  # (B, 1) vs (B,): compare column 0
    if task == TASK_SEQUENCE_CLASSIFICATION:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


def batch_correct(logits: Tensor, y: Tensor, scored: Scored) -> tuple[Tensor, Tensor]:
    """(correct, counted) predictions of a batch, as float64 tensors on its device."""
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
    autocast: Autocast = contextlib.nullcontext,
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` over a whole split (or its first ``max_batches`` batches).

    Returns:
        ``(loss, accuracy)``: the loss averaged over samples (over every step
        for per-step targets), the accuracy a fraction in [0, 1] (NaN for
        regression).
    """
    was_training = model.training
    model.eval()
    scored = scored_targets(task, class_names)
    totals = torch.zeros(3, dtype=torch.float64, device=split.x.device)  # loss sum, correct, counted
    elements = 0
    for index, (x, y) in enumerate(iterate_batches(split, batch_size, shuffle=False)):
        if max_batches is not None and index >= max_batches:
            break
        with autocast():
            logits = model(x)
        totals[0] += batch_loss(logits, y, task, reduction="sum").double()
        elements += y.numel()
        hits, count = batch_correct(logits, y, scored)
        totals[1] += hits
        totals[2] += count
    model.train(was_training)
    loss, correct, counted = totals.tolist()
    accuracy = correct / counted if scored is not None and counted else float("nan")
    return loss / max(elements, 1), accuracy


@torch.no_grad()
def predictions(
    model: nn.Module,
    splits: Mapping[str, SplitTensors],
    *,
    batch_size: int,
    run_info: Mapping[str, object],
    autocast: Autocast = contextlib.nullcontext,
) -> pd.DataFrame:
    """Per-example predictions (:data:`gradlab.store.schema.PREDICTIONS`) of a classifier on each named split."""
    was_training = model.training
    model.eval()
    parts = []
    for name, split in splits.items():
        probabilities = []
        for x, _ in iterate_batches(split, batch_size, shuffle=False):
            with autocast():
                logits = model(x)
            probabilities.append(torch.softmax(logits.double(), dim=-1).cpu())
        p = torch.cat(probabilities).numpy()  # (N, classes)
        labels = split.y.cpu().numpy()
        predicted = p.argmax(axis=1)
        parts.append(pd.DataFrame({
            **{key: [value] * len(labels) for key, value in run_info.items()},
            "split": name,
            "example": np.arange(len(labels)),
            "label": labels,
            "predicted": predicted,
            "correct": predicted == labels,
            "label_probability": p[np.arange(len(labels)), labels],
            "probabilities": list(p),
        }))
    model.train(was_training)
    return schema.conform(pd.concat(parts, ignore_index=True), "predictions")


def has_predictions(task: str) -> bool:
    """Whether a task has one class label per example (so a predictions table)."""
    return task == TASK_CLASSIFICATION
