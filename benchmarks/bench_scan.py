"""Forward+backward time of the modern cells' parallel scan against their own step loop, as ratios.

Run: python benchmarks/bench_scan.py [--repeats 10] [--steps 50 100 200 500 1000] [--threads 1]

For each cell and length T, one layer's scan (:func:`gradlab.nn.unroll.scan_direction`, what training
runs) and the same cell stepped one timestep at a time (:func:`gradlab.nn.unroll.unroll_direction`,
plain autograd) are timed in the same process, interleaved repetition by repetition, on the same
weights and batch, from the same loss on the states (the LRU's readout is left out of both); the
median of each and their ratio (loop / scan: above 1, the scan is faster) are printed. Shapes
default to the distance task's: batch 50, 1 feature, hidden 32, float64. IndRNN has no scan (its
ReLU is not a linear recurrence), so only its loop is timed. The numbers are ratios on this
machine, not a pass/fail test; a busy machine shifts both times, so compare the ratio.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from gradlab.config import MODERN_MODES
from gradlab.nn.cells import make_cell
from gradlab.nn.unroll import scan_direction, unroll_direction


def _time(run, x: torch.Tensor, cell: torch.nn.Module) -> float:
    start = time.perf_counter()
    run(x).square().mean().backward()
    cell.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def time_cell(mode: str, steps: int, *, batch: int, features: int, hidden: int, repeats: int,
              dtype: torch.dtype) -> tuple[float, float]:
    """Median seconds of one forward+backward by (scan, step loop); the scan's is NaN for a cell without one."""
    generator = torch.Generator().manual_seed(0)
    cell = make_cell(mode, features, hidden).to(dtype)
    x = torch.randn(batch, steps, features, generator=generator, dtype=dtype)
    state = cell.zero_state(batch, x)

    def loop(inputs: torch.Tensor) -> torch.Tensor:
        outputs, _ = unroll_direction(cell, inputs, state, reverse=False)
        return outputs

    def scan(inputs: torch.Tensor) -> torch.Tensor:
        return scan_direction(cell, inputs, state, reverse=False)[0]  # the states, as the loop returns (no readout)

    runs = {"loop": loop}
    if getattr(cell, "scans", False):
        runs["scan"] = scan
    for run in runs.values():  # warm-up
        _time(run, x, cell)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_time(run, x, cell))
    scan_time = statistics.median(times["scan"]) if "scan" in times else math.nan
    return scan_time, statistics.median(times["loop"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per cell and length (default: 10)")
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 100, 200, 500, 1000],
                        help="sequence lengths T (default: 50 100 200 500 1000)")
    parser.add_argument("--modes", nargs="+", default=list(MODERN_MODES), help="cells (default: the modern ones)")
    parser.add_argument("--batch", type=int, default=50, help="batch size (default: 50)")
    parser.add_argument("--features", type=int, default=1, help="input features (default: 1, the distance task)")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size (default: 32)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="(default: float64)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, {args.features} "
          f"features, hidden {args.hidden}, one layer, {args.dtype}; median of {args.repeats}, forward+backward")
    print(f"{'cell':<10}{'T':>6}{'scan ms':>12}{'loop ms':>12}{'loop/scan':>11}")
    for steps in args.steps:
        for mode in args.modes:
            scan_time, loop_time = time_cell(mode, steps, batch=args.batch, features=args.features,
                                             hidden=args.hidden, repeats=args.repeats,
                                             dtype=getattr(torch, args.dtype))
            ratio = loop_time / scan_time if math.isfinite(scan_time) else math.nan
            scan_text = f"{scan_time * 1e3:>12.2f}" if math.isfinite(scan_time) else f"{'-':>12}"
            ratio_text = f"{ratio:>11.2f}" if math.isfinite(ratio) else f"{'-':>11}"
            print(f"{mode:<10}{steps:>6}{scan_text}{loop_time * 1e3:>12.2f}{ratio_text}", flush=True)


if __name__ == "__main__":
    main()
