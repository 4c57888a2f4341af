"""The experiment scripts' command line, generated from the config dataclasses.

Every field of :class:`gradlab.config.ModelConfig`, :class:`DataConfig` and
:class:`TrainConfig` is a flag (``hidden_size`` -> ``--hidden-size``) whose
help and default come from the field itself, so the command line cannot drift
from the library. A scalar option given a comma list (``--lr 0.001,0.003``,
``--clip-grad-norm none,1``) becomes an axis of the sweep's grid: every
combination runs with every seed. Booleans are ``--name``/``--no-name``.
A field with fixed values (``choices`` in its metadata: dataset, optimiser,
readout ...) lists them in ``--help`` and refuses any other value with the
usage, as argparse's own choices do; cells, activations, init schemes and
devices are checked as they are parsed too. Each option's help states its
default once.

Sweep-level flags (cells, seeds, output folder, resume, workers, ...) are
added by :func:`add_sweep_arguments`; :func:`sweep_main` is the whole main
function of an experiment script (see :mod:`gradlab.scripts`). Only a wrong
flag shows the usage: any later error is one ``<prog>: error: <message>``.
"""

from __future__ import annotations

import argparse
import re
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from gradlab.config import (
    ACTIVATION_NAMES,
    CHECKPOINT_EVERY,
    CONFIG_PARTS,
    DEVICES,
    DataConfig,
    RunConfig,
    check_choice,
    normalise_mode,
    parse_scheme,
)
from gradlab.data.advice import command_line_message
from gradlab.store.io import RunFolderError
from gradlab.store.locking import SweepLockedError, SweepLockLost
from gradlab.sweep.executors.options import add_executor_arguments, executor_from_args
from gradlab.sweep.plan import (
    DEFAULT_ACTIVATIONS,
    DEFAULT_CELLS,
    DEFAULT_SEEDS,
    dry_run_config,
    expand_cells,
    plan_runs,
)
from gradlab.sweep.preview import plan_notes, plan_text
from gradlab.training.ensemble.grouping import DEFAULT_MAX_MEMBERS, ENSEMBLE_CHOICES

#: Settings of ``--preset coursework``: the coursework notebook's training setup.
PRESETS: dict[str, dict[str, Any]] = {
    "coursework": {
        "hidden_size": 32, "num_layers": 2, "batch_size": 100, "lr": 0.01, "epochs": 5,
        "normalise": False, "amplitude_scale": 32768.0,  # raw MFCCs of int16 audio, as the notebook read them
    },
}
#: Options where 0 also means "off" (None), as the flags have always read.
ZERO_MEANS_OFF: frozenset[str] = frozenset({"record_every", "val_every"})


def comma_list(kind: type = str) -> Callable[[str], list]:
    """An argparse type: a comma-separated list of ``kind``."""
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        try:
            return [kind(item) for item in items]
        except ValueError as error:
            if kind in (int, float):
                raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") \
                    from None
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


def _scalar(kind: type, optional: bool, name: str, choices: Sequence[str] = ()) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        text = text.strip()
        if optional and (text.lower() in ("none", "off") or (name in ZERO_MEANS_OFF and text == "0")):
            return None
        if kind is bool:
            if text.lower() in ("true", "yes", "1", "on"):
                return True
            if text.lower() in ("false", "no", "0"):
                return False
            raise ValueError(text)
        if choices:
            try:
                check_choice(name.replace("_", " "), text, tuple(choices))
            except ValueError as error:  # a wrong flag value: argparse shows the usage with it
                raise argparse.ArgumentTypeError(str(error)) from None
        elif name in FLAG_CHECKS:
            try:
                FLAG_CHECKS[name](text)
            except ValueError as error:
                raise argparse.ArgumentTypeError(str(error)) from None
        return kind(text)
    return parse


def _check_device(text: str) -> None:
    if text not in DEVICES and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise ValueError(f"unknown device {text!r}; expected one of {list(DEVICES)} or cuda:<index>")


#: Options whose values are checked as they are parsed, beyond a fixed list of choices.
FLAG_CHECKS: dict[str, Callable[[str], Any]] = {"init": parse_scheme, "device": _check_device}


def _check_cell(text: str) -> str:
    if text.strip().upper() != "RNN":
        normalise_mode(text)
    return text


def _check_activation(text: str) -> str:
    if text not in ACTIVATION_NAMES:
        raise ValueError(f"unknown activation {text!r}; expected some of {list(ACTIVATION_NAMES)}")
    return text


def _stated_default(help_text: str, shown: Any, overridden: bool) -> str:
    """``help_text`` stating its default once: its own ``(default: ...)``, else ``shown`` (a script's own wins)."""
    if _OWN_DEFAULT.search(help_text):
        return _OWN_DEFAULT.sub(f"(default: {shown})", help_text) if overridden else help_text
    return f"{help_text} (default: {shown})"


_OWN_DEFAULT = re.compile(r"\(default: [^()]*\)")


def _field_kind(item: Field, hints: Mapping[str, Any]) -> tuple[type, bool, bool]:
    """(element type, optional, is a tuple) of a config field."""
    hint = hints[item.name]
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if optional:
        hint = args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def _values(text: str, parse: Callable[[str], Any], flag: str) -> list[Any]:
    try:
        return [parse(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag}: cannot read {text!r}") from None


def _choice_metavar(item: Field, choices: Sequence[str]) -> str:
    return "{" + ",".join(choices) + "}" if choices else item.name.upper()


def add_config_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, Any]) -> None:
    """One flag per config field (defaults: ``defaults``, else the field's), in a group per config part."""
    for part, cls in CONFIG_PARTS.items():
        group = parser.add_argument_group({"model": "model", "data": "data", "train": "training"}[part])
        hints = typing.get_type_hints(cls)
        for item in fields(cls):
            if not item.metadata.get("cli", True):
                continue
            flag = "--" + item.name.replace("_", "-")
            default = defaults.get(item.name, item.default if item.default is not MISSING else item.default_factory())
            shown = "none" if default is None else ",".join(map(str, default)) if isinstance(default, tuple) \
                else default
            help_text = _stated_default(item.metadata["help"], shown, item.name in defaults)
            kind, optional, is_tuple = _field_kind(item, hints)
            choices = item.metadata.get("choices", ())
            if kind is bool and not is_tuple:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            elif is_tuple:
                group.add_argument(flag, type=comma_list(kind), default=None, metavar=item.name.upper(), help=help_text)
            else:
                parse = _scalar(kind, optional, item.name, choices)
                grid = item.metadata.get("grid", True)
                group.add_argument(flag, default=None, metavar=_choice_metavar(item, choices),
                                   type=(lambda text, p=parse, f=flag: _values(text, p, f)) if grid else parse,
                                   help=help_text + ("; a comma list sweeps the values" if grid else ""))


def add_sweep_arguments(parser: argparse.ArgumentParser, *, defaults: Mapping[str, Any] | None = None) -> None:
    """Every flag of an experiment script: config options, cells and seeds, and where and how to run."""
    defaults = dict(defaults or {})
    parser.set_defaults(script_defaults=defaults)
    cells = parser.add_argument_group("cells and seeds")
    cells.add_argument("--cells", type=comma_list(_check_cell), default=list(DEFAULT_CELLS),
                       help="comma-separated cells from RNN, LSTM, GRU, RNN_<ACTIVATION>, INDRNN, MINGRU, MINLSTM, "
                            "LRU, DIAGONAL (default: RNN,LSTM,GRU)")
    cells.add_argument("--activations", type=comma_list(_check_activation), default=list(DEFAULT_ACTIVATIONS),
                       help=f"activations the RNN cell is swept over, from {', '.join(ACTIVATION_NAMES)} "
                            "(default: tanh,relu)")
    cells.add_argument("--seeds", type=comma_list(int), default=list(DEFAULT_SEEDS),
                       help="comma-separated seeds (default: 0,1,...,9; the report calls a comparison only from 5 "
                            "seeds)")
    cells.add_argument("--match-params", type=comma_list(int), default=[],
                       help="choose each cell's hidden size so its parameter count is closest to N (comma list: "
                            "one comparison per N; overrides --hidden-size)")
    cells.add_argument("--select-by", choices=("validation",), default=None,
                       help="report each cell at the grid point (learning rate, clipping ...) with the best mean "
                            "validation accuracy, chosen separately per test speaker, length, init and other "
                            "compared conditions (test data never takes part in the choice)")
    cells.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="coursework: hidden 32, 2 layers, batch 100, lr 0.01, 5 epochs, raw MFCC "
                            "(explicit flags still win)")
    add_config_arguments(parser, defaults)
    run = parser.add_argument_group("execution and output")
    run.add_argument("--out", default="runs", help="folder that holds sweep folders (default: runs)")
    run.add_argument("--name", default=None, help="sweep folder name (default: derived from the script and dataset)")
    run.add_argument("--workers", type=int, default=1, help="runs in parallel (processes; default: 1)")
    run.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1: small recurrent "
                                                            "models gain little from more, and oversubscribed "
                                                            "threads slow a shared machine by orders of magnitude)")
    run.add_argument("--ensemble", choices=ENSEMBLE_CHOICES, default="auto",
                     help="auto: runs that differ only in seed, learning rate, norm clipping or init train "
                          "together as one batched model, each writing its own run folder (same results); off: "
                          "every run alone (default: auto)")
    run.add_argument("--ensemble-max", type=int, default=DEFAULT_MAX_MEMBERS,
                     help=f"most runs in one ensemble (default: {DEFAULT_MAX_MEMBERS})")
    run.add_argument("--resume", action="store_true", help="continue an existing sweep folder: skip ended runs, "
                                                           "resume interrupted ones from their checkpoint")
    run.add_argument("--overwrite", action="store_true", help="delete an existing sweep folder first")
    run.add_argument("--checkpoint-every", type=float, default=CHECKPOINT_EVERY, metavar="SECONDS",
                     help="seconds of training between a run's epoch checkpoints, which --resume continues from "
                          f"(0: every epoch; default: {CHECKPOINT_EVERY:g})")
    run.add_argument("--no-figures", action="store_true", help="skip drawing figures into <sweep>/figures/")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--tensorboard", default=None, metavar="DIR",
                     help="log every run to TensorBoard in DIR/<sweep name>/<run id> (needs "
                          "pip install 'gradlab[tensorboard]')")
    run.add_argument("--plan", action="store_true",
                     help="print the expanded grid (run ids, their options, how they run) and check every run "
                          "and where its data is; on an existing sweep folder, also which runs ended and which "
                          "--resume would run; writes nothing (no folder, no feature cache, no download)")
    run.add_argument("--dry-run", action="store_true",
                     help="smoke test: one batch per run, tiny model and data, one seed, CPU, into <name>-dry-run")
    add_executor_arguments(parser)


def option_values(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(single values, grid axes) of the config options: flags, over the preset, over the script's defaults."""
    chosen = {**args.script_defaults, **(PRESETS[args.preset] if args.preset else {})}
    grid: dict[str, list[Any]] = {}
    for cls in CONFIG_PARTS.values():
        for item in fields(cls):
            given = getattr(args, item.name, None)
            if given is None:
                continue
            if isinstance(given, list) and not _is_tuple(cls, item):
                if len(given) > 1:
                    grid[item.name] = given
                    chosen.pop(item.name, None)
                    continue
                given = given[0]
            chosen[item.name] = tuple(given) if isinstance(given, list) else given
    if "readout" not in chosen and "readout" not in grid and chosen.get("dataset") == "copy-memory":
        chosen["readout"] = "sequence"  # per-step targets
    if args.match_params:
        chosen.pop("hidden_size", None)
        grid.pop("hidden_size", None)
    return chosen, grid


def _is_tuple(cls: type, item: Field) -> bool:
    return _field_kind(item, typing.get_type_hints(cls))[2]


def base_config(values: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], mode: str) -> RunConfig:
    """The RunConfig of ``values`` (first value of each grid axis; cell ``mode``), checked."""
    parts: dict[str, dict[str, Any]] = {part: {} for part in CONFIG_PARTS}
    for part, cls in CONFIG_PARTS.items():
        for item in fields(cls):
            if item.name in grid:
                parts[part][item.name] = grid[item.name][0]
            elif item.name in values:
                parts[part][item.name] = values[item.name]
    parts["model"]["mode"] = mode
    return RunConfig(**{part: cls(**parts[part]) for part, cls in CONFIG_PARTS.items()})


def default_sweep_name(script: str, data: DataConfig) -> str:
    """A stable sweep folder name, so re-running the same command with --resume finds it."""
    parts = [script, data.dataset]
    if data.is_audio and not data.normalise:
        parts.append("raw")
    return "-".join(parts)


Variants = Callable[[argparse.Namespace, RunConfig], "list[tuple[str, DataConfig]] | None"]


def sweep_main(script: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None, *,
               variants: Variants | None = None) -> int:
    """Parse, plan, check and run a sweep as an experiment script does.

    A wrong flag exits with the usage (argparse); any other bad input or failure before training exits with
    status 2 and one message, its advice in flags.
    """
    args = parser.parse_args(argv)
    try:
        from gradlab.sweep.folder import check_output_path, check_sweep_name

        for flag in ("workers", "threads", "ensemble_max"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be an integer >= 1, got {getattr(args, flag)}")
        if not args.checkpoint_every >= 0:
            raise ValueError(f"--checkpoint-every must be a number of seconds >= 0, got {args.checkpoint_every:g}")
        values, grid = option_values(args)
        modes = expand_cells(args.cells, args.activations)
        base = _template(values, grid, modes)
        if args.dry_run:
            base = dry_run_config(base)
            grid = {name: axis[:1] if name in ("hidden_size", "num_layers") else axis for name, axis in grid.items()}
        name = check_sweep_name(args.name if args.name is not None else default_sweep_name(script, base.data))
        name = f"{name}-dry-run" if args.dry_run else name
        sweep_dir = check_output_path(args.out) / name
        data_variants = variants(args, base) if variants else None
        shapes = _shapes(base) if args.match_params else None
        runs = plan_runs(base, modes=modes, seeds=args.seeds[:1] if args.dry_run else args.seeds, grid=grid,
                         data_variants=data_variants, match_params=args.match_params, shapes=shapes)
        extra = {"grid": grid, "select_by": args.select_by, "match_params": args.match_params,
                 "ensemble": args.ensemble}
        return _execute(args, runs, sweep_dir, argv, extra, parser.prog)
    except (RunFolderError, SweepLockedError, OSError, ValueError) as error:
        # Runtime errors (a folder that exists, no network, a full disk, a setting that does not fit) are the
        # message alone: the usage text is for a wrong flag, which argparse reports above.
        print(f"{parser.prog}: error: {command_line_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def _template(values: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], modes: Sequence[str]) -> RunConfig:
    """The base config, with the first cell it is valid for: each run is checked, and named, when planned."""
    errors = []
    for mode in modes:
        try:
            return base_config(values, grid, mode)
        except ValueError as error:
            errors.append(error)
    raise errors[0]


def _shapes(base: RunConfig) -> tuple[int, int]:
    """(input size, outputs) of the data, for --match-params; audio is located, not read (--plan writes no cache)."""
    from gradlab.data.from_config import load_checked, locate_data

    if base.data.is_audio:
        locate_data(base.data)
        return base.data.n_mfcc, len(base.data.words)  # MFCCs per frame; one class per word
    data = load_checked(base.data, progress=False)
    return data.input_size, data.num_outputs


def _execute(args: argparse.Namespace, runs: list[RunConfig], sweep_dir: Path, argv: Sequence[str] | None,
             extra: dict[str, Any], prog: str) -> int:
    from gradlab.sweep.plan import varying_options
    from gradlab.sweep.runner import SweepFailed, check_devices, fitting_members, run_sweep

    executor = executor_from_args(args, sweep_dir)  # None: this machine (devices checked here)
    if args.plan:  # checks what running would check, but reads no audio and writes nothing (not even a cache)
        replace_dry_run = args.dry_run and not args.resume  # a dry run replaces its folder, as running it would
        notes = plan_notes(runs, sweep_dir, resume=args.resume, overwrite=args.overwrite or replace_dry_run)
        if executor is None:  # a cluster's runs check their device where they run
            check_devices(runs)
        max_members = fitting_members(executor, args.ensemble_max, stream=sys.stdout)
        print(plan_text(runs, sweep_dir, workers=args.workers, executor=executor, ensemble=args.ensemble,
                        max_members=max_members, notes=notes))
        return 0
    # As typed: ``gradlab sweep ...`` passes only the flags, so its subcommand comes from the program name.
    command = [sys.argv[0], *(sys.argv[1:] if argv is None else [*prog.split()[1:], *argv])]
    try:
        overwrite = args.overwrite or (args.dry_run and not args.resume)
        result = run_sweep(runs, sweep_dir, resume=args.resume, overwrite=overwrite,
                           workers=args.workers, threads=args.threads, ensemble=args.ensemble,
                           max_members=args.ensemble_max, command=command, executor=executor,
                           figures=not (args.no_figures or args.dry_run), progress=not args.no_progress, extra=extra,
                           tensorboard=args.tensorboard, checkpoint_every=args.checkpoint_every)
    except (SweepFailed, SweepLockLost) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; ended runs are saved in {sweep_dir}, and --resume continues the sweep", file=sys.stderr)
        return 130
    # Imported now, not before the sweep: gradlab.analysis (scipy.stats, matplotlib) takes 1.8 s to import,
    # and the workers started only after it (run_sweep imports it while they train when figures follow).
    from gradlab.analysis.summary_table import cell_table, format_table

    print(f"\nsweep {result.sweep_dir}: {len(result.summary)} runs")
    if args.dry_run:
        print("(dry run: one batch per run and per evaluation; the numbers mean nothing)")
    print(format_table(cell_table(result.summary, [name.split(".", 1)[1] for name in varying_options(runs)])))
    return 0
