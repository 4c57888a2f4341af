"""Sweep the sequence length T, to plot vanishing gradients against T.

On a synthetic task (default ``distance``; also ``adding`` and
``copy-memory``) T takes the values of ``--lengths``; on speech
(``speech-commands``, ``fsdd``) the MFCC hop changes (``--hops``), so the same
second of audio becomes T = 1 + 16000 // hop frames. Each T is one data
variant of the sweep; ``python -m gradlab figures`` draws vanishing vs T.
The same command is installed as ``gradlab sweep-length``
(:func:`gradlab.scripts.sequence_length`).

    python experiments/sequence_length.py                                 # distance task, T = 50 ... 1000
    python experiments/sequence_length.py --dataset fsdd --data-dir ../shared/data/fsdd --hops 1024,512,256,128
    python experiments/sequence_length.py --dry-run --dataset adding      # smoke test
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gradlab.scripts import DEFAULT_HOPS, DEFAULT_LENGTHS, length_variants, sequence_length, sequence_length_parser
from gradlab.sweep.workers import exit_quickly

__all__ = ["DEFAULT_HOPS", "DEFAULT_LENGTHS", "build_parser", "length_variants", "main"]


def build_parser() -> argparse.ArgumentParser:
    return sequence_length_parser()


def main(argv: Sequence[str] | None = None) -> int:
    return sequence_length(argv)


if __name__ == "__main__":
    exit_quickly(main)  # sys.exit(main()), without tearing torch and pandas down (0.6-0.9 s)
