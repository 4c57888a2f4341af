"""Sweeps: many runs of :func:`gradlab.train.train_run` into one resumable folder.

- :func:`plan_runs` expands a base :class:`RunConfig` over cells, seeds,
  bidirectional choices and data variants (sequence lengths), naming each run.
- :func:`run_sweep` checks everything and loads the data *before* it creates
  the folder (bad input never leaves a half-written sweep), then trains each
  run that has not ended, in this process or in a pool of ``workers``
  processes, rewriting ``summary.parquet`` as runs end, and finally draws the
  analysis figures into ``<sweep>/figures/``.
- :func:`cell_table` is the per-cell table printed at the end.

The command-line layer shared by the experiment scripts is
:func:`add_sweep_arguments` and :func:`base_config_from_args`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab.cells import ACTIVATIONS
from gradlab.config import AUDIO_DATASETS, DATASET_NAMES, DTYPES, DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.models import BIDIRECTIONAL_CHOICES, READOUTS, normalise_mode
from gradlab.runs import check_output_path, check_sweep_dir, open_sweep_dir, write_summary
from gradlab.train import load_data, run_ended, train_run

DEFAULT_CELLS: tuple[str, ...] = ("RNN", "LSTM", "GRU")
DEFAULT_ACTIVATIONS: tuple[str, ...] = ("tanh", "relu")
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)

#: Settings of ``--preset coursework``: the coursework notebook's training setup.
PRESETS: dict[str, dict[str, Any]] = {
    "coursework": {
        "hidden_size": 32, "num_layers": 2, "batch_size": 100, "lr": 0.01, "epochs": 5,
        "normalise": False, "amplitude_scale": 32768.0,  # raw MFCCs of int16 audio, as the notebook read them
    },
}

#: Where each dataset's offline alternatives are explained to the user.
OFFLINE_HINT = (
    "on the command line, point at an existing copy with --data-dir <folder>; "
    "offline choices: --dataset fsdd --data-dir <folder with FSDD's recordings> "
    "(e.g. ../shared/data/fsdd), or a synthetic task: --dataset distance (or adding, copy-memory)"
)


def expand_cells(cells: Sequence[str], activations: Sequence[str] = DEFAULT_ACTIVATIONS) -> tuple[str, ...]:
    """Modes from ``cells``: ``RNN`` becomes ``RNN_<ACT>`` for each activation; others are normalised.

    Raises:
        ValueError: an unknown cell or activation, or an empty list.
    """
    unknown = [name for name in activations if name not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"unknown activation(s) {unknown}; expected some of {list(ACTIVATIONS)}")
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


def plan_runs(
    base: RunConfig,
    *,
    modes: Sequence[str],
    seeds: Sequence[int],
    bidirectional: Sequence[str] = ("none",),
    data_variants: Sequence[tuple[str, DataConfig]] | None = None,
) -> list[RunConfig]:
    """Every combination of mode, bidirectional choice, data variant and seed, as named runs.

    Run ids read ``<MODE>[-<bidirectional>][-<variant>]-s<seed>``.

    Raises:
        ValueError: an empty seed list, a repeated seed, or a repeated run id.
    """
    if not seeds:
        raise ValueError("the seed list is empty; give at least one seed (e.g. --seeds 0,1,2)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {list(seeds)}")
    variants = data_variants if data_variants is not None else [("", base.data)]
    runs = []
    for mode in modes:
        for choice in bidirectional:
            for suffix, data in variants:
                for seed in seeds:
                    parts = [normalise_mode(mode)] + ([choice] if choice != "none" else []) + ([suffix] if suffix else [])
                    runs.append(replace(
                        base,
                        model=replace(base.model, mode=mode, bidirectional=choice),
                        data=data,
                        train=replace(base.train, seed=seed),
                        run_id="-".join(parts + [f"s{seed}"]),
                    ))
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"run ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    return runs


def check_data_inputs(data: DataConfig) -> None:
    """Check words and the data folder before anything is read.

    Raises:
        ValueError: an unknown word, or a data folder that does not exist.
    """
    if data.dataset == "fsdd":
        from gradlab.data.fsdd import resolve_digits

        resolve_digits(data.words)
    elif data.dataset == "speech-commands":
        from gradlab.data.speech_commands import ALL_WORDS, resolve_words

        resolve_words(data.words)
        unknown = [word for word in data.words if word not in ALL_WORDS]
        if unknown:
            raise ValueError(f"unknown Speech Commands word(s) {unknown}; v0.02 has {', '.join(ALL_WORDS)}")
    if data.data_dir is not None and not Path(data.data_dir).expanduser().is_dir():
        raise ValueError(f"data directory {data.data_dir!r} does not exist (or is not a folder)")


def load_checked(data: DataConfig, *, progress: bool) -> Any:
    """Load ``data``, turning a missing or undownloadable dataset into an error naming the offline choices."""
    from gradlab.data import DownloadError

    try:
        return load_data(data, progress=progress)
    except (FileNotFoundError, DownloadError) as error:
        if data.dataset in AUDIO_DATASETS:
            raise FileNotFoundError(f"{error}\n{OFFLINE_HINT}") from error
        raise


@lru_cache(maxsize=4)
def _worker_data(data: DataConfig) -> Any:
    return load_data(data, progress=False, num_workers=1)


def _run_in_worker(config: dict[str, Any], run_dir: str, command: list[str] | None, threads: int) -> dict[str, Any]:
    """One run in a pool process: its own thread budget and its own (cached) copy of the data."""
    import torch

    torch.set_num_threads(threads)
    run = RunConfig.from_dict(config)
    return train_run(run, data=_worker_data(run.data), run_dir=run_dir, command=command).metrics


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its folder, its summary (one row per ended run) and the per-cell table."""

    sweep_dir: Path
    summary: pd.DataFrame
    table: pd.DataFrame


def default_threads(workers: int) -> int:
    """Torch threads per run: one. Small recurrent models gain little from more, and oversubscribed
    intra-op threads on a shared machine slow training by orders of magnitude."""
    return 1


def run_sweep(
    runs: Sequence[RunConfig],
    sweep_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    workers: int = 1,
    threads: int | None = None,
    command: Sequence[str] | None = None,
    figures: bool = True,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    stream: Any = None,
) -> SweepResult:
    """Train every run of ``runs`` into ``sweep_dir``.

    Everything that can be checked is checked, and every dataset loaded,
    before the folder is created. Runs that already ended there are skipped
    (with ``resume``), an interrupted run continues from its last epoch
    checkpoint, and a diverged run is recorded and the sweep goes on.

    Args:
        runs: the runs (see :func:`plan_runs`); run ids must be unique.
        sweep_dir: the sweep's folder.
        resume: continue a sweep folder that exists.
        overwrite: delete an existing sweep folder first.
        workers: runs in parallel (processes, spawn context); on one GPU they share it.
        threads: torch threads per run (default :func:`default_threads`).
        command: the command line, stored in ``sweep.json`` and each ``config.json``.
        figures: draw the analysis figures into ``<sweep>/figures/`` at the end.
        progress: progress bars for the sweep and (with one worker) each run.
        extra: more entries for ``sweep.json``.
        stream: where notes are printed (default standard error).

    Returns:
        The :class:`SweepResult`.

    Raises:
        ValueError, FileExistsError, FileNotFoundError: bad input, before any folder is written.
    """
    import torch

    stream = stream or sys.stderr
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if not runs:
        raise ValueError("the sweep has no runs")
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise ValueError("run ids repeat")
    threads = threads or default_threads(workers)
    check_sweep_dir(sweep_dir, runs, resume=resume, overwrite=overwrite)
    datasets: dict[DataConfig, Any] = {}
    for run in runs:
        check_data_inputs(run.data)
    for run in runs:
        if run.data not in datasets:
            datasets[run.data] = load_checked(run.data, progress=progress)
    sweep_dir = open_sweep_dir(sweep_dir, runs, resume=resume, overwrite=overwrite, command=command, extra=extra)
    command_list = list(command) if command is not None else None

    pending = [run for run in runs if not run_ended(sweep_dir / run.run_id)]
    if len(pending) < len(runs):
        print(f"{len(runs) - len(pending)} of {len(runs)} runs already ended in {sweep_dir}; skipping them", file=stream)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), desc="sweep", unit="run",
               disable=not progress, dynamic_ncols=True)

    def note(metrics: dict[str, Any]) -> None:
        write_summary(sweep_dir)
        bar.update(1)
        if metrics["status"] != "finished":
            print(f"run {metrics['run_id']} {metrics['status']} at step {metrics['diverged_step']}", file=stream)

    try:
        if workers == 1:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for run in pending:
                    bar.set_postfix_str(run.run_id)
                    result = train_run(run, data=datasets[run.data], run_dir=sweep_dir / run.run_id,
                                       command=command_list, progress=progress)
                    note(result.metrics)
            finally:
                torch.set_num_threads(previous)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [
                    pool.submit(_run_in_worker, run.to_dict(), str(sweep_dir / run.run_id), command_list, threads)
                    for run in pending
                ]
                for future in as_completed(futures):
                    note(future.result())
    finally:
        bar.close()
        summary = write_summary(sweep_dir)
    if figures and not summary.empty:
        draw_figures(sweep_dir, stream=stream)
    return SweepResult(sweep_dir=sweep_dir, summary=summary, table=cell_table(summary))


def draw_figures(sweep_dir: str | os.PathLike, *, stream: Any = None) -> list[Path]:
    """The analysis figures and findings report of a sweep, in ``<sweep>/figures/`` (PNG).

    A failure here is reported, not raised: the runs are already safe on disk,
    and ``python -m gradlab figures <sweep>`` redraws them.
    """
    import io

    from gradlab.analysis.commands import figures

    stream = stream or sys.stderr
    log = io.StringIO()
    try:
        written = figures(sweep_dir, Path(sweep_dir) / "figures", formats=("png",), n_resamples=1000, stream=log)
    except Exception as error:  # noqa: BLE001 - drawing must not lose a finished sweep
        print(f"figures failed ({type(error).__name__}: {error}); redraw with: python -m gradlab figures {sweep_dir}",
              file=stream)
        return []
    print(f"wrote {len(written)} figure files and the findings report to {Path(sweep_dir) / 'figures'}", file=stream)
    return written


def cell_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per cell (and per any other configuration that varies): test accuracy over seeds and costs.

    Columns: the group keys, ``runs``, ``diverged``, ``test_acc_mean``,
    ``test_acc_std`` (sample std over seeds; NaN for one seed),
    ``test_acc_min``, ``test_acc_max``, ``final_test_acc_mean``,
    ``best_val_acc_mean``, ``time_per_epoch`` (mean seconds), ``n_params``.
    """
    if summary.empty:
        return pd.DataFrame()
    keys = ["cell"] + [
        column for column in ("bidirectional", "readout", "normalise", "seq_len")
        if column in summary.columns and summary[column].nunique(dropna=False) > 1
    ]
    rows = []
    for values, part in summary.groupby(keys, sort=True, dropna=False, observed=True):
        values = values if isinstance(values, tuple) else (values,)
        test = part["test_accuracy"].astype(float)
        rows.append({
            **dict(zip(keys, values)),
            "runs": len(part),
            "diverged": int((part["status"] == "diverged").sum()),
            "test_acc_mean": test.mean(),
            "test_acc_std": test.std(ddof=1) if test.notna().sum() > 1 else float("nan"),
            "test_acc_min": test.min(),
            "test_acc_max": test.max(),
            "final_test_acc_mean": part["final_test_accuracy"].astype(float).mean(),
            "best_val_acc_mean": part["best_val_accuracy"].astype(float).mean(),
            "time_per_epoch": part["time_per_epoch"].astype(float).mean(),
            "n_params": int(part["n_params"].iloc[0]),
        })
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame) -> str:
    """The per-cell table as text, accuracies in percent."""
    if table.empty:
        return "(no runs ended)"
    shown = table.copy()
    for column in ("test_acc_mean", "test_acc_std", "test_acc_min", "test_acc_max", "final_test_acc_mean",
                   "best_val_acc_mean"):
        shown[column] = (100 * shown[column]).map(lambda value: "-" if pd.isna(value) else f"{value:.1f}")
    shown["time_per_epoch"] = shown["time_per_epoch"].map(lambda value: f"{value:.2f}s")
    return shown.to_string(index=False)


def comma_list(kind: type = str):
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        try:
            return [kind(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}") from None
    return parse


def add_sweep_arguments(parser: argparse.ArgumentParser, *, default_dataset: str = "speech-commands",
                        default_epochs: int = 30) -> None:
    """The flags every sweep script shares (model, data, training, output, execution)."""
    model = parser.add_argument_group("model")
    model.add_argument("--cells", type=comma_list(), default=list(DEFAULT_CELLS),
                       help="comma-separated cells: RNN (one per --activations), RNN_TANH, RNN_RELU, "
                            "RNN_<ACTIVATION>, LSTM, GRU (default: RNN,LSTM,GRU)")
    model.add_argument("--activations", type=comma_list(), default=list(DEFAULT_ACTIVATIONS),
                       help=f"activations the RNN cell is swept over, from {', '.join(ACTIVATIONS)} (default: tanh,relu)")
    model.add_argument("--bidirectional", type=comma_list(), default=["none"],
                       help=f"comma-separated bidirectional designs from {', '.join(BIDIRECTIONAL_CHOICES)} (default: none)")
    model.add_argument("--hidden-size", type=int, default=32, help="hidden units per layer and direction (default: 32)")
    model.add_argument("--num-layers", type=int, default=2, help="stacked layers (default: 2)")
    model.add_argument("--readout", default=None, choices=READOUTS,
                       help="head input: last state, mean over time, or per-step (copy-memory; chosen automatically)")
    model.add_argument("--init", default="default", help="init scheme, e.g. orthogonal+forget_bias (default: default)")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=default_dataset, help=f"one of {', '.join(DATASET_NAMES)} (default: {default_dataset})")
    data.add_argument("--words", type=comma_list(), default=["one", "two", "three"],
                      help="comma-separated words (Speech Commands) or digits (FSDD) (default: one,two,three)")
    data.add_argument("--data-dir", default=None,
                      help="dataset folder (FSDD recordings, or a Speech Commands tree); default: gradlab's data folder")
    data.add_argument("--cache-dir", default=None, help="feature cache folder (default: gradlab's)")
    data.add_argument("--no-download", action="store_true", help="never download Speech Commands")
    data.add_argument("--normalise", action=argparse.BooleanOptionalAction, default=True,
                      help="standardise MFCCs with training-split statistics (default: on)")
    data.add_argument("--n-mfcc", type=int, default=20, help="MFCC coefficients per frame (default: 20)")
    data.add_argument("--hop-length", type=int, default=512, help="MFCC hop in samples; T = 1 + 16000 // hop (default: 512)")
    data.add_argument("--amplitude-scale", type=float, default=1.0,
                      help="scale audio before MFCC; 32768 reproduces the coursework's int16 input (default: 1)")
    data.add_argument("--seq-len", type=int, default=None, help="synthetic tasks: sequence length T")
    data.add_argument("--n-train", type=int, default=None, help="synthetic tasks: training sequences")

    train = parser.add_argument_group("training")
    train.add_argument("--seeds", type=comma_list(int), default=list(DEFAULT_SEEDS), help="comma-separated seeds (default: 0,1,2)")
    train.add_argument("--epochs", type=int, default=default_epochs, help=f"epochs per run (default: {default_epochs})")
    train.add_argument("--batch-size", type=int, default=100, help="batch size (default: 100)")
    train.add_argument("--lr", type=float, default=3e-3, help="learning rate (default: 0.003)")
    train.add_argument("--optimiser", default="adam", choices=("adam", "sgd"), help="optimiser (default: adam)")
    train.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default: 0)")
    train.add_argument("--clip-grad-norm", type=float, default=None, help="clip the global gradient norm (default: off)")
    train.add_argument("--record-every", type=int, default=10,
                       help="record per-timestep gradient norms every k steps, plus init and end; 0 turns it off (default: 10)")
    train.add_argument("--val-every", type=int, default=50,
                       help="validate every k steps besides every epoch end; 0: epoch ends only (default: 50)")
    train.add_argument("--no-diagnostics", action="store_true", help="skip gate statistics and Jacobian norms")
    train.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="coursework: hidden 32, 2 layers, batch 100, lr 0.01, 5 epochs, raw MFCC "
                            "(explicit flags still win)")

    run = parser.add_argument_group("execution and output")
    run.add_argument("--out", default="runs", help="folder that holds sweep folders (default: runs)")
    run.add_argument("--name", default=None, help="sweep folder name (default: derived from the script and dataset)")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--amp", action="store_true", help="bfloat16 mixed precision on CUDA")
    run.add_argument("--dtype", choices=DTYPES, default="float32",
                     help="parameters and inputs; float64 measures gradients that float32 underflows to 0 "
                          "over long sequences (default: float32)")
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic kernels (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG)")
    run.add_argument("--workers", type=int, default=1, help="runs in parallel (processes; default: 1)")
    run.add_argument("--threads", type=int, default=None, help="torch threads per run (default: 1)")
    run.add_argument("--resume", action="store_true", help="continue an existing sweep folder: skip ended runs, "
                                                           "resume interrupted ones from their checkpoint")
    run.add_argument("--overwrite", action="store_true", help="delete an existing sweep folder first")
    run.add_argument("--no-figures", action="store_true", help="skip drawing figures into <sweep>/figures/")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--dry-run", action="store_true",
                     help="smoke test: one batch per run, tiny model and data, one seed, CPU, into <name>-dry-run")


def parse_with_preset(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a ``--preset`` changes the defaults, so explicit flags still win."""
    args = parser.parse_args(argv)
    if args.preset is not None:
        parser.set_defaults(**PRESETS[args.preset])
        args = parser.parse_args(argv)
    return args


#: Tiny data for --dry-run: a few FSDD takes per speaker, or a few synthetic sequences.
DRY_RUN_TAKES: tuple[int, ...] = (0, 5, 10, 11)


def base_config_from_args(args: argparse.Namespace) -> RunConfig:
    """The base :class:`RunConfig` the flags describe (cells and seeds are expanded by :func:`plan_runs`).

    Raises:
        ValueError: any invalid value, naming it.
    """
    dataset = args.dataset
    if dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {list(DATASET_NAMES)}")
    readout = args.readout or ("sequence" if dataset == "copy-memory" else "last")
    model = ModelConfig(mode="LSTM", hidden_size=args.hidden_size, num_layers=args.num_layers, readout=readout,
                        init=args.init)
    data = DataConfig(
        dataset=dataset, words=tuple(args.words), data_dir=args.data_dir, cache_dir=args.cache_dir,
        download=False if args.no_download else None, normalise=args.normalise, n_mfcc=args.n_mfcc,
        hop_length=args.hop_length, amplitude_scale=args.amplitude_scale, seq_len=args.seq_len, n_train=args.n_train,
    )
    train = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimiser=args.optimiser,
        weight_decay=args.weight_decay, clip_grad_norm=args.clip_grad_norm, device=args.device, amp=args.amp, dtype=args.dtype,
        deterministic=args.deterministic, record_every=args.record_every or None, val_every=args.val_every or None,
        diagnostics=not args.no_diagnostics,
    )
    base = RunConfig(model=model, data=data, train=train)
    if args.dry_run:
        base = dry_run_config(base)
    return base


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


def execute(args: argparse.Namespace, runs: Sequence[RunConfig], name: str, argv: Sequence[str] | None,
            extra: dict[str, Any] | None = None) -> SweepResult:
    """Run a planned sweep the way the flags say, print the per-cell table, return the result."""
    out = check_output_path(args.out)
    if args.dry_run:
        name = f"{name}-dry-run"
    result = run_sweep(
        runs, out / name, resume=args.resume, overwrite=args.overwrite or (args.dry_run and not args.resume),
        workers=args.workers, threads=args.threads,
        command=[sys.argv[0], *(sys.argv[1:] if argv is None else argv)],
        figures=not (args.no_figures or args.dry_run), progress=not args.no_progress, extra=extra,
    )
    print(f"\nsweep {result.sweep_dir}: {len(result.summary)} runs")
    if args.dry_run:
        print("(dry run: one batch per run and per evaluation; the numbers mean nothing)")
    print(format_table(result.table))
    return result


def default_sweep_name(script: str, base: RunConfig) -> str:
    """A stable sweep folder name, so re-running the same command with --resume finds it."""
    data = base.data
    parts = [script, data.dataset]
    if data.is_audio and not data.normalise:
        parts.append("raw")
    return "-".join(parts)
