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


def test_given_ratios_replace_the_times_own():
    times = {"off": 30.0, "auto": 12.5, "plain": 20.0, "coursework auto": 38.04, "coursework off": 39.0}
    last = _bench().headline(times, [2.0], ratios=(1.234, 0.5)).splitlines()[-1]
    assert last == "sweep time vs plain torch.nn: one by one 1.23x, ensembles 0.50x"


@pytest.mark.slow
def test_a_tiny_benchmark_prints_every_arm_and_ends_with_the_headline(tmp_path):
    data_dir = fsdd_recordings()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_sweep.py"), "--data-dir", str(data_dir),
               "--seeds", "2", "--epochs", "1", "--cells", "GRU", "--workers", "1", "--coursework-seeds", "0",
               "--coursework-epochs", "1", "--no-figures", "--rounds", "2", "--keep", str(tmp_path)]
    output = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    lines = output.strip().splitlines()
    labels = {"a": "off", "b": "auto", "c": "plain"}
    found = re.findall(r"^\((a|b|c)\) (?:gradlab --ensemble \w+|plain torch\.nn): (\d+\.\d\d) s", output, re.MULTILINE)
    per_round = [{}, {}]
    for arm, value in found:  # each arm prints once a round, in the order the rounds ran
        per_round[0 if labels[arm] not in per_round[0] else 1][labels[arm]] = float(value)
    assert all(set(times) == {"off", "auto", "plain"} for times in per_round), output
    assert len(re.findall(r"^\(d\) coursework --ensemble (?:auto|off): \d+\.\d s \(cpu \d+\.\d s\)$", output,
                          re.MULTILINE)) == 4, output
    assert len(re.findall(r"^\(c'\) plain torch\.nn keeping freed memory as gradlab's processes do: \d+\.\d\d s "
                          r"\(cpu \d+\.\d s\)$", output, re.MULTILINE)) == 2, output
    assert re.fullmatch(r"sweep time vs plain torch\.nn keeping freed memory \(c'\): one by one \d+\.\d\dx, "
                        r"ensembles \d+\.\d\dx; \(c'\) \d+\.\d\d s", lines[-6]), output
    assert re.fullmatch(r"median of 2 rounds: \(a\) \d+\.\d\d s, \(b\) \d+\.\d\d s, \(c\) \d+\.\d\d s, "
                        r"\(d\) auto \d+\.\d s, off \d+\.\d s", lines[-5]), output
    assert re.fullmatch(r"cpu time vs plain torch\.nn: one by one \d+\.\d\dx, ensembles \d+\.\d\dx", lines[-4]), output
    assert re.fullmatch(r"plain torch\.nn: \d+\.\d\d s per run in its process", lines[-3]), output
    assert re.fullmatch(r"coursework sweep: auto \d+\.\d s, off \d+\.\d s", lines[-2]), output
    match = HEADLINE.fullmatch(lines[-1])
    assert match, output
    for printed, arm in zip(match.groups(), ("off", "auto")):
        # the median of two rounds' own ratios, from times printed to 0.005 s
        low = sum((times[arm] - 0.005) / (times["plain"] + 0.005) for times in per_round) / 2
        high = sum((times[arm] + 0.005) / (times["plain"] - 0.005) for times in per_round) / 2
        assert low - 0.005 <= float(printed) <= high + 0.005, (printed, per_round)
    # the second round ran its arms in reverse: the coursework arms before the grid
    second = tmp_path / "round-2"
    assert (second / "coursework-off.log").stat().st_mtime <= (second / "grid-off.log").stat().st_mtime
    # each round's plain arm trained the runs the first round's gradlab sweep did, each timed in its worker
    expected = sorted(p.name for p in (tmp_path / "round-1" / "grid-off").glob("GRU-*"))
    seconds = []
    for folder in (tmp_path / "round-1", second):
        results = json.loads((folder / "plain-results.json").read_text())
        assert sorted(run["run_id"] for run in results) == expected
        assert all(run["seconds"] > 0 and 0 <= run["test_accuracy"] <= 1 for run in results)
        seconds += [run["seconds"] for run in results]
    per_run = float(lines[-3].split()[2])
    assert per_run == pytest.approx(sum(seconds) / len(seconds), abs=0.005)
