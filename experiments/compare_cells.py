"""Compare RNN/LSTM/GRU cells and RNN activations over seeds, recording gradient flow.

Trains every cell x activation x grid point x seed into one sweep folder
(``runs/<name>/``), prints a per-cell table and draws the analysis figures
into ``<sweep>/figures/``. The same command is installed as ``gradlab sweep``
(:func:`gradlab.scripts.compare_cells`).

    python experiments/compare_cells.py                      # Speech Commands one/two/three (downloads once)
    python experiments/compare_cells.py --dataset fsdd --data-dir ../shared/data/fsdd    # offline
    python experiments/compare_cells.py --dataset fsdd --data-dir ../shared/data/fsdd --lr 0.001,0.003,0.01
    python experiments/compare_cells.py --resume             # continue an interrupted sweep
    python experiments/compare_cells.py --dry-run --dataset distance   # smoke test
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gradlab.scripts import compare_cells, compare_cells_parser
from gradlab.sweep.workers import exit_quickly


def build_parser() -> argparse.ArgumentParser:
    return compare_cells_parser()


def main(argv: Sequence[str] | None = None) -> int:
    return compare_cells(argv)


if __name__ == "__main__":
    exit_quickly(main)  # sys.exit(main()), without tearing torch and pandas down (0.6-0.9 s)
