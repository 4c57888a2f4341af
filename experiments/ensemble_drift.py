"""How far ensemble-trained runs drift from the same runs trained alone, epoch by epoch.

    python experiments/ensemble_drift.py --cell LSTM --epochs 30 --dtype float32
    python experiments/ensemble_drift.py --dataset distance --cell RNN_TANH --dtype float64
    python experiments/ensemble_drift.py --compare runs/sweep-off runs/sweep-auto

Trains the same seeds twice, one by one (:func:`gradlab.training.train_run`) and
as one ensemble (:func:`gradlab.training.train_ensemble`), in memory, and prints
for each seed the largest relative difference of its training losses in each
epoch, then both test accuracies. ``--compare A B`` reads two sweep folders
of the same runs (say ``--ensemble off`` and ``auto``) instead and prints the
largest difference over runs per epoch (training losses and recorded gradient
norms) and how many runs stay within 1e-9. Batched and single matmuls round
differently; training amplifies the difference, slowly or (in chaotic
training) fast.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gradlab.config import DTYPES, DataConfig, ModelConfig, RunConfig, TrainConfig, normalise_mode
from gradlab.data.from_config import load_data
from gradlab.training import train_ensemble, train_run


def drift_by_epoch(alone, together) -> list[float]:
    """Largest relative difference of the training losses of two histories, per epoch."""
    losses = [result.history.query("split == 'train' and metric == 'loss'") for result in (alone, together)]
    a, b = (frame["value"].to_numpy() for frame in losses)
    epochs = losses[0]["epoch"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.nan_to_num(np.abs(a - b) / np.abs(a))
    return [float(relative[epochs == epoch].max()) for epoch in np.unique(epochs)]


def compare_sweeps(first: Path, second: Path, tolerance: float = 1e-9) -> None:
    """Print the per-epoch drift between the same runs in two sweep folders."""
    from gradlab.store.io import RunFolder

    by_epoch: dict[int, float] = {}
    worst: dict[str, float] = {}
    for run_id in sorted(path.name for path in first.iterdir() if RunFolder(path).ended):
        for kind, column in (("history", "value"), ("gradients", "grad_norm")):
            tables = [RunFolder(folder / run_id).table(kind) for folder in (first, second)]
            a, b = (table[column].to_numpy() for table in tables)
            with np.errstate(invalid="ignore", divide="ignore"):
                relative = np.nan_to_num(np.abs(a - b) / np.abs(a))
            epochs = tables[0]["epoch"].to_numpy()
            for epoch in np.unique(epochs):
                by_epoch[int(epoch)] = max(by_epoch.get(int(epoch), 0.0), float(relative[epochs == epoch].max()))
            worst[run_id] = max(worst.get(run_id, 0.0), float(relative.max(initial=0.0)))
    print("largest relative difference over runs, by epoch: "
          + " ".join(f"{value:.0e}" for _, value in sorted(by_epoch.items())))
    apart = sorted(run_id for run_id, value in worst.items() if value > tolerance)
    print(f"{len(worst) - len(apart)} of {len(worst)} runs within {tolerance:g} throughout; "
          f"apart: {', '.join(apart) or 'none'}")


def _cell(text: str) -> str:
    try:
        return normalise_mode(text)
    except ValueError as error:  # a wrong flag value: argparse prints it with the usage
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fsdd", choices=("fsdd", "distance"),
                        help="real recordings or the synthetic distance task (default: fsdd)")
    parser.add_argument("--data-dir", default="../shared/data/fsdd",
                        help="FSDD recordings (default: ../shared/data/fsdd)")
    parser.add_argument("--cell", default="LSTM", type=_cell,
                        help="RNN_TANH, RNN_RELU, RNN_<ACTIVATION>, LSTM or GRU (default: LSTM)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (default: 30)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 ... N-1 (default: 3)")
    parser.add_argument("--lr", type=float, default=0.003, help="learning rate (default: 0.003)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="parameters and inputs (default: float32)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("SWEEP", "SWEEP"),
                        help="compare two sweep folders of the same runs instead of training")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.compare:
        compare_sweeps(*args.compare)
        return
    torch.set_num_threads(1)
    data = DataConfig("fsdd", data_dir=args.data_dir) if args.dataset == "fsdd" else DataConfig("distance")
    base = RunConfig(model=ModelConfig(args.cell), data=data,
                     train=TrainConfig(epochs=args.epochs, lr=args.lr, clip_grad_norm=1.0, dtype=args.dtype,
                                       record_every=None, diagnostics=False))
    runs = [replace(base, train=replace(base.train, seed=seed), run_id=f"s{seed}") for seed in range(args.seeds)]
    splits = load_data(base.data, progress=False)
    alone = [train_run(run, data=splits) for run in runs]
    together = train_ensemble(runs, data=splits)
    print(f"{args.cell} on {args.dataset}, {args.dtype}: largest relative training-loss difference per epoch")
    for run, single, member in zip(runs, alone, together):
        drift = " ".join(f"{value:.0e}" for value in drift_by_epoch(single, member))
        print(f"seed {run.train.seed}: {drift} | test accuracy alone {single.metrics['test_accuracy']:.3f}, "
              f"in the ensemble {member.metrics['test_accuracy']:.3f}")


if __name__ == "__main__":
    main()
