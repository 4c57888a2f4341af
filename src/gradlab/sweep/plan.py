"""Planning a sweep: the runs a grid of options describes, named, sized and checked.

- :func:`expand_cells` turns ``RNN`` into one mode per activation.
- :func:`plan_runs` takes a base :class:`RunConfig` and crosses cells, a grid
  of option values (any scalar option of the model, data or training config,
  e.g. ``{"lr": [1e-3, 3e-3], "clip_grad_norm": [None, 1.0]}``), parameter
  targets, data variants and seeds; each run gets an id that names what
  varies (``LSTM-lr0.001-clipnone-s3``).
- :func:`hidden_for_params` chooses the hidden size whose parameter count is
  closest to a target, for parameter-matched comparisons.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from gradlab.config import (
    ACTIVATION_NAMES,
    CONFIG_PARTS,
    DataConfig,
    RunConfig,
    normalise_mode,
    parse_mode,
)

DEFAULT_CELLS: tuple[str, ...] = ("RNN", "LSTM", "GRU")
DEFAULT_ACTIVATIONS: tuple[str, ...] = ("tanh", "relu")
DEFAULT_SEEDS: tuple[int, ...] = tuple(range(10))  # a verdict needs at least 5 seeds
#: Tiny data for --dry-run: a few FSDD takes per speaker, or a few synthetic sequences.
DRY_RUN_TAKES: tuple[int, ...] = (0, 5, 10, 11)
#: Short names of grid options in run ids (others use their field name).
SHORT_NAMES: dict[str, str] = {"hidden_size": "h", "num_layers": "L", "clip_grad_norm": "clip", "delay": "K",
                               "weight_decay": "wd", "batch_size": "b", "readout": "", "init": "",
                               "test_speaker": "test-", "train_fraction": "frac"}
#: Which part of a RunConfig each option belongs to.
OPTION_PART: dict[str, str] = {item.name: part for part, cls in CONFIG_PARTS.items() for item in fields(cls)}


def expand_cells(cells: Sequence[str], activations: Sequence[str] = DEFAULT_ACTIVATIONS) -> tuple[str, ...]:
    """Modes from ``cells``: ``RNN`` becomes ``RNN_<ACT>`` for each activation; others are normalised.

    Raises:
        ValueError: an unknown cell or activation, or an empty list.
    """
    unknown = [name for name in activations if name not in ACTIVATION_NAMES]
    if unknown:
        raise ValueError(f"unknown activation(s) {unknown}; expected some of {list(ACTIVATION_NAMES)}")
    modes: list[str] = []
    for cell in cells:
        if cell.strip().upper() == "RNN":
            if not activations:
                raise ValueError("cell RNN needs at least one --activations entry")
            expanded = [f"RNN_{name.upper()}" for name in activations]
        else:
            expanded = [normalise_mode(cell.strip())]
        modes += [mode for mode in expanded if mode not in modes]
    if not modes:
        raise ValueError("no cells to train: --cells is empty")
    return tuple(modes)


def layer_parameters(mode: str, inputs: int, hidden: int, bias: bool = True) -> int:
    """Parameters of one cell of ``mode`` reading ``inputs`` features with ``hidden`` units (torch-free)."""
    kind = parse_mode(mode)[0]
    if kind == "LRU":  # nu, theta, gamma (H each); B_re, B_im, D (H, I); C_re, C_im (H, H); no bias
        return 3 * hidden + 3 * hidden * inputs + 2 * hidden * hidden
    if kind in ("INDRNN", "DIAGONAL"):  # weight_ih (H, I), the diagonal weight_hh (H,), bias_ih (H,)
        return hidden * inputs + hidden + (hidden if bias else 0)
    if kind in ("MINGRU", "MINLSTM"):  # gates from the input only: weight_ih (G*H, I), bias_ih (G*H,)
        gates = 2 if kind == "MINGRU" else 3
        return gates * hidden * inputs + (gates * hidden if bias else 0)
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[kind]
    return gates * hidden * (inputs + hidden) + (2 * gates * hidden if bias else 0)


def count_parameters(mode: str, input_size: int, hidden_size: int, num_layers: int, output_size: int, *,
                     bidirectional: str = "none", bias: bool = True) -> int:
    """Parameters of the :class:`gradlab.nn.models.RNNModel` these sizes describe (torch-free)."""
    directions = 1 if bidirectional == "none" else 2
    total = 0
    for layer in range(num_layers):
        inputs = input_size if layer == 0 else hidden_size * (2 if bidirectional == "interleaved" else 1)
        total += directions * layer_parameters(mode, inputs, hidden_size, bias)
    return total + (directions * hidden_size + 1) * output_size


def hidden_for_params(target: int, mode: str, input_size: int, num_layers: int, output_size: int, *,
                      bidirectional: str = "none", bias: bool = True) -> tuple[int, int]:
    """The hidden size whose model's parameter count is closest to ``target`` (ties: the smaller), and that count."""
    if target < 1:
        raise ValueError(f"a parameter target must be a positive integer, got {target!r}")
    best = (1, count_parameters(mode, input_size, 1, num_layers, output_size, bidirectional=bidirectional, bias=bias))
    hidden = 1
    while True:
        hidden += 1
        count = count_parameters(mode, input_size, hidden, num_layers, output_size, bidirectional=bidirectional,
                                 bias=bias)
        if abs(count - target) < abs(best[1] - target):
            best = (hidden, count)
        if count > target:
            return best


def _label(name: str, value: Any) -> str:
    text = "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return f"{SHORT_NAMES.get(name, name)}{text}"


def set_option(config: RunConfig, name: str, value: Any) -> RunConfig:
    """``config`` with option ``name`` (a field of its model, data or train part) set to ``value``."""
    try:
        part = OPTION_PART[name]
    except KeyError:
        raise ValueError(f"unknown option {name!r}; options are {sorted(OPTION_PART)}") from None
    return replace(config, **{part: replace(getattr(config, part), **{name: value})})


def plan_runs(
    base: RunConfig,
    *,
    modes: Sequence[str],
    seeds: Sequence[int],
    grid: Mapping[str, Sequence[Any]] | None = None,
    bidirectional: Sequence[str] = ("none",),
    data_variants: Sequence[tuple[str, DataConfig]] | None = None,
    match_params: Sequence[int] = (),
    shapes: tuple[int, int] | None = None,
) -> list[RunConfig]:
    """Every combination of mode, grid point, parameter target, data variant and seed, as named runs.

    Run ids read ``<MODE>[-<bidirectional>][-<variant>][-p<target>][-<option><value>...]-s<seed>``,
    naming only grid options with more than one value.

    Args:
        base: every option the grid does not set.
        modes: normalised cell modes (see :func:`expand_cells`).
        seeds: distinct seeds; each grid point runs with every seed.
        grid: option name -> values to cross (an option of any config part).
        bidirectional: designs to cross (named in the id when not ``none``).
        data_variants: (suffix, DataConfig) pairs, e.g. one per sequence length.
        match_params: parameter targets; each run's hidden size is chosen per
            cell to come closest (needs ``shapes``).
        shapes: (input size, output size) of the data, for ``match_params``.

    Raises:
        ValueError: an empty or repeated seed list, an unknown option, an
            invalid combination (naming the run and the option), or repeated ids.
    """
    if not seeds:
        raise ValueError("the seed list is empty; give at least one seed (e.g. --seeds 0,1,2)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {list(seeds)}")
    grid = {name: list(values) for name, values in (grid or {}).items()}
    for name, values in grid.items():
        if not values:
            raise ValueError(f"option {name!r} has an empty list of values")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"option {name!r} repeats a value: {values}")
    if match_params and shapes is None:
        raise ValueError("matching parameter counts needs the data's input and output sizes")
    variants = data_variants if data_variants is not None else [("", base.data)]
    names = list(grid)
    runs = []
    for mode, choice, (suffix, data), target, point, seed in itertools.product(
        modes, bidirectional, variants, match_params or [None], itertools.product(*grid.values()), seeds
    ):
        parts = [normalise_mode(mode)] + ([choice] if choice != "none" else []) + ([suffix] if suffix else [])
        parts += [f"p{target}"] if target is not None else []
        parts += [_label(name, value) for name, value in zip(names, point) if len(grid[name]) > 1]
        run_id = "-".join(parts + [f"s{seed}"])
        try:
            config = replace(base, data=data, run_id=run_id)
            config = set_option(set_option(config, "mode", mode), "bidirectional", choice)
            for name, value in zip(names, point):
                config = set_option(config, name, value)
            if target is not None:
                model = config.model
                hidden, _ = hidden_for_params(target, model.mode, shapes[0], model.num_layers, shapes[1],
                                              bidirectional=model.bidirectional, bias=model.bias)
                config = set_option(set_option(config, "hidden_size", hidden), "param_target", target)
            runs.append(set_option(config, "seed", seed))
        except (ValueError, TypeError) as error:
            raise ValueError(f"run {run_id}: {error}") from None
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"run ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    return runs


def varying_options(runs: Sequence[RunConfig]) -> list[str]:
    """Dotted option names whose value differs between ``runs`` (seed and run id aside)."""
    flat = [{f"{part}.{key}": value for part in CONFIG_PARTS for key, value in run.to_dict()[part].items()}
            for run in runs]
    keys = [key for key in flat[0] if key != "train.seed"] if flat else []
    return [key for key in keys if len({repr(item[key]) for item in flat}) > 1]


def dry_run_config(base: RunConfig) -> RunConfig:
    """``base`` shrunk to a smoke test: one batch per run and per evaluation, tiny model and data, CPU."""
    data = base.data
    if data.dataset == "fsdd":
        data = replace(data, takes=DRY_RUN_TAKES)
    elif not data.is_audio:
        data = replace(data, n_train=32, n_validation=16, n_test=16, seq_len=min(data.seq_len or 30, 30))
    return replace(
        base,
        model=replace(base.model, hidden_size=8, num_layers=1),
        data=data,
        train=replace(base.train, epochs=1, batch_size=16, max_steps_per_epoch=1, max_eval_batches=1, device="cpu",
                      amp=False, record_every=1, val_every=None, diagnostics_batch=4, jacobian_batch=2),
    )
