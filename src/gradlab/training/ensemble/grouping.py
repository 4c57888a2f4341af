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
from gradlab.config.vocabulary import parse_mode

#: ``--ensemble`` choices: group eligible runs, or train every run alone.
ENSEMBLE_CHOICES: tuple[str, ...] = ("auto", "off")
#: Cells with a hand-written batched backward (:data:`gradlab.nn.bptt.KINDS`).
ENSEMBLE_MODES: tuple[str, ...] = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
#: What may differ between the members of one ensemble: what leaves every shape
#: equal and is cheap per member (the init acts when each member is built).
MEMBER_OPTIONS: tuple[str, ...] = ("train.seed", "train.lr", "train.clip_grad_norm", "model.init", "model.forget_bias")
#: Most members in one ensemble by default (memory grows with it; the speed gain levels off).
DEFAULT_MAX_MEMBERS = 32
#: Fewest members in one ensemble by default: any group of two pays on a GPU, where tiny kernels are launch-bound.
DEFAULT_MIN_MEMBERS = 2
#: Fewest members on a CPU: there a batched step loops over members anyway, and an ensemble of 3 LSTMs
#: stepped slower than 3 single runs (benchmarks/bench_ensemble.py, 1 thread: 0.92x; 1.1x from 4 members);
#: each member's validation, diagnostics and writing cost the same either way.
CPU_MIN_MEMBERS = 4
#: How much later than one run at a time a sweep's units may end, by :func:`run_cost`'s estimate: an ensemble
#: saves about that much per member on a CPU (10-25% at 4 members or more; more on a GPU).
BALANCE_SLACK = 1.1
#: Weight matrices a cell kind multiplies per step and layer: its gates (an LSTM has four, a GRU three), or
#: the modern cells' projections. :func:`run_cost` weighs runs by them.
STEP_MATRICES: dict[str, int] = {"RNN": 1, "GRU": 3, "LSTM": 4, "INDRNN": 1, "MINGRU": 2, "MINLSTM": 3, "LRU": 1,
                                 "DIAGONAL": 1}


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
    min_members: int = DEFAULT_MIN_MEMBERS,
) -> list[list[RunConfig]]:
    """The runs in training units: groups of ensemble members, or single runs.

    Groups keep the runs' order (by first member); a group larger than
    ``max_members`` is cut into equal parts, and one smaller than
    ``min_members`` trains one run at a time. With ``workers`` > 1 the
    units come longest first (by :func:`run_cost`), so that the last ones a
    worker takes are short, and they must keep every worker busy as long as
    one run at a time would (:func:`finish_time` of the estimated costs,
    within :data:`BALANCE_SLACK`). Every group is cut into ``workers`` parts
    (of at least ``min_members``) where that ends sooner; then the costliest
    ensemble is halved, or trained one run at a time where its halves would
    be smaller than ``min_members``, until they do. A worker that idles while
    another trains a whole ensemble costs more than the ensemble saves.

    Raises:
        ValueError: an unknown ``ensemble`` choice, or ``max_members`` or ``min_members`` < 1.
    """
    if ensemble not in ENSEMBLE_CHOICES:
        raise ValueError(f"--ensemble must be one of {', '.join(ENSEMBLE_CHOICES)}, got {ensemble!r}")
    for flag, value in (("--ensemble-max", max_members), ("the fewest ensemble members", min_members)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be an integer >= 1, got {value!r}")
    if ensemble == "off":
        units = [[run] for run in runs]
    else:
        groups: dict[str, list[RunConfig]] = {}
        for index, run in enumerate(runs):
            key = f"single {index}" if ensemble_blocker(run) else ensemble_key(run)
            groups.setdefault(key, []).append(run)
        units = [part for group in groups.values() for part in _split(group, -(-len(group) // max_members))]
        units = [piece for unit in units for piece in (_singles(unit) if len(unit) < min_members else [unit])]
    if workers <= 1:
        return units
    costs = {run.run_id: run_cost(run) for run in runs}

    def cost(unit: list[RunConfig]) -> float:
        return sum(costs[run.run_id] for run in unit)

    def longest_first(units: list[list[RunConfig]]) -> list[list[RunConfig]]:
        # A pool hands the next unit to the first worker free: with the short units last, the workers end together.
        return sorted(units, key=lambda unit: -cost(unit))  # ties keep their order

    def finish(units: list[list[RunConfig]]) -> float:
        return finish_time([cost(unit) for unit in units], workers)

    units = longest_first(units)
    if ensemble == "off":
        return units
    one_by_one = finish_time(sorted(costs.values(), reverse=True), workers)
    # Every worker takes a share of each group where that ends sooner: on a CPU, 5 members step as fast as 10.
    shares = longest_first([piece for unit in units
                            for piece in _split(unit, max(1, min(workers, len(unit) // min_members)))])
    if finish(shares) < finish(units):
        units = shares
    while finish(units) > one_by_one * BALANCE_SLACK:
        largest = max(range(len(units)), key=lambda index: (len(units[index]) > 1, cost(units[index])))
        group = units[largest]
        units[largest:largest + 1] = _split(group, 2) if len(group) // 2 >= min_members else _singles(group)
        units = longest_first(units)
    return units


def run_cost(run: RunConfig) -> float:
    """An estimate of ``run``'s training time, relative to other runs (no unit): it orders and balances units.

    Per step and layer a cell multiplies its :data:`STEP_MATRICES` and does about one matrix's worth of other
    work (validation, diagnostics, recording), so an RNN costs 2, a GRU 4 and an LSTM 5; FSDD runs at hidden
    32 took 0.9, 2.3 and 2.4 s on one CPU thread. It scales with layers, directions, epochs, the hidden size
    and the sequence length where the data sets one.
    """
    model, train = run.model, run.train
    kind, _ = parse_mode(model.mode)
    directions = 1 if model.bidirectional == "none" else 2
    length = run.data.seq_len or 1  # audio: one length for every run of a dataset
    per_step = (1 + STEP_MATRICES.get(kind, 1)) * model.num_layers * directions * model.hidden_size
    return float(per_step * train.epochs * length)


def finish_time(costs: Sequence[float], workers: int) -> float:
    """When ``workers`` finish units of these ``costs``, taken in order by the first worker free (a process pool)."""
    free = [0.0] * max(workers, 1)
    for cost in costs:
        index = free.index(min(free))
        free[index] += cost
    return max(free)


def _singles(group: list[RunConfig]) -> list[list[RunConfig]]:
    """``group`` as units of one run each."""
    return [[run] for run in group]


def _split(group: list[RunConfig], parts: int) -> list[list[RunConfig]]:
    """``group`` in ``parts`` consecutive pieces whose sizes differ by at most one."""
    size, extra = divmod(len(group), parts)
    bounds = [index * size + min(index, extra) for index in range(parts + 1)]
    return [group[start:end] for start, end in zip(bounds, bounds[1:])]
