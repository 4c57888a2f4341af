"""Forward+backward time of each gradlab stack against torch.nn, as ratios.

Run: python benchmarks/bench_models.py [--repeats 30] [--steps 32 256]

Both models are timed in the same process, interleaved repetition by
repetition, and the median ratio is printed (these machines are noisy; a
ratio measured in one run is what compares). Shapes default to the
coursework's: batch 100, 20 features, hidden 32, 2 layers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from gradlab.nn.models import RNNModel, load_torch_weights


class TorchClassifier(nn.Module):
    """torch.nn's fused stack with the same last-step linear head."""

    def __init__(self, mode: str, input_size: int, hidden: int, layers: int, classes: int) -> None:
        super().__init__()
        if mode == "LSTM":
            self.rnn = nn.LSTM(input_size, hidden, layers, batch_first=True)
        elif mode == "GRU":
            self.rnn = nn.GRU(input_size, hidden, layers, batch_first=True)
        else:
            self.rnn = nn.RNN(input_size, hidden, layers, mode.split("_")[1].lower(), batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0][:, -1])


#: Wall-clock time, or this process's CPU time (steadier on a shared machine, with --threads 1).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _time_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clock=time.perf_counter) -> float:
    start = clock()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return clock() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="timed repetitions per model and shape")
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 256], help="sequence lengths to time")
    parser.add_argument("--batch", type=int, default=100, help="batch size")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size")
    parser.add_argument("--layers", type=int, default=2, help="stacked layers")
    parser.add_argument("--modes", nargs="+", default=["LSTM", "GRU", "RNN_TANH"], help="modes to time")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock time, or process CPU time (steadier on a shared machine; use with --threads 1)")
    args = parser.parse_args(argv)
    clock = CLOCKS[args.clock]
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock; batch {args.batch}, "
          f"20 features, hidden {args.hidden}, {args.layers} layers; median of {args.repeats}")
    print(f"{'mode':<10}{'T':>6}{'torch.nn ms':>14}{'gradlab ms':>14}{'ratio':>8}")
    for steps in args.steps:
        for mode in args.modes:
            torch.manual_seed(0)
            reference = TorchClassifier(mode, 20, args.hidden, args.layers, 3)
            ours = RNNModel(mode, 20, args.hidden, args.layers, True, 3)
            load_torch_weights(ours.rnn, reference.rnn)
            ours.fc.load_state_dict(reference.fc.state_dict())
            x = torch.randn(args.batch, steps, 20)
            y = torch.randint(0, 3, (args.batch,))
            for _ in range(3):  # warm-up
                _time_step(reference, x, y, clock), _time_step(ours, x, y, clock)
            times_ref, times_ours = [], []
            for _ in range(args.repeats):
                times_ref.append(_time_step(reference, x, y, clock))
                times_ours.append(_time_step(ours, x, y, clock))
            ref_ms, ours_ms = statistics.median(times_ref) * 1e3, statistics.median(times_ours) * 1e3
            print(f"{mode:<10}{steps:>6}{ref_ms:>14.2f}{ours_ms:>14.2f}{ours_ms / ref_ms:>8.2f}")


if __name__ == "__main__":
    main()
