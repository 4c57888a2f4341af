"""One training step of an ensemble, and each member's gradient recording.

:class:`EnsembleTrainer` does for S members at once what a single run's loop
does per step: forward, each member's own loss, backward, each member's
gradient norm (before clipping), divergence check, clipping by its own norm,
and its own optimiser update. A member whose loss or gradient norm is not
finite is marked diverged at that step and frozen from then on (parameters
and optimiser state untouched; it keeps being computed, harmlessly, since
members never mix), while the others go on.

:class:`EnsembleGradientRecorder` gives, for every member, the table that a
:class:`gradlab.instruments.recorder.GradientRecorder` on that member's own single
model would give, with that member's ``run_id`` and ``seed``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from gradlab.instruments.recorder import gradient_frame, gradient_rows, newest_step_frame, safe_norm
from gradlab.nn.models import StateKey, parse_mode
from gradlab.training.ensemble.model import EnsembleModel
from gradlab.training.ensemble.optim import (
    EnsembleOptimiser,
    clip_member_grads_,
    member_grad_norms,
)

LossFunction = Callable[[Tensor, Tensor], Tensor]


def cross_entropy_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The classification loss of one member's batch, as a single run computes it (in its dtype)."""
    # As gradlab.training.batch_loss: only half-precision logits are lifted to float32.
    low = logits.dtype in (torch.float16, torch.bfloat16)
    return F.cross_entropy(logits.float() if low else logits, y)


class EnsembleGradientRecorder:
    """Per-member norms of dL/dh_t (and dL/dc_t) on chosen steps, as S single-model recorders would give.

    Args:
        model: the ensemble.
        every: record steps ``0, every, 2*every, ...``.
        run_infos: one mapping per member with ``run_id`` and ``seed`` (and
            optionally further constant columns); ``cell`` and ``activation``
            default to the ensemble's.
    """

    def __init__(self, model: EnsembleModel, *, every: int = 10, run_infos: Sequence[Mapping[str, object]]) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if len(run_infos) != model.num_members:
            raise ValueError(f"expected {model.num_members} run_infos (one per member), got {len(run_infos)}")
        self.model, self.every = model, every
        _, activation = parse_mode(model.mode)
        self.run_infos: list[dict[str, object]] = []
        for info in run_infos:
            info = dict(info)
            missing = [key for key in ("run_id", "seed") if key not in info]
            if missing:
                raise ValueError(f"run_info is missing {missing}; each member needs run_id and seed")
            for key, value in (("cell", model.mode), ("activation", activation)):
                if info.setdefault(key, value) != value:
                    raise ValueError(f"run_info[{key!r}] is {info[key]!r} but the ensemble's is {value!r}")
            self.run_infos.append(info)
        self._chunks: list[list[dict]] = [[] for _ in run_infos]
        self._sample_norms: dict[StateKey, Tensor] = {}  # (S, B) per state
        self._recording = False

    def should_record(self, step: int) -> bool:
        """Whether step ``step`` is recorded: every ``every``-th, starting at 0."""
        return step % self.every == 0

    @contextlib.contextmanager
    def record(self, *, step: int, epoch: int, members: Sequence[bool] | None = None) -> Iterator[None]:
        """Record the forward and backward run inside the block, for the ``members`` flagged (all by default).

        Raises:
            RuntimeError: if blocks nest, or no gradient reached the states.
        """
        if self._recording:
            raise RuntimeError("EnsembleGradientRecorder.record is already active; blocks cannot nest")
        self._recording, self._sample_norms = True, {}
        handle = self.model.add_gradient_observer(self._store)
        try:
            yield
        finally:
            handle.remove()
            self._recording = False
        self._collect(step, epoch, [True] * self.model.num_members if members is None else list(members))

    def maybe_record(self, *, step: int, epoch: int, members: Sequence[bool] | None = None):
        """:meth:`record` on recorded steps, an empty context otherwise."""
        if self.should_record(step):
            return self.record(step=step, epoch=epoch, members=members)
        return contextlib.nullcontext()

    def frame(self, member: int) -> pd.DataFrame:
        """Member ``member``'s recorded steps (:data:`gradlab.store.schema.GRADIENTS`), with its run columns."""
        return gradient_frame(self._chunks[member], self.run_infos[member])

    def latest_frame(self, member: int, step: int) -> pd.DataFrame | None:
        """Member ``member``'s rows of recorded step ``step`` if it is its newest recording, else None."""
        return newest_step_frame(self._chunks[member], self.run_infos[member], step)

    def take(self, member: int) -> pd.DataFrame:
        """Member ``member``'s recorded steps (as :meth:`frame`), forgotten here once taken."""
        frame = self.frame(member)
        self._chunks[member].clear()
        return frame

    def clear(self) -> None:
        """Forget the recorded steps (for example after saving them)."""
        for chunks in self._chunks:
            chunks.clear()

    def _store(self, key: StateKey, grad: Tensor) -> None:
        self._sample_norms[key] = safe_norm(grad.detach(), dim=2)  # (S, B)

    def _collect(self, step: int, epoch: int, members: list[bool]) -> None:
        sample_norms, self._sample_norms = self._sample_norms, {}
        if not sample_norms:
            raise RuntimeError("no gradient reached the ensemble's states: run forward and backward inside `record`")
        keys = list(sample_norms)
        stacked = torch.stack(list(sample_norms.values())).to(torch.float64)  # (N, S, B)
        norms = torch.stack((safe_norm(stacked, dim=2), stacked.sum(dim=2)), dim=2)
        values = norms.cpu().numpy()  # one device-to-host copy for all members; (N, S, 2)
        for member, wanted in enumerate(members):
            if wanted:
                rows = gradient_rows(keys, values[:, member, 0], values[:, member, 1], step=step, epoch=epoch)
                self._chunks[member].append(rows)


@dataclass
class StepResult:
    """What one ensemble step measured, per member (host values)."""

    loss: list[float]
    grad_norm: list[float]  # before clipping
    diverged: list[bool]  # newly diverged at this step
    logits: Tensor  # (S, B, C), detached, for accuracy


class EnsembleTrainer:
    """Steps an ensemble: per-member loss, norm, divergence, clipping and update.

    Args:
        model: the ensemble.
        optimiser: its per-member optimiser.
        clip_grad_norm: clip each member's total gradient norm to this; None: no clipping;
            a sequence: one such value per member.
        clip_grad_value: then clamp every gradient element to [-v, v]; None: no clamping.
        loss_fn: ``loss_fn(logits, y)`` for one member's batch, mean-reduced
            (the single run's loss; default :func:`cross_entropy_loss`).
        recorder: records gradients on its steps, for members active then.

    ``active[s]`` is False once member s diverged; ``diverged_step[s]`` is the
    step (counted from 1, as the history's ``step``) at which it did.
    """

    def __init__(
        self,
        model: EnsembleModel,
        optimiser: EnsembleOptimiser,
        *,
        clip_grad_norm: float | Sequence[float | None] | None = None,
        clip_grad_value: float | None = None,
        loss_fn: LossFunction = cross_entropy_loss,
        recorder: EnsembleGradientRecorder | None = None,
    ) -> None:
        if optimiser.num_members != model.num_members:
            raise ValueError(f"optimiser has {optimiser.num_members} members, the model {model.num_members}")
        self.model, self.optimiser = model, optimiser
        self.clip_grad_norm = _per_member_limits(clip_grad_norm, model.num_members, optimiser.parameters[0])
        self.clip_grad_value = clip_grad_value
        self.loss_fn, self.recorder = loss_fn, recorder
        self.active = [True] * model.num_members
        self.diverged_step: list[int | None] = [None] * model.num_members

    def step(self, x: Tensor, y: Tensor, *, step: int, epoch: int) -> StepResult:
        """One optimiser step on each member's batch ``x[s]`` (B, T, F), ``y[s]``; ``step`` counts steps done."""
        self.optimiser.zero_grad()
        recording = (
            self.recorder.maybe_record(step=step, epoch=epoch, members=self.active)
            if self.recorder is not None else contextlib.nullcontext()
        )
        with recording:
            logits = self.model(x)
            losses = torch.stack([self.loss_fn(logits[s], y[s]) for s in range(self.model.num_members)])
            losses.sum().backward()  # members never mix: each one's gradient is its own loss's
        norms = member_grad_norms(self.optimiser.parameters)
        loss_values, norm_values = torch.stack([losses.detach().double(), norms.double()]).tolist()
        diverged = [
            on and not (math.isfinite(loss) and math.isfinite(norm))
            for on, loss, norm in zip(self.active, loss_values, norm_values)
        ]
        for member, now in enumerate(diverged):
            if now:
                self.active[member], self.diverged_step[member] = False, step + 1
        if self.clip_grad_norm is not None:
            clip_member_grads_(self.optimiser.parameters, self.clip_grad_norm, norms)
        if self.clip_grad_value is not None:  # elementwise, so per member by construction
            torch.nn.utils.clip_grad_value_(self.optimiser.parameters, self.clip_grad_value)
        self.optimiser.step(self.active)
        return StepResult(loss_values, norm_values, diverged, logits.detach())


def _per_member_limits(limit: float | Sequence[float | None] | None, members: int,
                       like: Tensor) -> float | Tensor | None:
    """One clipping limit for all members, a tensor (S,) of them (inf: unclipped, a factor of exactly 1), or None."""
    if limit is None or isinstance(limit, (int, float)):
        return None if limit is None else float(limit)
    limits = list(limit)
    if len(limits) != members:
        raise ValueError(f"expected {members} clip_grad_norm values (one per member), got {len(limits)}")
    if all(value is None for value in limits):
        return None
    return torch.tensor([math.inf if value is None else float(value) for value in limits], dtype=like.dtype,
                        device=like.device)
