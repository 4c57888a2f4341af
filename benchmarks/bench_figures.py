"""Time a sweep's figures and findings report drawn in one process against drawn by worker processes.

Each measurement is a fresh Python process that imports torch (as the sweep
that draws its figures has) and calls ``gradlab.sweep.runner.draw_figures`` once
on SWEEP, with ``jobs=1`` (one process, the reference) or ``--jobs`` (default:
every available CPU). Rounds alternate the order of the two arms, so a drift
in the machine's load falls on both. Prints each measurement's wall time and
CPU time (its process and its workers), and each round's parallel/serial ratio:
only ratios of one run mean anything on a machine other work shares.

Both arms write the same files into SWEEP/figures/ (see tests/test_analysis_drawing.py).

Usage: PYTHONPATH=src python benchmarks/bench_figures.py SWEEP [--rounds 3] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

# One measurement: draw_figures on the sweep with `jobs` workers; prints wall and CPU seconds as JSON.
_MEASURE = """
import io, json, resource, sys, time
import torch  # noqa: F401 - the sweep driver has imported torch when it draws
from gradlab.analysis import commands
from gradlab.sweep.runner import draw_figures

sweep, jobs = sys.argv[1], None if sys.argv[2] == "all" else int(sys.argv[2])
figures = commands.figures
commands.figures = lambda *args, **kwargs: figures(*args, **kwargs, jobs=jobs)
start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
written = draw_figures(sweep, stream=io.StringIO())
wall = time.perf_counter() - start
cpu = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
          for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) - usage.ru_utime - usage.ru_stime
print(json.dumps({"wall": wall, "cpu": cpu, "files": len(written)}))
"""


def measure(sweep: str, jobs: str) -> dict:
    """Wall and CPU seconds of one draw_figures call with ``jobs`` workers, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, sweep, jobs], capture_output=True, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        raise SystemExit(f"measurement failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a finished sweep folder (its figures/ is redrawn)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both arms, alternating order (default: 3)")
    parser.add_argument("--jobs", default="all",
                        help="workers of the parallel arm (default: all, every available CPU)")
    args = parser.parse_args()
    from gradlab.analysis.drawing import available_cpus

    print(f"available CPUs: {available_cpus()}; parallel arm: jobs={args.jobs}")
    measure(args.sweep, "1")  # warm the disk cache and compiled files
    ratios = []
    for round_index in range(args.rounds):
        arms = ("1", args.jobs) if round_index % 2 == 0 else (args.jobs, "1")
        times = {arm: measure(args.sweep, arm) for arm in arms}
        for arm in arms:
            print(f"round {round_index} jobs={arm:>3}: wall {times[arm]['wall']:6.2f} s, "
                  f"CPU {times[arm]['cpu']:6.2f} s, {times[arm]['files']} files")
        ratios.append(times[args.jobs]["wall"] / times["1"]["wall"])
        print(f"round {round_index} parallel/serial wall: {ratios[-1]:.2f}")
    print("parallel/serial wall by round: " + ", ".join(f"{ratio:.2f}" for ratio in ratios))


if __name__ == "__main__":
    main()
