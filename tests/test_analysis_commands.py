"""The figures and inspect commands on a tiny saved sweep."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from analysis_helpers import CELLS, FACTOR, write_sweep
from gradlab.__main__ import main
from gradlab.analysis import RunsDirError, load_runs
from gradlab.analysis.commands import FIGURES, REPORT, figures
from gradlab.analysis.report import format_percent, format_ratio


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_sweep(root, "main", seeds=(0, 1))
    write_sweep(root, "lengths", cells=("RNN_TANH", "LSTM"), seeds=(0, 1), seq_lens=(4, 8), tables=("gradients",),
                summary_parquet=False)
    return root


@pytest.fixture(scope="module")
def regenerated(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    status = main(["figures", str(runs), "--out", str(out), "--resamples", "200", "--dpi", "60"])
    return status, out


def test_load_runs_adds_sweep_column(runs):
    data = load_runs(runs)
    assert sorted(data.sweeps) == ["lengths", "main"]
    for kind in ("summary", "history", "gradients", "gates", "jacobian"):
        assert "sweep" in data.table(kind).columns
    # The lengths sweep has no summary.parquet: its summary comes from metrics.json.
    assert len(data.summary) == 8 + 8
    assert set(data.gates["sweep"]) == {"main"}
    assert str(data.gradients["seed"].dtype) == "int64" and str(data.summary["diverged_step"].dtype) == "Int64"


def test_load_several_sweeps_and_one_sweep(runs):
    both = load_runs([runs / "main", runs / "lengths"])
    assert sorted(both.sweeps) == ["lengths", "main"]
    assert list(load_runs(runs / "main").sweeps) == ["main"]


def test_missing_and_empty_runs_dir(tmp_path):
    with pytest.raises(RunsDirError, match="does not exist"):
        load_runs(tmp_path / "absent")
    with pytest.raises(RunsDirError, match="holds no runs"):
        load_runs(tmp_path)


def test_figures_writes_every_expected_file(regenerated):
    status, out = regenerated
    assert status == 0
    names = {path.name for path in out.iterdir()}
    for stem in FIGURES[:-1]:
        for ext in ("png", "pdf"):
            assert f"{stem}__main.{ext}" in names
    for T in (4, 8):
        assert f"gradient_norm_by_timestep__lengths_seq-len-{T}.png" in names
    assert "vanishing_vs_length__lengths.png" in names and "vanishing_vs_length__lengths.pdf" in names
    assert REPORT in names
    assert not [name for name in names if name.endswith(".tmp")]
    assert (out / "gradient_norm_by_timestep__main.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_tables_are_skipped_with_a_note(tmp_path, capsys):
    write_sweep(tmp_path / "runs", "bare", cells=("GRU",), seeds=(0,), tables=("gradients",))
    assert main(["figures", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "svg"]) == 0
    printed = capsys.readouterr().out
    assert "skipped jacobian_spectral_norm: no run recorded jacobian (jacobian.parquet)" in printed
    assert "skipped gate_statistics" in printed and "skipped learning_curves" in printed
    assert (tmp_path / "out" / "gradient_norm_by_timestep__bare.svg").is_file()
    assert (tmp_path / "out" / REPORT).is_file()


def test_bad_runs_dir_exits_2(tmp_path, capsys):
    assert main(["figures", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "absent") in error and "expected a sweep folder" in error
    assert main(["inspect", str(tmp_path)]) == 2
    assert "holds no runs" in capsys.readouterr().err


def test_report_numbers_equal_the_frames(regenerated, runs):
    _, out = regenerated
    report = (out / REPORT).read_text()
    data = load_runs(runs)
    main_gradients = data.gradients[(data.gradients["sweep"] == "main") & (data.gradients["step"] == 0)
                                     & (data.gradients["state"] == "h")]
    # First-to-last ratio computed independently: norm at t=0 over norm at t=T-1, geometric mean over seeds.
    for cell in CELLS:
        runs_of_cell = main_gradients[main_gradients["cell"] == cell]
        ratios = [run.set_index("timestep")["grad_norm"].pipe(lambda s: s[0] / s[s.index.max()])
                  for _, run in runs_of_cell.groupby("run_id")]
        geometric = float(np.exp(np.mean(np.log(ratios))))
        assert geometric == pytest.approx(FACTOR[(cell, "h")] ** 5)
        assert f"({format_ratio(geometric)})" in report
    # Test accuracy of the GRU: mean of the summary's values over seeds.
    gru = data.summary[(data.summary["sweep"] == "main") & (data.summary["cell"] == "GRU")]["test_accuracy"]
    assert f"Most accurate: GRU ({format_percent(gru.mean())})" in report
    assert "dataset `fake_digits`" in report
    # Overview row of the main sweep: each cell's mean test accuracy / init ratio, in cell order.
    overview = report.split("## Overview")[1].split("## Q1")[0]
    main_row = next(line for line in overview.splitlines() if line.startswith("| main "))
    summary = data.summary[data.summary["sweep"] == "main"].groupby("cell")["test_accuracy"].mean()
    assert f"| {format_percent(summary['GRU'])} / " in main_row
    assert "tanh RNN << LSTM **supported**" in report
    # Plateau ranks tanh < relu < LSTM < GRU against ratio ranks tanh < LSTM < relu < GRU:
    # Spearman 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.80.
    assert "gradient ratio at initialisation is 0.80" in report
    # Sequence-length sweep: slope of log10 ratio per timestep is log10(FACTOR).
    slope = re.search(r"RNN tanh (-?[0-9.]+)", report.split("vanishing against sequence length")[1]).group(1)
    assert float(slope) == pytest.approx(np.log10(FACTOR[("RNN_TANH", "h")]), abs=1e-3)
    assert "[gradient_norm_by_timestep__main.png](gradient_norm_by_timestep__main.png)" in report


def test_report_says_when_data_disagrees(tmp_path):
    # Swap the profiles: the tanh RNN now keeps more gradient than the LSTM.
    import analysis_helpers

    original = dict(analysis_helpers.FACTOR)
    analysis_helpers.FACTOR.update({("RNN_TANH", "h"): 0.95, ("LSTM", "h"): 0.3})
    try:
        write_sweep(tmp_path / "runs", "odd", cells=("RNN_TANH", "LSTM"), seeds=(0,), tables=("gradients",))
    finally:
        analysis_helpers.FACTOR.update(original)
    figures(tmp_path / "runs", tmp_path / "out", formats=("png",), n_resamples=50)
    report = (tmp_path / "out" / REPORT).read_text()
    assert "tanh RNN << LSTM **not supported**" in report
    tail = report.split("## Where the data does not support the textbook")[1]
    assert "odd: a tanh RNN's gradient vanishes faster than an LSTM's (at initialisation)" in tail


def test_inspect_prints_summary_and_gradient_head(runs, capsys):
    assert main(["inspect", str(runs / "main"), "--rows", "3"]) == 0
    printed = capsys.readouterr().out
    assert "== sweep main" in printed and "8 runs" in printed
    assert "test_accuracy" in printed and "rnn_tanh-s1" in printed
    gradient_rows = 2 * 4 * 6 * (len(CELLS) + 1)  # seeds x steps x timesteps x (cells + LSTM c)
    assert f"gradients: {gradient_rows} rows x 14 columns" in printed
    head = printed.split("gradients:")[1].strip().splitlines()
    assert len(head) == 1 + 1 + 3  # shape line, header, three rows


def test_analysis_never_imports_torch():
    import subprocess
    import sys

    code = "import sys, gradlab.analysis, gradlab.analysis.commands; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_every_flag_has_help():
    from gradlab.__main__ import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command").choices
    for name in ("figures", "inspect"):
        for action in subparsers[name]._actions:
            assert action.help, f"{name} {action.dest} lacks help"


def test_overlapping_intervals_are_not_clear_not_supported():
    from gradlab.analysis.report import _apart, _Checks

    low = pd.Series({"mean": 1.0, "ci_low": 0.5, "ci_high": 1.5})
    high_overlapping = pd.Series({"mean": 2.0, "ci_low": 1.4, "ci_high": 2.6})
    high_apart = pd.Series({"mean": 2.0, "ci_low": 1.6, "ci_high": 2.4})
    checks = _Checks()
    assert checks.add("s", "a", True, _apart(low, high_apart)) == "**supported**"
    assert checks.add("s", "b", True, _apart(low, high_overlapping)).startswith("**not clear**")
    assert checks.add("s", "c", False, _apart(low, high_apart)) == "**not supported**"
    assert [verdict for _, _, verdict in checks.results] == ["supported", "not clear", "not supported"]
