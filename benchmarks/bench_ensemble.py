"""Training S seeds: S sequential gradlab runs, one ensemble of S, S sequential torch.nn runs.

Run: python benchmarks/bench_ensemble.py [--members 1 4 10] [--train-steps 20] [--device cuda]
Profile: python benchmarks/bench_ensemble.py --profile --threads 1 --clock cpu --members 10

The same S-seed training (FSDD-shaped random data: batch 100, 32 steps, 20
features, hidden 32, 2 layers, 3 classes; Adam; every member its own seed
and batches) is timed three ways in one process, interleaved repetition by
repetition, keeping each way's fastest repetition (these machines are shared
and noisy; a ratio measured in one run is what compares):

- gradlab: S single runs one after the other (``RNNModel``, ``torch.optim.Adam``,
  ``GradientRecorder`` recording every 10 steps, the single run's step:
  loss, backward, total gradient norm, one host sync, optimiser step);
- ensemble: one :class:`gradlab.training.ensemble.EnsembleModel` of S members stepped by
  :class:`gradlab.training.ensemble.EnsembleTrainer`, recording every 10 steps;
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

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.instruments.recorder import GradientRecorder
from gradlab.nn.models import RNNModel
from gradlab.training.ensemble import (
    EnsembleGradientRecorder,
    EnsembleModel,
    EnsembleOptimiser,
    EnsembleTrainer,
    streaming,
)

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


def _ensemble_trainer(mode: str, members: int, args: argparse.Namespace) -> EnsembleTrainer:
    model = EnsembleModel([_member(mode, member, args) for member in range(members)])
    optimiser = EnsembleOptimiser(list(model.parameters()), "adam", [args.lr] * members)
    run_infos = [{"run_id": f"r{member}", "seed": member} for member in range(members)]
    recorder = EnsembleGradientRecorder(model, every=args.record_every, run_infos=run_infos)
    return EnsembleTrainer(model, optimiser, recorder=recorder)


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
    trainer = _ensemble_trainer(mode, members, args)
    for step in range(args.train_steps):
        trainer.step(x[step], y[step], step=step, epoch=0)
    for member in range(members):
        trainer.recorder.frame(member)
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


#: torch.profiler's operator names, grouped for :func:`profile_ensemble`.
MATMULS = {"aten::bmm", "aten::baddbmm", "aten::baddbmm_", "aten::addmm", "aten::addmm_", "aten::mm", "aten::matmul"}
VIEWS = {
    "aten::select", "aten::slice", "aten::narrow", "aten::chunk", "aten::split", "aten::split_with_sizes",
    "aten::unbind", "aten::transpose", "aten::t", "aten::view", "aten::reshape", "aten::as_strided",
    "aten::expand", "aten::unsqueeze", "aten::squeeze", "aten::flatten", "aten::permute", "aten::detach",
    "aten::alias", "aten::resolve_conj", "aten::resolve_neg", "aten::empty", "aten::empty_like",
    "aten::new_empty", "aten::empty_strided", "aten::lift_fresh", "aten::_unsafe_view",
}


def _fastest_step(trainer: EnsembleTrainer, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> float:
    """Seconds of the fastest of ``args.train_steps`` training steps, after two warm-up steps."""
    for step in range(2):
        trainer.step(x[step], y[step], step=step + 1, epoch=0)
    fastest = float("inf")
    for step in range(args.train_steps):
        start = CLOCKS[args.clock]()
        trainer.step(x[step], y[step], step=step, epoch=0)
        fastest = min(fastest, CLOCKS[args.clock]() - start)
    return fastest


def profile_ensemble(mode: str, members: int, args: argparse.Namespace) -> str:
    """Where one ensemble training step's time goes, in ms per step.

    - overhead: the same step with batch 1 and hidden size 1, so the same
      operators on almost no data: Python, autograd and the cost of calling
      each operator, whatever the sizes;
    - the rest is the operators' work on the data, split into matmuls,
      elementwise maths (copies and concatenations included) and views and
      allocations in proportion to their torch.profiler self times.
    """
    x, y = _data(members, args)
    step = _fastest_step(_ensemble_trainer(mode, members, args), x, y, args)
    tiny = argparse.Namespace(**{**vars(args), "batch": 1, "hidden": 1})
    x_tiny, y_tiny = _data(members, tiny)
    # The tiny ensemble must take the same path (step by step or whole-sequence) as the real one.
    limit = streaming.WHOLE_SEQUENCE_LIMIT
    streamed = streaming.use_streaming(x.new_empty(members, args.seq_len, args.batch, 0), args.hidden)
    streaming.WHOLE_SEQUENCE_LIMIT = -1 if streamed else 2**62
    try:
        overhead = _fastest_step(_ensemble_trainer(mode, members, tiny), x_tiny, y_tiny, tiny)
    finally:
        streaming.WHOLE_SEQUENCE_LIMIT = limit
    trainer = _ensemble_trainer(mode, members, args)
    _fastest_step(trainer, x, y, args)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for index in range(args.train_steps):
            trainer.step(x[index], y[index], step=index, epoch=0)
    kinds = {"matmul": 0.0, "elementwise": 0.0, "views": 0.0}
    calls = 0
    for event in profiler.key_averages():
        if event.key.startswith("aten::"):  # autograd nodes and Function bodies are Python: overhead
            kind = "matmul" if event.key in MATMULS else "views" if event.key in VIEWS else "elementwise"
            kinds[kind] += event.self_cpu_time_total
            calls += event.count
    work = max(step - overhead, 0.0) * 1e3
    shares = "  ".join(f"{kind} {work * time / sum(kinds.values()):5.1f}" for kind, time in kinds.items())
    return (f"{mode:<10}{members:>4}  step {step * 1e3:6.1f} ms ({step * 1e3 / members:5.2f} per member) = "
            f"overhead {overhead * 1e3:5.1f} + {shares}  [{calls / args.train_steps:.0f} operators per step]")


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
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, break one ensemble step of S = max(--members) into ms per kind of "
                             "operator (use with --threads 1 --clock cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.profile:
        print(f"ensemble training step, {torch.get_num_threads()} threads, {args.clock} clock, fastest of "
              f"{args.train_steps}; ms per step: overhead (same operators at batch 1, hidden 1) + work by operator kind")
        for mode in args.modes:
            print(profile_ensemble(mode, max(args.members), args), flush=True)
        return

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
