"""Sweep the sequence length T, to plot vanishing gradients against T.

On a synthetic task (default ``distance``; also ``adding`` and
``copy-memory``) T takes the values of ``--lengths``; on speech
(``speech-commands``, ``fsdd``) the MFCC hop changes (``--hops``), so the same
second of audio becomes T = 1 + 16000 // hop frames. Each T is one data
variant of the sweep; ``python -m gradlab figures`` draws vanishing vs T.

    python experiments/sequence_length.py                                 # distance task, T = 50 ... 1000
    python experiments/sequence_length.py --dataset fsdd --data-dir ../shared/data/fsdd --hops 1024,512,256,128
    python experiments/sequence_length.py --dry-run --dataset adding      # smoke test
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from gradlab.cli import add_sweep_arguments, comma_list, sweep_main
from gradlab.config import DataConfig, RunConfig

DEFAULT_LENGTHS = [50, 100, 200, 500, 1000]
DEFAULT_HOPS = [1024, 512, 256, 128]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sweep_arguments(parser, defaults={"dataset": "distance", "epochs": 5, "n_train": 1000, "num_layers": 1})
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


def main(argv: Sequence[str] | None = None) -> int:
    return sweep_main("sequence_length", build_parser(), argv, variants=length_variants)


if __name__ == "__main__":
    sys.exit(main())
