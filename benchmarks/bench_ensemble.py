"""Training S seeds: S sequential gradlab runs, one ensemble of S, S sequential torch.nn runs.

Run: python benchmarks/bench_ensemble.py [--members 1 4 10] [--train-steps 20] [--device cuda]

The same S-seed training (FSDD-shaped random data: batch 100, 32 steps, 20
features, hidden 32, 2 layers, 3 classes; Adam; every member its own seed
and batches) is timed three ways in one process, interleaved repetition by
repetition, keeping each way's fastest repetition (these machines are shared
and noisy; a ratio measured in one run is what compares):

- gradlab: S single runs one after the other (``RNNModel``, ``torch.optim.Adam``,
  ``GradientRecorder`` recording every 10 steps, the single run's step:
  loss, backward, total gradient norm, one host sync, optimiser step);
- ensemble: one :class:`gradlab.ensemble.EnsembleModel` of S members stepped by
  :class:`gradlab.ensemble.EnsembleTrainer`, recording every 10 steps;
- torch.nn: S runs of ``torch.nn.LSTM``/``GRU``/``RNN`` (cuDNN on a GPU) with
  the same head and optimiser and no recording.

The last line is the headline: the ensemble's speedup over sequential gradlab
runs for S = max(--members) and LSTM.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Worker threads that sleep between operations instead of spinning. These ops
# are tiny, so every one is a thread handoff; on a machine shared with other
# jobs a spinning worker waits for its core, and the default (spinning) run
# took 4 to 10 times longer (5 minutes instead of 30 s) beside one busy
# process. It only takes effect before torch loads OpenMP, so it is left alone
# when torch is already loaded (imported by tests); an explicit setting wins.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from gradlab.ensemble import (  # noqa: E402
    EnsembleGradientRecorder,
    EnsembleModel,
    EnsembleOptimiser,
    EnsembleTrainer,
)
from gradlab.instrument import GradientRecorder  # noqa: E402
from gradlab.models import RNNModel  # noqa: E402

MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
FEATURES, CLASSES = 20, 3


class TorchClassifier(nn.Module):
    """torch.nn's fused stack with the same last-step linear head."""

    def __init__(self, mode: str, hidden: int, layers: int) -> None:
        super().__init__()
        if mode in ("LSTM", "GRU"):
            self.rnn = getattr(nn, mode)(FEATURES, hidden, layers, batch_first=True)
        else:
            self.rnn = nn.RNN(FEATURES, hidden, layers, mode.split("_")[1].lower(), batch_first=True)
        self.fc = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0][:, -1])


def _member(mode: str, seed: int, args: argparse.Namespace) -> RNNModel:
    model = RNNModel(mode, FEATURES, args.hidden, args.layers, True, CLASSES, generator=torch.Generator().manual_seed(seed))
    return model.to(args.device)


def _data(members: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps, S, B, T, F) inputs and (steps, S, B) labels."""
    generator = torch.Generator().manual_seed(members)
    x = torch.randn(args.train_steps, members, args.batch, args.seq_len, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (args.train_steps, members, args.batch), generator=generator)
    return x.to(args.device), y.to(args.device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


#: How each way is timed: wall-clock, or this process's CPU time (steadier on a
#: shared machine, and the same thing with one thread).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def run_sequential(mode: str, members: int, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> float:
    """S single gradlab runs, one after the other; returns seconds."""
    _sync(args.device)
    start = CLOCKS[args.clock]()
    for member in range(members):
        model = _member(mode, member, args)
        parameters = list(model.parameters())
        optimiser = torch.optim.Adam(parameters, lr=args.lr)
        recorder = GradientRecorder(model, every=args.record_every, run_info={"run_id": f"r{member}", "seed": member})
        for step in range(args.train_steps):
            optimiser.zero_grad(set_to_none=True)
            with recorder.maybe_record(step=step, epoch=0):
                loss = F.cross_entropy(model(x[step, member]).float(), y[step, member])
                loss.backward()
            norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
            torch.stack([loss.detach().double(), norm.double()]).tolist()  # the single run's one sync
            optimiser.step()
        recorder.frame()
    _sync(args.device)
    return CLOCKS[args.clock]() - start


def run_ensemble(mode: str, members: int, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> float:
    """One ensemble of S members; returns seconds (building the members included, as above)."""
    _sync(args.device)
    start = CLOCKS[args.clock]()
    model = EnsembleModel([_member(mode, member, args) for member in range(members)])
    optimiser = EnsembleOptimiser(list(model.parameters()), "adam", [args.lr] * members)
    run_infos = [{"run_id": f"r{member}", "seed": member} for member in range(members)]
    recorder = EnsembleGradientRecorder(model, every=args.record_every, run_infos=run_infos)
    trainer = EnsembleTrainer(model, optimiser, recorder=recorder)
    for step in range(args.train_steps):
        trainer.step(x[step], y[step], step=step, epoch=0)
    for member in range(members):
        recorder.frame(member)
    _sync(args.device)
    return CLOCKS[args.clock]() - start


def run_torch(mode: str, members: int, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> float:
    """S torch.nn runs, no recording; returns seconds."""
    _sync(args.device)
    start = CLOCKS[args.clock]()
    for member in range(members):
        torch.manual_seed(member)
        model = TorchClassifier(mode, args.hidden, args.layers).to(args.device)
        optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
        for step in range(args.train_steps):
            optimiser.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[step, member]), y[step, member])
            loss.backward()
            loss.item()
            optimiser.step()
    _sync(args.device)
    return CLOCKS[args.clock]() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 4, 10], help="ensemble sizes S to time")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="cells to time")
    parser.add_argument("--train-steps", type=int, default=10, help="training steps per member and repetition")
    parser.add_argument("--repeats", type=int, default=2, help="repetitions of each way (the fastest is kept)")
    parser.add_argument("--batch", type=int, default=100, help="batch size")
    parser.add_argument("--seq-len", type=int, default=32, help="timesteps")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size")
    parser.add_argument("--layers", type=int, default=2, help="stacked layers")
    parser.add_argument("--record-every", type=int, default=10, help="gradient recording every k steps (gradlab ways)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads on the CPU")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock time, or process CPU time (steadier on a shared machine; use with --threads 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__} on {args.device}, {torch.get_num_threads()} threads "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), {args.clock} clock; batch {args.batch}, "
          f"T {args.seq_len}, {FEATURES} features, hidden {args.hidden}, {args.layers} layers, "
          f"{args.train_steps} steps per member; fastest of {args.repeats}; ms per member-step")
    print(f"{'mode':<10}{'S':>4}{'gradlab':>10}{'ensemble':>10}{'torch.nn':>10}"
          f"{'seq/ens':>9}{'torch/ens':>11}")
    speedups: dict[tuple[str, int], float] = {}
    for mode in args.modes:
        for members in args.members:
            x, y = _data(members, args)
            run_ensemble(mode, members, x[:2], y[:2], argparse.Namespace(**{**vars(args), "train_steps": 2}))  # warm-up
            best = {"gradlab": float("inf"), "ensemble": float("inf"), "torch": float("inf")}
            for _ in range(args.repeats):
                best["gradlab"] = min(best["gradlab"], run_sequential(mode, members, x, y, args))
                best["ensemble"] = min(best["ensemble"], run_ensemble(mode, members, x, y, args))
                best["torch"] = min(best["torch"], run_torch(mode, members, x, y, args))
            per_step = {way: seconds * 1e3 / (members * args.train_steps) for way, seconds in best.items()}
            speedups[mode, members] = best["gradlab"] / best["ensemble"]
            print(f"{mode:<10}{members:>4}{per_step['gradlab']:>10.2f}{per_step['ensemble']:>10.2f}"
                  f"{per_step['torch']:>10.2f}{speedups[mode, members]:>8.2f}x{best['torch'] / best['ensemble']:>10.2f}x",
                  flush=True)
    headline_mode = "LSTM" if "LSTM" in args.modes else args.modes[-1]
    largest = max(args.members)
    print(f"ensemble speedup over sequential, S={largest}, {headline_mode}: {speedups[headline_mode, largest]:.2f}x")


if __name__ == "__main__":
    main()
