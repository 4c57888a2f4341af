"""Cost of the dynamics diagnostics and remedies relative to one training step, as ratios.

Run: python benchmarks/bench_lyapunov.py [--repeats 7] [--steps 32 200] [--threads 1 --cpu-time]

For each cell and sequence length, one training step (forward, backward and
an Adam update on a batch, the default hand-written BPTT) is the reference;
the same run then times, interleaved repetition by repetition:

- ``lyapunov``: :func:`gradlab.instruments.diagnostics.lyapunov_spectrum`, all
  exponents (H, or 2H for the LSTM), default warmup;
- ``lyapunov k=1``: only the leading exponent;
- ``singular``: :func:`gradlab.instruments.diagnostics.jacobian_singular_values`, top 4
  at the default gaps;
- ``floss``: forward and backward of
  :func:`gradlab.instruments.remedies.gradient_flossing_loss` with k = 1;
- ``omega``: :func:`gradlab.instruments.remedies.loss_state_gradients` then forward and
  backward of :func:`gradlab.instruments.remedies.vanishing_gradient_regulariser`.

Defaults are FSDD's shapes: 16 samples, 20 features, hidden 32, 2 layers,
T = 32 and the 200 steps of the distance task. The median ratio is printed
(these machines are noisy; compare ratios from one run).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gradlab.instruments.diagnostics import jacobian_singular_values, lyapunov_spectrum
from gradlab.instruments.remedies import gradient_flossing_loss, loss_state_gradients, vanishing_gradient_regulariser
from gradlab.nn.models import RNNModel


def _timed(function: Callable[[], object], clock: Callable[[], float]) -> float:
    start = clock()
    function()
    return clock() - start


def _tasks(model: RNNModel, x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], object]]:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train_step() -> None:
        optimiser.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimiser.step()

    def floss() -> None:
        gradient_flossing_loss(model, x, k=1).backward()
        model.zero_grad(set_to_none=True)

    def omega() -> None:
        vanishing_gradient_regulariser(model, x, loss_state_gradients(model, x, y)).backward()
        model.zero_grad(set_to_none=True)

    return {
        "train step": train_step,
        "lyapunov": lambda: lyapunov_spectrum(model, x),
        "lyapunov k=1": lambda: lyapunov_spectrum(model, x, k=1),
        "singular": lambda: jacobian_singular_values(model, x),
        "floss": floss,
        "omega": omega,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per task and shape")
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 200], help="sequence lengths to time")
    parser.add_argument("--batch", type=int, default=16, help="samples per batch")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size")
    parser.add_argument("--layers", type=int, default=2, help="stacked layers")
    parser.add_argument("--modes", nargs="+", default=["RNN_TANH", "LSTM", "GRU"], help="modes to time")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time this process's CPU seconds, not wall time: steadier on a shared machine "
                             "(meaningful with --threads 1 on the CPU)")
    args = parser.parse_args(argv)
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, "
          f"{'CPU' if args.cpu_time else 'wall'} time; batch {args.batch}, "
          f"20 features, hidden {args.hidden}, {args.layers} layers; median of {args.repeats}")
    names = list(_tasks(RNNModel("GRU", 1, 1), torch.zeros(1, 1, 1), torch.zeros(1, dtype=torch.long)))
    print(f"{'mode':<10}{'T':>5}{'step ms':>10}" + "".join(f"{name:>14}" for name in names[1:]))
    for steps in args.steps:
        for mode in args.modes:
            generator = torch.Generator().manual_seed(0)
            model = RNNModel(mode, 20, args.hidden, args.layers, output_size=10, generator=generator).to(args.device)
            x = torch.randn(args.batch, steps, 20, generator=generator).to(args.device)
            y = torch.randint(0, 10, (args.batch,), generator=generator).to(args.device)
            tasks = _tasks(model, x, y)
            for task in tasks.values():  # warm-up
                task()
            times: dict[str, list[float]] = {name: [] for name in tasks}
            for _ in range(args.repeats):
                for name, task in tasks.items():
                    times[name].append(_timed(task, clock))
            step = statistics.median(times["train step"])
            ratios = [statistics.median(times[name]) / step for name in names[1:]]
            print(f"{mode:<10}{steps:>5}{step * 1e3:>10.2f}" + "".join(f"{ratio:>13.1f}x" for ratio in ratios))


if __name__ == "__main__":
    main()
