"""benchmarks/bench_sweep.py prints each arm's wall time and ratios that are those times' own."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import fsdd_recordings

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = re.compile(r"sweep time vs plain torch\.nn: one by one (\d+\.\d\d)x, ensembles (\d+\.\d\d)x")


def _bench():
    path = ROOT / "benchmarks" / "bench_sweep.py"
    spec = importlib.util.spec_from_file_location("bench_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_closing_lines_divide_the_arms_own_times():
    times = {"off": 30.0, "auto": 12.5, "plain": 20.0, "coursework auto": 38.04, "coursework off": 39.0}
    lines = _bench().headline(times, [1.5, 2.5, 2.0]).splitlines()
    assert lines == ["plain torch.nn: 2.00 s per run in its process",
                     "coursework sweep: auto 38.0 s, off 39.0 s",
                     "sweep time vs plain torch.nn: one by one 1.50x, ensembles 0.62x"]  # 30/20 and 12.5/20


@pytest.mark.slow
def test_a_tiny_benchmark_prints_every_arm_and_ends_with_the_headline(tmp_path):
    data_dir = fsdd_recordings()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_sweep.py"), "--data-dir", str(data_dir),
               "--seeds", "2", "--epochs", "1", "--cells", "GRU", "--workers", "1", "--coursework-seeds", "0",
               "--coursework-epochs", "1", "--no-figures", "--keep", str(tmp_path)]
    output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    lines = output.strip().splitlines()
    times = {label: float(value) for label, value in
             re.findall(r"^\((?:a|b|c)\) (gradlab --ensemble off|gradlab --ensemble auto|plain torch\.nn): "
                        r"(\d+\.\d\d) s", output, re.MULTILINE)}
    assert set(times) == {"gradlab --ensemble off", "gradlab --ensemble auto", "plain torch.nn"}, output
    assert re.search(r"^\(d\) coursework --ensemble auto: \d+\.\d s \(cpu \d+\.\d s\)$", output, re.MULTILINE), output
    assert re.fullmatch(r"cpu time vs plain torch\.nn: one by one \d+\.\d\dx, ensembles \d+\.\d\dx", lines[-4]), output
    assert re.fullmatch(r"plain torch\.nn: \d+\.\d\d s per run in its process", lines[-3]), output
    assert re.fullmatch(r"coursework sweep: auto \d+\.\d s, off \d+\.\d s", lines[-2]), output
    match = HEADLINE.fullmatch(lines[-1])
    assert match, output
    plain = times["plain torch.nn"]
    for printed, arm in zip(match.groups(), ("gradlab --ensemble off", "gradlab --ensemble auto")):
        # the printed times are rounded to 0.005 s: the ratio of the unrounded ones lies within that
        low, high = (times[arm] - 0.005) / (plain + 0.005), (times[arm] + 0.005) / (plain - 0.005)
        assert low - 0.005 <= float(printed) <= high + 0.005, (printed, times)
    # the plain arm trained the runs the gradlab sweep did, each timed in its worker
    results = json.loads((tmp_path / "plain-results.json").read_text())
    assert sorted(run["run_id"] for run in results) == sorted(p.name for p in (tmp_path / "grid-off").glob("GRU-*"))
    assert all(run["seconds"] > 0 and 0 <= run["test_accuracy"] <= 1 for run in results)
    per_run = float(lines[-3].split()[2])
    assert per_run == pytest.approx(sum(run["seconds"] for run in results) / len(results), abs=0.005)
