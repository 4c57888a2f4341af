"""Compare RNN/LSTM/GRU cells and RNN activations over seeds, recording gradient flow.

Trains every cell x activation x bidirectional choice x seed into one sweep
folder (``runs/<name>/``), prints a per-cell table and draws the analysis
figures into ``<sweep>/figures/``.

    python experiments/compare_cells.py                      # Speech Commands one/two/three (downloads once)
    python experiments/compare_cells.py --dataset fsdd --data-dir ../shared/data/fsdd    # offline
    python experiments/compare_cells.py --dataset fsdd --data-dir ../shared/data/fsdd --no-normalise
    python experiments/compare_cells.py --resume             # continue an interrupted sweep
    python experiments/compare_cells.py --dry-run --dataset distance   # smoke test
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gradlab.sweep import (
    add_sweep_arguments,
    base_config_from_args,
    default_sweep_name,
    execute,
    expand_cells,
    parse_with_preset,
    plan_runs,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_sweep_arguments(parser, default_dataset="speech-commands", default_epochs=30)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_with_preset(parser, argv)
    try:
        base = base_config_from_args(args)
        modes = expand_cells(args.cells, args.activations)
        seeds = args.seeds[:1] if args.dry_run else args.seeds
        runs = plan_runs(base, modes=modes, seeds=seeds, bidirectional=args.bidirectional)
        execute(args, runs, args.name or default_sweep_name("compare_cells", base), argv)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
