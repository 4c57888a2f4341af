"""Per-member optimisers, gradient norms and clipping over stacked parameters.

Every parameter here has a leading member dimension S (see
:class:`gradlab.training.ensemble.EnsembleModel`). Each member is updated exactly as
its own ``torch.optim.Adam``/``SGD`` (default settings, ``amsgrad=False``,
``momentum=0``) would update it, with its own learning rate and step count,
using the same operations in the same order as torch's single-tensor
implementation; a frozen member (diverged) is left exactly as it was,
parameters and state.

:func:`member_grad_norms` and :func:`clip_member_grads_` are
``torch.nn.utils.get_total_norm`` and ``clip_grads_with_norm_`` per member.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

OPTIMISERS: tuple[str, ...] = ("adam", "sgd")
_TORCH_OPTIMISERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


@functools.cache
def _torch_defaults(kind: str) -> dict[str, Any]:
    """The settings of a torch ``Adam``/``SGD`` param group made with every default: its keyword defaults."""
    signature = inspect.signature(_TORCH_OPTIMISERS[kind].__init__)
    return {name: parameter.default for name, parameter in signature.parameters.items()
            if parameter.default is not inspect.Parameter.empty}


def _per_member(values: Sequence[float], like: Tensor) -> Tensor:
    """(S, 1, ..., 1): one value per member, broadcasting against ``like`` (S, ...)."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *(1,) * (like.dim() - 1))


def member_grad_norms(parameters: Sequence[Tensor]) -> Tensor:
    """Each member's total L2 gradient norm, (S,): ``get_total_norm`` of its own gradients.

    Parameters without a gradient are skipped, as torch does.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        raise ValueError("no parameter has a gradient; run backward first")
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (P, S)
    return torch.linalg.vector_norm(norms, dim=0)


def clip_member_grads_(parameters: Sequence[Tensor], max_norm: float | Tensor, norms: Tensor) -> None:
    """Scale each member's gradients by ``min(1, max_norm / (norm + 1e-6))``, as ``clip_grads_with_norm_``.

    ``max_norm`` is one limit, or a tensor (S,) of limits per member (inf: that member unclipped).
    """
    coefficient = torch.clamp(max_norm / (norms + 1e-6), max=1.0)  # (S,)
    for p in parameters:
        if p.grad is not None:
            p.grad.mul_(coefficient.view(-1, *(1,) * (p.grad.dim() - 1)).to(p.grad.dtype))


class EnsembleOptimiser:
    """Adam or SGD for each member of stacked parameters, each with its own learning rate.

    Args:
        parameters: stacked parameters, each (S, ...).
        kind: ``adam`` or ``sgd``.
        lrs: S learning rates.
        weight_decay: L2 penalty added to the gradient (torch's ``weight_decay``).
        betas, eps: Adam's.

    Raises:
        ValueError: on an unknown kind, a wrong number of learning rates, or
            parameters without the member dimension.
    """

    def __init__(
        self,
        parameters: Sequence[nn.Parameter],
        kind: str,
        lrs: Sequence[float],
        *,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if kind not in OPTIMISERS:
            raise ValueError(f"unknown optimiser {kind!r}; expected one of {list(OPTIMISERS)}")
        self.parameters = [p for p in parameters if p.requires_grad]
        self.lrs = [float(lr) for lr in lrs]
        if not self.parameters or any(p.dim() < 1 or p.shape[0] != len(self.lrs) for p in self.parameters):
            raise ValueError(f"expected parameters with a leading member dimension of {len(self.lrs)} (one lr each)")
        self.kind, self.weight_decay, self.betas, self.eps = kind, float(weight_decay), betas, float(eps)
        self.steps = [0] * len(self.lrs)  # optimiser steps taken, per member
        self.exp_avgs = [torch.zeros_like(p) for p in self.parameters] if kind == "adam" else []
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.parameters] if kind == "adam" else []

    @property
    def num_members(self) -> int:
        return len(self.lrs)

    def zero_grad(self) -> None:
        """Drop every gradient (``set_to_none``)."""
        for p in self.parameters:
            p.grad = None

    @torch.no_grad()
    def step(self, active: Sequence[bool] | None = None) -> None:
        """Update the active members (all by default); the others keep parameters and state."""
        active = [True] * self.num_members if active is None else [bool(a) for a in active]
        if len(active) != self.num_members:
            raise ValueError(f"expected {self.num_members} active flags, got {len(active)}")
        if not any(active):
            return
        frozen = [s for s, on in enumerate(active) if not on]
        tensors = self.parameters + self.exp_avgs + self.exp_avg_sqs
        kept = None
        if frozen:
            index = torch.tensor(frozen, device=self.parameters[0].device)
            kept = [(t, index, t.index_select(0, index)) for t in tensors]
        for s, on in enumerate(active):
            self.steps[s] += on
        if self.kind == "adam":
            self._adam()
        else:
            self._sgd()
        for tensor, index, values in kept or ():
            tensor.index_copy_(0, index, values)

    def _adam(self) -> None:
        beta1, beta2 = self.betas
        # Bias corrections on the host in Python floats, exactly as torch computes them.
        steps = [max(step, 1) for step in self.steps]  # a frozen member at step 0 is restored anyway
        step_sizes = [-(lr / (1 - beta1**step)) for lr, step in zip(self.lrs, steps)]
        corrections = [(1 - beta2**step) ** 0.5 for step in steps]
        for p, exp_avg, exp_avg_sq in zip(self.parameters, self.exp_avgs, self.exp_avg_sqs):
            grad = p.grad
            if grad is None:
                continue
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / _per_member(corrections, p)).add_(self.eps)
            # torch's addcdiv computes p + (value * exp_avg) / denom; value differs per member here.
            p.add_(exp_avg.mul(_per_member(step_sizes, p)).div_(denom))

    def _sgd(self) -> None:
        for p in self.parameters:
            grad = p.grad
            if grad is None:
                continue
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            p.add_(grad.mul(_per_member([-lr for lr in self.lrs], p)))

    def _template(self, member: int) -> torch.optim.Optimizer:
        """A torch optimiser over copies of member ``member``'s parameters, with its settings."""
        copies = [nn.Parameter(p[member].detach().clone()) for p in self.parameters]
        options: dict[str, Any] = {"lr": self.lrs[member], "weight_decay": self.weight_decay}
        if self.kind == "adam":
            options.update(betas=self.betas, eps=self.eps)
        return _TORCH_OPTIMISERS[self.kind](copies, **options)

    def member_state_dict(self, member: int) -> dict[str, Any]:
        """Member ``member``'s state as its own ``torch.optim.Adam``/``SGD`` ``state_dict`` would be.

        Built without a torch optimiser: making one imports ``torch._dynamo`` (about 1 s, once per process),
        which nothing else an ensemble does needs.
        """
        settings: dict[str, Any] = {"lr": self.lrs[member], "weight_decay": self.weight_decay}
        if self.kind == "adam":
            settings.update(betas=self.betas, eps=self.eps)
        group = {**_torch_defaults(self.kind), **settings, "params": list(range(len(self.parameters)))}
        state: dict[int, dict[str, Tensor]] = {}
        if self.kind == "adam" and self.steps[member] > 0:
            step = float(self.steps[member])
            state = {index: {"step": torch.tensor(step, dtype=torch.float32),
                             "exp_avg": self.exp_avgs[index][member].clone(),
                             "exp_avg_sq": self.exp_avg_sqs[index][member].clone()}
                     for index in range(len(self.parameters))}
        return {"state": state, "param_groups": [group]}

    @torch.no_grad()
    def load_member_state_dict(self, member: int, state_dict: dict[str, Any]) -> None:
        """Restore member ``member`` from a single run's optimiser ``state_dict`` (learning rate included).

        Raises:
            ValueError: if ``state_dict`` does not fit this optimiser (torch's own check).
        """
        template = self._template(member)
        template.load_state_dict(state_dict)  # validates groups and sizes
        group = template.param_groups[0]
        self.lrs[member] = float(group["lr"])
        states = [template.state.get(copy, {}) for copy in group["params"]]
        self.steps[member] = int(states[0]["step"].item()) if states and "step" in states[0] else 0
        for index, state in enumerate(states):
            if self.kind == "adam":
                zero = torch.zeros_like(self.exp_avgs[index][member])
                self.exp_avgs[index][member].copy_(state.get("exp_avg", zero))
                self.exp_avg_sqs[index][member].copy_(state.get("exp_avg_sq", zero))
