"""Which runs of a sweep train together as one ensemble (``--ensemble auto``).

Runs that are identical except for their seed, learning rate, gradient-norm
clipping and initialisation (:data:`MEMBER_OPTIONS`) have the same parameter
shapes, data and schedule, so they can be computed as one batched
model (:mod:`gradlab.training.ensemble`) while each still writes its own run folder,
exactly as it would alone (:func:`gradlab.training.train_ensemble`). This
module decides the groups; it imports no torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from gradlab.config import RunConfig

#: ``--ensemble`` choices: group eligible runs, or train every run alone.
ENSEMBLE_CHOICES: tuple[str, ...] = ("auto", "off")
#: Cells with a hand-written batched backward (:data:`gradlab.nn.bptt.KINDS`).
ENSEMBLE_MODES: tuple[str, ...] = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
#: What may differ between the members of one ensemble: what leaves every shape
#: equal and is cheap per member (the init acts when each member is built).
MEMBER_OPTIONS: tuple[str, ...] = ("train.seed", "train.lr", "train.clip_grad_norm", "model.init", "model.forget_bias")
#: Most members in one ensemble by default (memory grows with it; the speed gain levels off).
DEFAULT_MAX_MEMBERS = 32


def ensemble_blocker(run: RunConfig) -> str | None:
    """Why ``run`` cannot train as an ensemble member, or None if it can."""
    model, train = run.model, run.train
    if model.mode not in ENSEMBLE_MODES:
        return f"cell {model.mode} has no batched backward (ensembles support {', '.join(ENSEMBLE_MODES)})"
    if model.bidirectional != "none":
        return f"bidirectional {model.bidirectional!r} (ensembles are unidirectional)"
    if train.amp:
        return "--amp (autocast uses the plain autograd unroll)"
    if train.omega_weight or train.floss_weight:
        return "a gradient regulariser (--omega-weight or --floss-weight) needs the single model's own backward"
    if train.record_parameters:
        return "--record-parameters (the ensemble's recorder records the state gradients only)"
    return None


def ensemble_key(run: RunConfig) -> str:
    """Runs with equal keys differ only in :data:`MEMBER_OPTIONS` (and run id)."""
    values = run.to_dict()
    values.pop("run_id", None)
    for option in MEMBER_OPTIONS:
        part, name = option.split(".")
        values[part] = {key: value for key, value in values[part].items() if key != name}
    return json.dumps(values, sort_keys=True, default=str)


def group_runs(
    runs: Sequence[RunConfig],
    *,
    ensemble: str = "auto",
    workers: int = 1,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> list[list[RunConfig]]:
    """The runs in training units: groups of ensemble members, or single runs.

    Groups keep the runs' order (by first member); a group larger than
    ``max_members`` is cut into equal parts. With ``workers`` > 1 the
    largest groups are halved until every worker has a unit, as long as a
    group has more than one member: workers that sit idle would cost more
    than a smaller ensemble saves.

    Raises:
        ValueError: an unknown ``ensemble`` choice, or ``max_members`` < 1.
    """
    if ensemble not in ENSEMBLE_CHOICES:
        raise ValueError(f"--ensemble must be one of {', '.join(ENSEMBLE_CHOICES)}, got {ensemble!r}")
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ValueError(f"--ensemble-max must be an integer >= 1, got {max_members!r}")
    if ensemble == "off":
        return [[run] for run in runs]
    groups: dict[str, list[RunConfig]] = {}
    for index, run in enumerate(runs):
        key = f"single {index}" if ensemble_blocker(run) else ensemble_key(run)
        groups.setdefault(key, []).append(run)
    units = [part for group in groups.values() for part in _split(group, -(-len(group) // max_members))]
    while units and len(units) < workers:
        largest = max(range(len(units)), key=lambda index: len(units[index]))
        group = units[largest]
        if len(group) < 2:
            break
        units[largest:largest + 1] = _split(group, 2)
    return units


def _split(group: list[RunConfig], parts: int) -> list[list[RunConfig]]:
    """``group`` in ``parts`` consecutive pieces whose sizes differ by at most one."""
    size, extra = divmod(len(group), parts)
    bounds = [index * size + min(index, extra) for index in range(parts + 1)]
    return [group[start:end] for start, end in zip(bounds, bounds[1:])]
