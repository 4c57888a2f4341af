"""An ensemble member seen as a single run: its optimiser, its gradient table, its weights, its validation.

Each member of :func:`gradlab.training.train_ensemble` is a :class:`TrainState`
whose model's parameters are views of the ensemble's stacked parameters
(:func:`share_parameters`), so a run's callbacks see the member as they
would see a run trained alone.
"""

from __future__ import annotations

import contextlib

import pandas as pd
import torch
from torch import nn

from gradlab.data import SplitTensors, iterate_batches
from gradlab.nn.models import RNNModel
from gradlab.training.callbacks import GradientRecording
from gradlab.training.ensemble import EnsembleGradientRecorder, EnsembleModel, EnsembleOptimiser
from gradlab.training.evaluate import batch_correct, batch_loss, scored_targets
from gradlab.training.loop import TrainState


class MemberOptimiser:
    """One member's part of an :class:`EnsembleOptimiser`, as a run's callbacks use a torch optimiser.

    Its ``state_dict`` is the one a single run's ``torch.optim.Adam``/``SGD``
    would have, so checkpoints move freely between ensembles and single runs.
    """

    def __init__(self, shared: EnsembleOptimiser, member: int, model: nn.Module) -> None:
        self.shared, self.member, self.model = shared, member, model

    @property
    def param_groups(self) -> list[dict]:
        """The one group's learning rate, where a run's loop and callbacks read it."""
        return [{"lr": self.shared.lrs[self.member]}]

    def state_dict(self) -> dict:
        return self.shared.member_state_dict(self.member)

    def load_state_dict(self, saved: dict) -> None:
        self.shared.load_member_state_dict(self.member, saved)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for parameter in self.model.parameters():
            parameter.grad = None

    def step(self) -> None:
        raise RuntimeError("an ensemble member is updated by its ensemble (EnsembleTrainer.step)")


class MemberRecording(GradientRecording):
    """A member's ``gradients`` table: training steps from the ensemble's recorder, the final batch from its own."""

    # A single run's key: the rows in its checkpoint resume as an ensemble member or alone.
    state_key = "GradientRecording"

    def __init__(self, state: TrainState, every: int, shared: EnsembleGradientRecorder, member: int) -> None:
        super().__init__(state, every)
        self.shared, self.member = shared, member

    def step_context(self, state: TrainState) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # the ensemble's recorder listens to the batched backward

    def latest_rows(self, step: int) -> pd.DataFrame | None:
        """The member's rows of ``step``: a training step's from the ensemble's recorder, the final batch's its own."""
        rows = self.shared.latest_frame(self.member, step)
        return rows if rows is not None else super().latest_rows(step)

    def collect(self) -> None:
        """Move the member's rows from the ensemble's recorder, then the final batch's from its own, into ``rows``."""
        self.rows.add(self.shared.take(self.member))
        super().collect()


def share_parameters(ensemble: EnsembleModel, member: int, model: RNNModel) -> None:
    """Make ``model``'s parameters views of member ``member``'s slice of the ensemble's (same storage)."""
    stacked = dict(ensemble.named_parameters())
    for name, parameter in list(model.named_parameters()):
        owner, _, attribute = name.rpartition(".")
        view = stacked[name].detach()[member]
        setattr(model.get_submodule(owner), attribute, nn.Parameter(view, requires_grad=parameter.requires_grad))


@torch.no_grad()
def evaluate_members(ensemble: EnsembleModel, split: SplitTensors, task: str, *, batch_size: int,
                     class_names: tuple[str, ...], max_batches: int | None) -> list[tuple[float, float]]:
    """(loss, accuracy) of every member on a whole split: :func:`~gradlab.training.evaluate.evaluate`, batched."""
    was_training = ensemble.training
    ensemble.eval()
    members = ensemble.num_members
    scored = scored_targets(task, class_names)
    totals = torch.zeros(members, 3, dtype=torch.float64, device=split.x.device)
    elements = 0
    for index, (x, y) in enumerate(iterate_batches(split, batch_size, shuffle=False)):
        if max_batches is not None and index >= max_batches:
            break
        logits = ensemble(x.unsqueeze(0).expand(members, *x.shape))
        for member in range(members):  # each member's reduction exactly as a single run's
            totals[member, 0] += batch_loss(logits[member], y, task, reduction="sum").double()
            hits, count = batch_correct(logits[member], y, scored)
            totals[member, 1] += hits
            totals[member, 2] += count
        elements += y.numel()
    ensemble.train(was_training)
    results = []
    for loss, correct, counted in totals.tolist():
        accuracy = correct / counted if scored is not None and counted else float("nan")
        results.append((loss / max(elements, 1), accuracy))
    return results
