"""What a gradlab sweep costs next to the same runs as a plain torch.nn loop.

Run (on an idle machine; about 9 minutes on 2 cores), with this checkout's gradlab importable:
    PYTHONPATH=src python benchmarks/bench_sweep.py --data-dir ../shared/data/fsdd
Shrink it (a smoke test of the output): --seeds 1 --epochs 1 --cells GRU --coursework-seeds 0 --coursework-epochs 1
--rounds 1

Every arm runs --rounds times (default 2, about 9 minutes), even rounds in reverse order, and each ratio is the
median over rounds of that round's own ratio: the speed of a shared virtual machine drifts by 10% from one minute
to the next, so one round's ratio moved by about that much between invocations; a second, reversed round cancels a
steady drift.

Arms, one after another, each a fresh process (interpreter start-up, imports,
data loading, worker start-up and writing all count, as they do for a user):

(a) ``experiments/compare_cells.py --dataset fsdd`` with --cells x --seeds,
    --workers 2 and every other option at its default, --ensemble off;
(b) the same with --ensemble auto;
(c) the same runs (the configs (a) wrote: model sizes, learning rate,
    clipping, epochs, batch size, validation schedule, selection of the best
    validated state, one test pass) as a plain ``torch.nn.RNN``/``LSTM``/``GRU``
    loop with no measurement, in --workers spawned processes of one thread
    each, each importing torch and building the tensors once with gradlab's
    data loading (the features gradlab trains on);
(c') the same as (c), with the C allocator set up as gradlab's sweep
    processes set theirs (:func:`gradlab.sweep.memory.keep_freed_memory`):
    how much of the comparison that setting is, not a target;
(d) the coursework shape, ``--preset coursework --epochs 30 --seeds 0,1,2``
    with --workers 2 on the same data, once --ensemble auto and once off.

The last line is the headline: wall time of (a) and of (b) over (c).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPARE_CELLS = ROOT / "experiments" / "compare_cells.py"
CELLS = "RNN_TANH,RNN_RELU,LSTM,GRU"


def default_data_dir() -> str:
    """$GRADLAB_FSDD, else the shared FSDD folder beside the checkout."""
    return os.environ.get("GRADLAB_FSDD") or str(ROOT.parent / "shared" / "data" / "fsdd")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # ended children, with the workers they waited for
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], log: Path, cpu: dict[str, float], label: str) -> float:
    """Run ``command`` (output to ``log``); its wall time in seconds (its CPU seconds, workers included, in ``cpu``).

    CPU time is the steadier number on a machine shared with other work.

    Raises:
        RuntimeError: it failed (naming the log and its last lines).
    """
    start, used = time.perf_counter(), _children_cpu()
    with open(log, "w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    cpu[label] = _children_cpu() - used
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command)} exited with {code}; its log {log} ends:\n{tail}")
    return seconds


def sweep_command(out: Path, name: str, options: list[str], ensemble: str) -> list[str]:
    """The compare_cells command of one gradlab arm."""
    return [sys.executable, str(COMPARE_CELLS), "--out", str(out), "--name", name, "--ensemble", ensemble, *options]


def run_folders(sweep: Path) -> list[Path]:
    """The run folders a sweep wrote (each holds a config.json), in name order."""
    folders = sorted(path.parent for path in sweep.glob("*/config.json"))
    if not folders:
        raise RuntimeError(f"{sweep} holds no run folders: the gradlab arm wrote nothing to compare with")
    return folders


# ---------------------------------------------------------------------------------------------------------------
# The plain torch.nn arm: this file run with --plain-runs, in its own process, with a pool of spawned workers.

_DATA: dict = {}


def _worker_start(keep_freed_memory: bool = False) -> None:
    import torch
    import torch._dynamo  # noqa: F401 - torch.optim imports it on first use: once per worker, outside a run's time

    torch.set_num_threads(1)
    if keep_freed_memory:  # the reference arm (c'): the allocator settings gradlab's sweep processes use
        from gradlab.sweep.memory import keep_freed_memory as keep

        keep()


def plain_run(config_values: dict) -> dict:
    """Train one run's config with torch.nn and torch.optim only (in a worker); its own seconds and test accuracy."""
    import torch
    from torch import nn

    from gradlab.config import RunConfig

    config = RunConfig.from_dict(config_values)
    model_config, train = config.model, config.train
    dtype = getattr(torch, train.dtype)
    if config.data not in _DATA:  # once per worker, as a gradlab worker loads it
        from gradlab.data.from_config import load_data

        _DATA[config.data] = load_data(config.data, progress=False, num_workers=1)
    start = time.perf_counter()
    data = _DATA[config.data]
    splits = {name: (getattr(data, name).x.to(dtype), getattr(data, name).y)
              for name in ("train", "validation", "test")}
    torch.manual_seed(train.seed)
    kind, _, activation = model_config.mode.partition("_")
    options = {"nonlinearity": activation.lower()} if kind == "RNN" else {}
    rnn = getattr(nn, kind)(data.input_size, model_config.hidden_size, model_config.num_layers, batch_first=True,
                            **options)
    head = nn.Linear(model_config.hidden_size, data.num_outputs)
    model = nn.ModuleDict({"rnn": rnn, "head": head}).to(dtype)

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return model["head"](model["rnn"](x)[0][:, -1])  # (B, classes): the last step's state

    optimiser_type = torch.optim.Adam if train.optimiser == "adam" else torch.optim.SGD
    optimiser = optimiser_type(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    loss_fn = nn.CrossEntropyLoss()

    @torch.no_grad()
    def score(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        model.eval()
        total, correct = 0.0, 0
        for first in range(0, len(y), train.batch_size):
            logits = logits_of(x[first:first + train.batch_size])
            target = y[first:first + train.batch_size]
            total += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(-1) == target).sum())
        model.train()
        return total / len(y), correct / len(y)

    generator = torch.Generator().manual_seed(train.seed)
    x_train, y_train = splits["train"]
    best = (-math.inf, math.inf, None)  # accuracy, loss, weights
    step, validated = 0, 0
    score(*splits["validation"])  # the untrained model, as gradlab validates it (no candidate)

    def validate() -> None:
        nonlocal best, validated
        loss, accuracy = score(*splits["validation"])
        validated = step
        if accuracy > best[0] or (accuracy == best[0] and loss < best[1]):
            best = (accuracy, loss, {name: value.clone() for name, value in model.state_dict().items()})

    for _ in range(train.epochs):
        order = torch.randperm(len(y_train), generator=generator)
        for first in range(0, len(order), train.batch_size):
            chosen = order[first:first + train.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(logits_of(x_train[chosen]), y_train[chosen])
            loss.backward()
            if train.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), train.clip_grad_norm)
            optimiser.step()
            step += 1
            if train.val_every is not None and step % train.val_every == 0:
                validate()
        if validated != step:
            validate()
    model.load_state_dict(best[2])
    _, test_accuracy = score(*splits["test"])
    return {"run_id": config.run_id, "seconds": time.perf_counter() - start, "test_accuracy": test_accuracy}


def plain_arm(configs_file: Path, results_file: Path, workers: int, keep_freed_memory: bool = False) -> None:
    """Train every config of ``configs_file`` with :func:`plain_run` in ``workers`` spawned processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    configs = json.loads(configs_file.read_text())
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_start,
                             initargs=(keep_freed_memory,)) as pool:
        results = list(pool.map(plain_run, configs))
    results_file.write_text(json.dumps(results))


# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=default_data_dir(), help="FSDD folder (default: $GRADLAB_FSDD, else "
                        "../shared/data/fsdd beside the checkout)")
    parser.add_argument("--cells", default=CELLS, help=f"cells of arms a-c (default: {CELLS})")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 of arms a-c (default: 10)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of arms a-c (default: compare_cells' own)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of every arm (default: 2)")
    parser.add_argument("--coursework-seeds", default="0,1,2", help="seeds of the coursework arms (default: 0,1,2)")
    parser.add_argument("--coursework-epochs", type=int, default=30, help="epochs of the coursework arms (default: 30)")
    parser.add_argument("--no-figures", action="store_true", help="pass --no-figures to every sweep (default: draw "
                        "them, as compare_cells does)")
    parser.add_argument("--rounds", type=int, default=2, help="times every arm runs, in alternating order; the "
                        "ratios are medians over rounds of each round's own ratio (default: 2, the second reversed, "
                        "so a steady drift of the machine's speed cancels; it drifts by 10%% between minutes)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="write sweeps and logs here and keep them "
                        "(default: a temporary folder, deleted)")
    parser.add_argument("--plain-runs", nargs=2, metavar=("CONFIGS", "RESULTS"), help=argparse.SUPPRESS)
    parser.add_argument("--plain-keep-freed-memory", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.plain_runs:
        plain_arm(Path(args.plain_runs[0]), Path(args.plain_runs[1]), args.workers, args.plain_keep_freed_memory)
        return 0
    if args.seeds < 1 or args.workers < 1 or args.rounds < 1:
        raise SystemExit("--seeds, --workers and --rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as temporary:
        out = Path(args.keep) if args.keep else Path(temporary)
        out.mkdir(parents=True, exist_ok=True)
        return measure(args, out)


def measure(args: argparse.Namespace, out: Path) -> int:
    """Run the arms ``--rounds`` times into ``out`` and print their times, the per-run plain time and the headline.

    Round k writes into ``out/round-k`` (``out`` itself with one round). Even rounds run the arms in reverse
    order, so that a machine whose speed drifts favours no arm; each ratio is taken within its round.
    """
    warm_up(args, out / "warm-up")
    rounds = []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"round {number} of {args.rounds}", flush=True)
        folder = out / f"round-{number}" if args.rounds > 1 else out
        folder.mkdir(parents=True, exist_ok=True)
        first = out / "round-1" if args.rounds > 1 else out
        rounds.append(measure_round(args, folder, reverse=number % 2 == 0, configs=first / "grid-off"))
    times = {arm: statistics.median(found[0][arm] for found in rounds) for arm in rounds[0][0]}
    cpu = {arm: statistics.median(found[1][arm] for found in rounds) for arm in rounds[0][1]}
    plain_seconds = [seconds for found in rounds for seconds in found[2]]

    def ratios_to(reference: str) -> tuple[float, float]:
        arms = ("off", "auto")
        return tuple(statistics.median(found[0][arm] / found[0][reference] for found in rounds) for arm in arms)

    ratios, kept = ratios_to("plain"), ratios_to("plain kept")
    print(f"sweep time vs plain torch.nn keeping freed memory (c'): one by one {kept[0]:.2f}x, "
          f"ensembles {kept[1]:.2f}x; (c') {times['plain kept']:.2f} s")
    if args.rounds > 1:
        print(f"median of {args.rounds} rounds: (a) {times['off']:.2f} s, (b) {times['auto']:.2f} s, (c) "
              f"{times['plain']:.2f} s, (d) auto {times['coursework auto']:.1f} s, off {times['coursework off']:.1f} s")
    print(f"cpu time vs plain torch.nn: one by one {cpu['off'] / cpu['plain']:.2f}x, "
          f"ensembles {cpu['auto'] / cpu['plain']:.2f}x")
    print(headline(times, plain_seconds, ratios=ratios))
    return 0


def warm_up(args: argparse.Namespace, out: Path) -> None:
    """Build the feature caches of both sweep shapes first, untimed: one dry run of one run each.

    The first sweep on a machine computes the MFCCs (about 7 s here) and caches them; every later one reads the
    cache. Without this, whichever arm ran first in the first round paid for it.
    """
    out.mkdir(parents=True, exist_ok=True)
    one_run = ["--dataset", "fsdd", "--data-dir", str(Path(args.data_dir).absolute()), "--cells", "GRU", "--seeds",
               "0", "--workers", "1", "--dry-run", "--no-figures", "--no-progress"]
    for name, shape in (("grid", []), ("coursework", ["--preset", "coursework"])):
        timed(sweep_command(out, name, [*one_run, *shape], "off"), out / f"{name}.log", {}, name)


def measure_round(args: argparse.Namespace, out: Path, *, reverse: bool,
                  configs: Path) -> tuple[dict, dict, list[float]]:
    """One round of every arm into ``out``: (wall times, CPU times, the plain runs' own seconds).

    The plain arm trains the configs of the gradlab sweep in ``configs`` (the first round's (a)).
    """
    common = ["--dataset", "fsdd", "--data-dir", str(Path(args.data_dir).absolute()), "--workers", str(args.workers)]
    common += ["--no-figures"] if args.no_figures else []
    grid = [*common, "--cells", args.cells, "--seeds", ",".join(map(str, range(args.seeds)))]
    grid += ["--epochs", str(args.epochs)] if args.epochs is not None else []
    coursework = [*common, "--preset", "coursework", "--epochs", str(args.coursework_epochs),
                  "--seeds", args.coursework_seeds]
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    runs: list[dict] = []

    def gradlab_arm(label: str) -> None:
        times[label] = timed(sweep_command(out, f"grid-{label}", grid, label), out / f"grid-{label}.log", cpu, label)
        print(f"({'a' if label == 'off' else 'b'}) gradlab --ensemble {label}: {times[label]:.2f} s "
              f"(cpu {cpu[label]:.1f} s)", flush=True)

    def plain_arm_timed(keep_freed_memory: bool = False) -> None:
        from gradlab.store.io import RunFolder

        # The runs (a) trained: in the first round, which runs (a) first; every round trains the same configs.
        configs_file = out / "plain-configs.json"
        configs_file.write_text(json.dumps([RunFolder(folder).config().to_dict() for folder in run_folders(configs)]))
        label = "plain kept" if keep_freed_memory else "plain"
        results = out / f"{label.replace(' ', '-')}-results.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--workers", str(args.workers),
                   "--plain-runs", str(configs_file), str(results)]
        command += ["--plain-keep-freed-memory"] if keep_freed_memory else []
        times[label] = timed(command, out / f"{label.replace(' ', '-')}.log", cpu, label)
        trained = json.loads(results.read_text())
        if keep_freed_memory:
            print(f"(c') plain torch.nn keeping freed memory as gradlab's processes do: {times[label]:.2f} s "
                  f"(cpu {cpu[label]:.1f} s)", flush=True)
            return
        runs.extend(trained)
        print(f"(c) plain torch.nn: {times['plain']:.2f} s (cpu {cpu['plain']:.1f} s; {len(runs)} runs, "
              f"{args.workers} worker processes of 1 thread)", flush=True)

    def coursework_arm(label: str) -> None:
        key = f"coursework {label}"
        times[key] = timed(sweep_command(out, f"coursework-{label}", coursework, label),
                           out / f"coursework-{label}.log", cpu, key)
        print(f"(d) coursework --ensemble {label}: {times[key]:.1f} s (cpu {cpu[key]:.1f} s)", flush=True)

    arms = [lambda: gradlab_arm("off"), lambda: gradlab_arm("auto"), plain_arm_timed,
            lambda: plain_arm_timed(keep_freed_memory=True), lambda: coursework_arm("auto"),
            lambda: coursework_arm("off")]
    for arm in reversed(arms) if reverse else arms:
        arm()
    return times, cpu, [run["seconds"] for run in runs]


def headline(times: dict[str, float], plain_seconds: list[float],
             ratios: tuple[float, float] | None = None) -> str:
    """The closing lines: plain seconds per run, the coursework pair, and the wall-time ratios to the plain arm.

    ``ratios`` (one by one, ensembles) replaces ``times``' own ratios, e.g. with medians of per-round ratios.
    """
    per_run = sum(plain_seconds) / len(plain_seconds)
    off, auto = ratios if ratios is not None else (times["off"] / times["plain"], times["auto"] / times["plain"])
    return "\n".join([
        f"plain torch.nn: {per_run:.2f} s per run in its process",
        f"coursework sweep: auto {times['coursework auto']:.1f} s, off {times['coursework off']:.1f} s",
        f"sweep time vs plain torch.nn: one by one {off:.2f}x, ensembles {auto:.2f}x",
    ])


if __name__ == "__main__":
    sys.exit(main())
