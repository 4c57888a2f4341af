"""experiments/modern.sh at toy scale: every part runs, writes where the report reads, and resumes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import torch
import pytest
from data_helpers import fsdd_recordings

from gradlab.analysis import load_runs
from gradlab.analysis.report.modern import modern_section

REPO = Path(__file__).resolve().parents[1]
MODERN = {"INDRNN", "MINGRU", "MINLSTM", "LRU", "DIAGONAL"}


@pytest.mark.slow
def test_modern_script_runs_every_part_at_toy_scale_and_resumes(tmp_path):
    out = tmp_path / "modern"
    env = {**os.environ, "GRADLAB_MODERN_TOY": "1", "GRADLAB_FSDD": str(fsdd_recordings()),
           "GRADLAB_SPEAKERS": "george jackson", "GRADLAB_DATA": str(tmp_path / "data"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    command = ["bash", str(REPO / "experiments" / "modern.sh"), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    walls = pd.read_csv(out / "wall_times.tsv", sep="\t", header=None, names=["sweep", "seconds"])
    delay_sweeps = {f"fsdd-delay-{cell}-{speaker}" for cell in MODERN for speaker in ("george", "jackson")}
    expected = {"length-distance-modern", "length-distance-modern-500", "length-distance-modern-1000",
                "fsdd-tuned-modern", "bench_scan", *delay_sweeps}
    assert set(walls["sweep"]) == expected and len(walls) == len(expected)

    lengths = pd.read_parquet(out / "length-distance-modern" / "summary.parquet")
    assert set(lengths["cell"]) == MODERN and set(lengths["seq_len"]) == {6, 8}
    assert set(lengths["lr"]) == {0.01, 0.03}
    assert set(pd.read_parquet(out / "length-distance-modern-1000" / "summary.parquet")["seq_len"]) == {12}
    # Each fold's delay sweep runs at the learning rate and clipping that fold's validation chose.
    choices = pd.read_csv(out / "fsdd-tuned-modern.choices.tsv", sep="\t", header=None,
                          names=["cell", "speaker", "settings"])
    assert set(choices["cell"]) == MODERN and set(choices["speaker"]) == {"george", "jackson"}
    lru = choices[(choices["cell"] == "LRU") & (choices["speaker"] == "jackson")]["settings"].iloc[0]
    delayed = pd.read_parquet(out / "fsdd-delay-LRU-jackson" / "summary.parquet")
    clip = lru.split("--clip-grad-norm ")[1]
    assert set(delayed["delay"]) == {16, 64} and set(delayed["test_speaker"]) == {"jackson"}
    assert delayed["clip_grad_norm"].isna().all() if clip == "none" else set(delayed["clip_grad_norm"]) == {float(clip)}
    bench = (out / "bench_scan.txt").read_text()
    assert bench.startswith("$ python benchmarks/bench_scan.py") and "DIAGONAL" in bench

    # Parameter gradients recorded, and the report's section reads all of it.
    data = load_runs([out], tables=("summary", "gradients", "parameter_gradients"))
    assert set(data.parameter_gradients["cell"].astype(str)) == MODERN
    section = "\n".join(modern_section(data, {}))
    assert "## Modern recurrences" in section and "DIAGONAL" in bench and "bench_scan.txt" in section

    # A second run finds every sweep finished: nothing trains again.
    runs_before = {path: path.stat().st_mtime for path in out.glob("*/*/metrics.json")}
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {path: path.stat().st_mtime for path in out.glob("*/*/metrics.json")} == runs_before


def test_bench_scan_prints_a_ratio_for_each_scanning_cell_and_none_for_indrnn(capsys):
    import importlib.util
    import math

    spec = importlib.util.spec_from_file_location("bench_scan", REPO / "benchmarks" / "bench_scan.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--repeats", "1", "--steps", "6", "--hidden", "3", "--batch", "2", "--modes", "LRU", "INDRNN"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [row[:2] for row in rows] == [["LRU", "6"], ["INDRNN", "6"]]
    lru, indrnn = rows
    scan_ms, loop_ms, ratio = float(lru[2]), float(lru[3]), float(lru[4])  # printed to 0.01: allow its rounding
    assert (loop_ms - 0.005) / (scan_ms + 0.005) - 0.005 <= ratio <= (loop_ms + 0.005) / (scan_ms - 0.005) + 0.005
    assert indrnn[2] == "-" and indrnn[4] == "-" and float(indrnn[3]) > 0
    scan, loop = bench.time_cell("INDRNN", 4, batch=2, features=1, hidden=3, repeats=1, dtype=torch.float64)
    assert math.isnan(scan) and loop > 0
