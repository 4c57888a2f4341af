"""The command-line flags that choose where a sweep's runs execute, and the executor they describe."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from gradlab.sweep.executors.common import EXTRAS, check_no_live_jobs

EXECUTORS: tuple[str, ...] = ("local", "submitit", "ray")
#: Flags that only one engine (or the cluster engines) reads: flag -> (argparse dest, executors it applies to).
ENGINE_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "--partition": ("partition", ("submitit",)),
    "--time-limit": ("time_limit", ("submitit",)),
    "--mem-gb": ("mem_gb", ("submitit",)),
    "--array-parallelism": ("array_parallelism", ("submitit",)),
    "--sbatch": ("sbatch", ("submitit",)),
    "--ray-address": ("ray_address", ("ray",)),
    "--cpus-per-task": ("cpus_per_task", ("submitit", "ray")),
    "--gpus-per-task": ("gpus_per_task", ("submitit", "ray")),
}
DEFAULT_TIME_LIMIT = 60


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and the options of each executor, in their own group of ``parser``."""
    group = parser.add_argument_group("where runs execute")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: this machine (--workers processes); submitit: a Slurm job array (submitit's "
                            "local processes where there is no Slurm); ray: Ray tasks (default: local). The sweep "
                            "folder must be on a filesystem every worker shares")
    group.add_argument("--on-interrupt", choices=("cancel", "detach"), default="cancel",
                       help="on Ctrl-C, cancel the submitted runs or (submitit) leave them running and record their "
                            "jobs in <sweep>/executor.json; --resume waits until they end (default: cancel)")
    group.add_argument("--cpus-per-task", type=int, default=None, metavar="N",
                       help="CPUs each job reserves on submitit or ray; a job trains one run or one ensemble with "
                            "--threads torch threads, so CPUs beyond --threads sit idle (default: --threads)")
    group.add_argument("--gpus-per-task", type=int, default=None, metavar="N",
                       help="GPUs per job (one run or one ensemble) on submitit or ray (default: 0: submitit's "
                            "jobs then see no GPU, so --device auto trains on the CPU and --device cuda fails at once; "
                            "Ray does not hide GPUs it did not reserve, so ask for them whenever runs use one)")
    group.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    group.add_argument("--time-limit", type=int, default=None, metavar="MINUTES",
                       help=f"minutes each run may take before Slurm stops it (default: {DEFAULT_TIME_LIMIT}); a "
                            "job that trains an ensemble of N runs gets N times as long (--plan lists each job's "
                            "limit), and --resume continues a stopped run from its last epoch")
    group.add_argument("--mem-gb", type=float, default=None, metavar="GB",
                       help="memory per job (one run or one ensemble) in GB (Slurm; default: the cluster's)")
    group.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                       help="jobs at once in the job array (default: Slurm 256; locally the number of CPUs)")
    group.add_argument("--sbatch", action="append", default=None, metavar="KEY=VALUE",
                       help="another #SBATCH setting, e.g. --sbatch account=mylab --sbatch qos=short (repeatable)")
    group.add_argument("--ray-address", default=None, metavar="ADDRESS",
                       help="Ray cluster to run on, e.g. ray://head:10001 or auto (default: start a local Ray)")


def _sbatch(items: list[str] | None) -> dict[str, str]:
    settings = {}
    for item in items or []:
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or key.strip().startswith("-"):
            raise ValueError(f"--sbatch {item!r}: write KEY=VALUE without dashes, e.g. --sbatch account=mylab")
        settings[key.strip()] = value.strip()
    return settings


def executor_from_args(args: argparse.Namespace, sweep_dir: str | Path) -> Any:
    """The executor the flags of :func:`add_executor_arguments` describe; None for ``--executor local``.

    With ``--resume``, ``--overwrite`` or ``--dry-run`` (which replaces its
    folder), first refuses while runs an earlier command left running may
    still write to the sweep folder.

    Raises:
        ValueError: a flag another executor reads, a bad value, an engine that
            is not installed (naming the pip extra), or runs still running.
    """
    kind = args.executor
    for flag, (dest, applies) in ENGINE_FLAGS.items():
        if getattr(args, dest, None) is not None and kind not in applies:
            raise ValueError(f"{flag} applies to --executor {' or '.join(applies)}, not {kind}")
    for flag in ("--cpus-per-task", "--array-parallelism", "--time-limit"):
        value = getattr(args, ENGINE_FLAGS[flag][0])
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.gpus_per_task is not None and args.gpus_per_task < 0:
        raise ValueError(f"--gpus-per-task must be >= 0, got {args.gpus_per_task}")
    if args.mem_gb is not None and not args.mem_gb > 0:
        raise ValueError(f"--mem-gb must be positive, got {args.mem_gb}")
    if kind != "local" and args.workers != 1:
        raise ValueError(f"--workers is for --executor local; with {kind}, runs execute in parallel on the cluster "
                         + ("(--array-parallelism limits how many)" if kind == "submitit" else "(as resources allow)"))
    if args.on_interrupt == "detach" and kind != "submitit":
        from gradlab.sweep.executors.ray_executor import NO_DETACH

        raise ValueError(NO_DETACH if kind == "ray" else "--on-interrupt detach needs --executor submitit: local runs "
                                                         "are processes of this command and end with it")
    sbatch = _sbatch(args.sbatch)
    if kind != "local" and importlib.util.find_spec(kind) is None:
        raise ValueError(f"--executor {kind} needs the {kind!r} engine, which is not installed; install it with: "
                         f"pip install 'gradlab[{EXTRAS[kind]}]'")
    if args.resume or args.overwrite or args.dry_run:
        check_no_live_jobs(sweep_dir)
    common = {"cpus_per_task": args.cpus_per_task or args.threads, "gpus_per_task": args.gpus_per_task or 0,
              "on_interrupt": args.on_interrupt, "progress": not args.no_progress}
    if kind == "submitit":
        from gradlab.sweep.executors.submitit_executor import SubmititExecutor

        return SubmititExecutor(sweep_dir, partition=args.partition, time_limit=args.time_limit or DEFAULT_TIME_LIMIT,
                                mem_gb=args.mem_gb, array_parallelism=args.array_parallelism, sbatch=sbatch, **common)
    if kind == "ray":
        from gradlab.sweep.executors.ray_executor import RayExecutor

        return RayExecutor(sweep_dir, address=args.ray_address, **common)
    return None
