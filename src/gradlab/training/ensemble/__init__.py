"""Ensembles: S same-shaped models trained as one batched model, each member as its own run.

Build the members as single runs would (each :class:`gradlab.nn.models.RNNModel`
with its own seed's init generator), stack them with :class:`EnsembleModel`,
give it an :class:`EnsembleOptimiser` (one learning rate per member) and step
it with :class:`EnsembleTrainer` on one batch per member, (S, B, T, F).
"""

from gradlab.training.ensemble.model import EnsembleModel
from gradlab.training.ensemble.optim import (
    EnsembleOptimiser,
    clip_member_grads_,
    member_grad_norms,
)
from gradlab.training.ensemble.training import (
    EnsembleGradientRecorder,
    EnsembleTrainer,
    StepResult,
    cross_entropy_loss,
)

__all__ = [
    "EnsembleGradientRecorder",
    "EnsembleModel",
    "EnsembleOptimiser",
    "EnsembleTrainer",
    "StepResult",
    "clip_member_grads_",
    "cross_entropy_loss",
    "member_grad_norms",
]
