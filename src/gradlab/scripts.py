"""The experiment sweeps behind ``gradlab sweep`` and ``gradlab sweep-length`` (and ``experiments/*.py``).

Installed with the package, so a sweep runs from any install:

    gradlab sweep --dataset fsdd --data-dir ../shared/data/fsdd     # = python experiments/compare_cells.py ...
    gradlab sweep-length --dataset distance --lengths 50,100,200    # = python experiments/sequence_length.py ...

The two are separate commands, not one command with a length mode, because
they differ in more than one flag: the length sweep has its own defaults
(distance task, 5 epochs, 1000 training sequences, one layer) and its own
sweep folder name, which ``--resume`` relies on to find an interrupted sweep.

This module imports :mod:`gradlab.cli` (and so torch) only when a command runs,
after it has started the fork server of the sweep's local workers where the
flags ask for them (:func:`gradlab.sweep.workers.start_worker_server`): the
server's imports then overlap the command's own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from gradlab.config import DataConfig, RunConfig
from gradlab.sweep.workers import start_worker_server

COMPARE_CELLS_DESCRIPTION = "Compare RNN/LSTM/GRU cells and RNN activations over seeds, recording gradient flow."
SEQUENCE_LENGTH_DESCRIPTION = "Sweep the sequence length T, to plot vanishing gradients against T."
#: The length sweep's own defaults (the flags still win).
SEQUENCE_LENGTH_DEFAULTS: dict[str, object] = {"dataset": "distance", "epochs": 5, "n_train": 1000, "num_layers": 1}
DEFAULT_LENGTHS: list[int] = [50, 100, 200, 500, 1000]
DEFAULT_HOPS: list[int] = [1024, 512, 256, 128]


def compare_cells_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags of the cell comparison (``gradlab sweep``, ``experiments/compare_cells.py``)."""
    from gradlab.cli import add_sweep_arguments

    parser = argparse.ArgumentParser(prog=prog, description=COMPARE_CELLS_DESCRIPTION)
    add_sweep_arguments(parser)
    return parser


def compare_cells(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Train every cell x activation x grid point x seed into one sweep folder; returns the exit status."""
    _start_workers_early(argv)
    from gradlab.cli import sweep_main

    return sweep_main("compare_cells", compare_cells_parser(prog), argv)


def sequence_length_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags of the sequence-length sweep (``gradlab sweep-length``, ``experiments/sequence_length.py``)."""
    from gradlab.cli import add_sweep_arguments, comma_list

    parser = argparse.ArgumentParser(prog=prog, description=SEQUENCE_LENGTH_DESCRIPTION)
    add_sweep_arguments(parser, defaults=SEQUENCE_LENGTH_DEFAULTS)
    group = parser.add_argument_group("sequence length")
    group.add_argument("--lengths", type=comma_list(int), default=DEFAULT_LENGTHS,
                       help="synthetic tasks: comma-separated sequence lengths T (default: 50,100,200,500,1000)")
    group.add_argument("--hops", type=comma_list(int), default=DEFAULT_HOPS,
                       help="speech: comma-separated MFCC hops in samples (default: 1024,512,256,128, T = 16 ... 126)")
    return parser


def length_variants(args: argparse.Namespace, base: RunConfig) -> list[tuple[str, DataConfig]]:
    """One data variant per sequence length (synthetic) or MFCC hop (speech)."""
    data = base.data
    if data.is_audio:
        hops = args.hops[:2] if args.dry_run else args.hops
        variants = [(f"hop{hop}", replace(data, hop_length=hop)) for hop in hops]
    else:
        lengths = [25, 30] if args.dry_run else args.lengths  # copy-memory needs T > 20
        variants = [(f"T{length}", replace(data, seq_len=length)) for length in lengths]
    if not variants:
        raise ValueError("no sequence lengths to sweep: --lengths/--hops is empty")
    return variants


def sequence_length(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Sweep T (synthetic tasks) or the MFCC hop (speech) over every cell and seed; returns the exit status."""
    _start_workers_early(argv)
    from gradlab.cli import sweep_main

    return sweep_main("sequence_length", sequence_length_parser(prog), argv, variants=length_variants)


def _start_workers_early(argv: Sequence[str] | None) -> None:
    """Start the fork server of local workers now if the flags ask for more than one (``--workers N``).

    A reading of the flags before they are parsed: where it guesses wrong, the executor starts the server
    when it needs one, or the server ends with the command unused.
    """
    found: dict[str, str] = {}
    words = list(sys.argv[1:] if argv is None else argv)
    for index, word in enumerate(words):
        name, equals, value = word.partition("=")
        if name in ("--workers", "--executor"):
            found[name] = value if equals else (words[index + 1] if index + 1 < len(words) else "")
        elif word in ("--plan", "-h", "--help"):  # nothing trains
            return
    workers = found.get("--workers", "1")
    if workers.isdigit() and int(workers) > 1 and found.get("--executor", "local") == "local":
        start_worker_server()
