"""What gradient recording costs: a training step with recording on and off.

For each cell and sequence length, times one training step (forward,
cross-entropy, backward, SGD update) of an ``RNNModel`` at the coursework's
shapes (batch 100, 20 features, hidden 32, 2 layers) with and without
:class:`gradlab.instruments.recorder.GradientRecorder` attached. Repetitions interleave
on and off (alternating which goes first) and report medians, so both see the
same machine load; the ratio on/off is the cost of a recorded step, and
``every=10`` amortises it over ten steps.

    python benchmarks/bench_recording.py                 # all cells, T = 32 and 256
    python benchmarks/bench_recording.py --steps 32 --repeats 50 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gradlab.instruments.recorder import GradientRecorder
from gradlab.nn.models import RNNModel
from gradlab.store.io import write_table

CELLS: tuple[str, ...] = ("RNN_TANH", "LSTM", "GRU")


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), help="modes to time")
    parser.add_argument("--steps", nargs="+", type=int, default=[32, 256], help="sequence lengths T")
    parser.add_argument("--batch", type=int, default=100, help="batch size B")
    parser.add_argument("--features", type=int, default=20, help="input features F")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size H")
    parser.add_argument("--layers", type=int, default=2, help="stacked layers")
    parser.add_argument("--bidirectional", default="none", help="none, separate or interleaved")
    parser.add_argument("--repeats", type=int, default=21, help="timed repetitions of each of on and off")
    parser.add_argument("--unfused", action="store_true", help="use the plain autograd unroll (handwritten_bptt=False)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    return parser.parse_args(argv)


def _timer(device: torch.device):
    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return synchronise


def bench_one(mode: str, steps: int, args: argparse.Namespace, device: torch.device) -> tuple[float, float, float]:
    """Median seconds of a training step with recording (on, off), and bytes per stored table row."""
    generator = torch.Generator().manual_seed(0)
    model = RNNModel(mode, args.features, args.hidden, args.layers, output_size=10,
                     bidirectional=args.bidirectional, generator=generator, handwritten_bptt=not args.unfused).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, steps, args.features, generator=generator).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=generator).to(device)
    recorder = GradientRecorder(model, every=1, run_info={"run_id": "bench", "seed": 0})
    synchronise = _timer(device)

    def train_step(record: bool, step: int) -> float:
        synchronise()
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        context = recorder.record(step=step, epoch=0) if record else recorder.maybe_record(step=1, epoch=0)
        with context:
            F.cross_entropy(model(x), y).backward()
        optimiser.step()
        synchronise()  # recording's own device-to-host copy is already inside
        return time.perf_counter() - start

    for step in range(3):  # warm up allocator and kernels
        train_step(True, step)
        train_step(False, step)
    on, off = [], []
    for repeat in range(args.repeats):
        for record in ((True, False) if repeat % 2 == 0 else (False, True)):
            (on if record else off).append(train_step(record, repeat))
    row_bytes = _bytes_per_row(recorder)
    recorder.clear()
    return statistics.median(on), statistics.median(off), row_bytes


def _bytes_per_row(recorder: GradientRecorder) -> float:
    """Bytes per row of the recorded gradient table, as a run folder stores it (zstd Parquet)."""
    frame = recorder.frame()
    with tempfile.TemporaryDirectory() as folder:
        path = write_table(frame, Path(folder) / "gradients.parquet", kind="gradients")
        return path.stat().st_size / max(len(frame), 1)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, F {args.features}, "
          f"H {args.hidden}, layers {args.layers}, bidirectional {args.bidirectional}, "
          f"{'plain autograd' if args.unfused else 'hand-written BPTT'} unroll, median of {args.repeats}")
    print(f"{'cell':<9} {'T':>4} {'off ms':>9} {'on ms':>9} {'on/off':>7} {'every=10':>9}")
    for steps in args.steps:
        for mode in args.cells:
            on, off, row_bytes = bench_one(mode, steps, args, device)
            amortised = (on + 9 * off) / (10 * off)
            print(f"{mode:<9} {steps:>4} {off * 1e3:>9.2f} {on * 1e3:>9.2f} {on / off:>7.3f} {amortised:>9.3f}"
                  f"  {row_bytes:.1f} bytes per stored row")
    # A run's table: rows per recorded step = layers x directions x states x T; for the coursework's
    # Speech Commands shapes (bidirectional LSTM, 2 layers, T = 32), 256 rows, recorded every 10th of
    # 850 steps an epoch for 50 epochs: 4,250 recorded steps.
    print(f"256 rows recorded 4,250 times (a bidirectional 2-layer LSTM at T = 32, every 10th step of a 50-epoch "
          f"Speech Commands run) store {4250 * 256 * row_bytes / 1e6:.0f} MB at the last row cost above")


if __name__ == "__main__":
    main()
