"""What running a sweep through submitit or Ray costs against running it here.

Runs one small sweep (cells x seeds on the synthetic ``distance`` task) into a
fresh folder through each executor: ``local`` in this process (the
reference), submitit's local executor (the pickling, job-folder and
fresh-process path a Slurm job takes) and a local Ray started here. Each is
timed one run at a time (``--parallel 1``: every run waits for the one before,
so the difference from the reference is pure overhead) and then with
``--parallel`` runs at once. Prints the wall time of the sweep, the overhead
per run against ``local`` and the ratio, all measured in the same process.

    python benchmarks/bench_executors.py                      # 4 runs, 1 epoch
    python benchmarks/bench_executors.py --seeds 0,1,2,3 --epochs 3 --parallel 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.sweep import plan_runs, run_sweep
from gradlab.sweep.executors import RayExecutor, SubmititExecutor


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="GRU,LSTM", help="comma-separated modes")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run")
    parser.add_argument("--seq-len", type=int, default=20, help="sequence length of the distance task")
    parser.add_argument("--n-train", type=int, default=64, help="training sequences")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once in the parallel timing")
    parser.add_argument("--skip", default="", help="comma-separated executors not to time (submitit, ray)")
    return parser.parse_args(argv)


def _runs(args: argparse.Namespace) -> list[RunConfig]:
    base = RunConfig(model=ModelConfig("GRU", hidden_size=16, num_layers=1),
                     data=DataConfig("distance", seq_len=args.seq_len, n_train=args.n_train, n_validation=32,
                                     n_test=32),
                     train=TrainConfig(epochs=args.epochs, batch_size=16, lr=1e-2, record_every=2, val_every=None,
                                       diagnostics_batch=4, jacobian_batch=2))
    return plan_runs(base, modes=args.cells.split(","), seeds=[int(seed) for seed in args.seeds.split(",")])


def _timed(runs: list[RunConfig], folder: Path, make_executor) -> float:
    start = time.perf_counter()
    run_sweep(runs, folder, executor=make_executor(folder), figures=False, progress=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    runs, skip = _runs(args), set(filter(None, args.skip.split(",")))
    rows: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        rows.append(("local", 1, _timed(runs, root / "local-1", lambda folder: None)))
        if "submitit" not in skip:
            for parallel in (1, args.parallel):
                rows.append(("submitit (local)", parallel, _timed(
                    runs, root / f"submitit-{parallel}",
                    lambda folder, n=parallel: SubmititExecutor(folder, array_parallelism=n, progress=False))))
        if "ray" not in skip:
            import ray

            start = time.perf_counter()
            ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=False)
            print(f"starting a local Ray with {args.parallel} CPUs took {time.perf_counter() - start:.1f} s "
                  "(not counted below)")
            try:
                for parallel in (1, args.parallel):
                    # a task asking for all the cluster's CPUs runs alone: one at a time
                    cpus = args.parallel / parallel
                    rows.append(("ray (local)", parallel, _timed(
                        runs, root / f"ray-{parallel}",
                        lambda folder, c=cpus: RayExecutor(folder, cpus_per_task=c, progress=False))))
            finally:
                ray.shutdown()
    reference = rows[0][2]
    print(f"\n{len(runs)} runs ({args.cells} x seeds {args.seeds}, {args.epochs} epoch(s), distance T={args.seq_len}); "
          f"{os.cpu_count()} CPUs")
    print(f"{'executor':<18} {'at once':>7} {'sweep s':>8} {'overhead/run s':>15} {'ratio vs local':>15}")
    for name, parallel, seconds in rows:
        overhead = (seconds - reference) / len(runs) if parallel == 1 else float("nan")
        print(f"{name:<18} {parallel:>7} {seconds:>8.2f} {overhead:>15.2f} {seconds / reference:>15.2f}")
    print("overhead/run: (sweep - local sweep) / runs, one run at a time; 'at once' > 1 overlaps runs")


if __name__ == "__main__":
    main()
