"""The figures and inspect commands on a tiny saved sweep."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from analysis_helpers import CELLS, FACTOR, write_sweep

from gradlab.__main__ import main
from gradlab.analysis import DamagedRunWarning, RunsDirError, load_runs
from gradlab.analysis.commands import APPENDIX, FIGURES, REPORT, slug
from gradlab.analysis.report import build_findings, tune
from gradlab.analysis.report.format import format_percent, format_ratio
from gradlab.store import schema

MAIN_SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_sweep(root, "main", seeds=MAIN_SEEDS)
    write_sweep(root, "lengths", cells=("RNN_TANH", "LSTM"), seeds=(0, 1), seq_lens=(4, 8), tables=("gradients",),
                summary_parquet=False)
    return root


@pytest.fixture(scope="module")
def loaded(runs):
    return load_runs(runs, "all")


@pytest.fixture(scope="module")
def regenerated(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    status = main(["figures", str(runs), "--out", str(out), "--resamples", "200", "--dpi", "40", "--formats", "png",
                   "--all-figures"])
    return status, out


def test_load_runs_adds_sweep_column(loaded):
    data = loaded
    assert sorted(data.sweeps) == ["lengths", "main"]
    for kind in ("summary", "history", "gradients", "gates", "jacobian", "predictions"):
        assert "sweep" in data.table(kind).columns
    # The lengths sweep has no summary.parquet: its summary comes from metrics.json.
    assert len(data.summary) == 4 * len(MAIN_SEEDS) + 8
    assert str(data.predictions["correct"].dtype) == "bool" and len(data.predictions.loc[0, "probabilities"]) == 10
    assert set(data.gates["sweep"]) == {"main"}
    assert str(data.gradients["seed"].dtype) == "int64" and str(data.summary["diverged_step"].dtype) == "Int64"


def test_load_several_sweeps_and_one_sweep(runs):
    both = load_runs([runs / "main", runs / "lengths"])
    assert sorted(both.sweeps) == ["lengths", "main"]
    assert list(load_runs(runs / "lengths").sweeps) == ["lengths"]


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
        assert f"{stem}__main.png" in names
    for T in (4, 8):
        assert f"gradient_norm_by_timestep__lengths_seq-len-{T}.png" in names
    assert "vanishing_vs_length__lengths.png" in names
    assert REPORT in names and APPENDIX in names
    assert not [name for name in names if name.endswith(".tmp")]
    assert (out / "gradient_norm_by_timestep__main.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_tables_are_skipped_with_a_note(tmp_path, capsys):
    write_sweep(tmp_path / "runs", "bare", cells=("GRU",), seeds=(0,), tables=("gradients",))
    assert main(["figures", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--formats", "svg",
                 "--all-figures"]) == 0
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


def _answers(report: str) -> dict[str, str]:
    section = report.split("## Answers")[1].split("\n## ")[0]
    parts = re.split(r"^### (\d)\. .*$", section, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_report_opens_with_the_four_questions_in_order(regenerated):
    from gradlab.analysis.report.answers import QUESTIONS

    _, out = regenerated
    report = (out / REPORT).read_text()
    headings = re.findall(r"^## .*$", report, flags=re.MULTILINE)
    assert headings[0] == "## Answers" and "## Evidence" in headings
    assert re.findall(r"^### \d\. (.*)$", report, flags=re.MULTILINE)[:4] == list(QUESTIONS)
    answers = _answers(report)
    assert sorted(answers) == ["1", "2", "3", "4"]
    for key, text in answers.items():
        assert "*Limits:*" in text or "cannot be answered" in text or "could be made" in text, key
    # Each answer that has data leads with the figure made for it.
    assert answers["1"].strip().startswith("![per-step gradient decay by activation")
    assert answers["4"].strip().startswith("![paired test-accuracy differences")
    assert (out / "answer1_decay_by_activation.png").read_bytes()[:4] == b"\x89PNG"


def test_report_numbers_equal_the_frames(regenerated, loaded):
    from scipy import stats

    _, out = regenerated
    report = (out / REPORT).read_text()
    answers = _answers(report)
    data = loaded
    # Question 1: per-step decay of the (only, so top) layer at init is the fake profile's factor exactly.
    tanh = next(line for line in answers["1"].splitlines() if line.startswith("| RNN tanh |"))
    assert tanh.startswith(f"| RNN tanh | {format_ratio(FACTOR[('RNN_TANH', 'h')])} ")
    relu = next(line for line in answers["1"].splitlines() if line.startswith("| RNN relu |"))
    assert relu.startswith(f"| RNN relu | {format_ratio(FACTOR[('RNN_RELU', 'h')])} ")
    # Question 4: one test split, so a Welch test over seeds, computed independently here.
    main_runs = data.summary[data.summary["sweep"] == "main"]
    gru = main_runs[main_runs["cell"] == "GRU"]["test_accuracy"]
    lstm = main_runs[main_runs["cell"] == "LSTM"]["test_accuracy"]
    interval = stats.ttest_ind(gru, lstm, equal_var=False).confidence_interval()
    row = next(line for line in answers["4"].splitlines() if "| GRU - LSTM |" in line)
    expected = f"{100 * (gru.mean() - lstm.mean()):+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"
    assert expected in row and "**GRU better**" in row
    assert "Welch t test of the difference over seeds" in answers["4"]
    # The dataset is named as the summary records it, in the overview.
    assert "| main | `fake_digits` |" in report
    # Overview row of the main sweep: each cell's mean test accuracy and seeds that learned.
    overview = report.split("## Evidence")[1]
    main_row = next(line for line in overview.splitlines() if line.startswith("| main "))
    assert main_row.startswith("| main | `fake_digits` | 5 |")  # the split is stated once, in the caption
    assert "Splits: `fake_digits`: the dataset's fixed split" in overview
    assert f"| {format_percent(gru.mean())} (5/5) |" in main_row


def test_report_verdicts_are_symmetric_and_corrected(regenerated):
    _, out = regenerated
    report = (out / REPORT).read_text()
    appendix = (out / APPENDIX).read_text()
    checks = appendix.split("## All checks")[1].split("\n## ")[0]
    rows = [line for line in checks.splitlines() if line.startswith("| main ")]
    # tanh vs LSTM: 0.73 decades apart, short of the one decade a "much smaller" claim needs.
    much = next(row for row in rows if "much less gradient" in row)
    assert much.endswith("**not clear** |") and "-0.731" in much
    assert any("an LSTM is more accurate" in row and row.endswith("**supported** |") for row in rows)
    # The lengths sweep has 2 seeds per cell: no verdict.
    assert "too few seeds" in checks and not re.search(r"lengths.*\*\*supported\*\*", checks)
    assert re.search(r"Holm-corrected over all \d+ checks", report)


def test_report_says_when_data_disagrees(tmp_path):
    # Swap the profiles: the tanh RNN now keeps more gradient than the LSTM.
    import analysis_helpers

    original = dict(analysis_helpers.FACTOR)
    analysis_helpers.FACTOR.update({("RNN_TANH", "h"): 0.95, ("LSTM", "h"): 0.3})
    try:
        write_sweep(tmp_path / "runs", "odd", cells=("RNN_TANH", "LSTM"), seeds=MAIN_SEEDS,
                    tables=("gradients",))
        write_sweep(tmp_path / "runs", "one", cells=("RNN_TANH", "LSTM"), seeds=(0,), tables=("gradients",))
    finally:
        analysis_helpers.FACTOR.update(original)
    appendix = build_findings(load_runs(tmp_path / "runs", "all"), n_resamples=50).appendix()
    odd = next(line for line in appendix.splitlines() if line.startswith("| odd ") and "much less gradient" in line)
    assert odd.endswith("**contradicted** |")
    # One seed never supports anything.
    one = [line for line in appendix.splitlines() if line.startswith("| one ")]
    verdicts = [line for line in one if "**" in line]
    assert verdicts and all(line.endswith("**too few seeds** |") for line in verdicts)


def test_report_labels_the_split_and_the_tuned_selection(tmp_path):
    sweep = write_sweep(tmp_path / "runs", "tuned", cells=("GRU", "LSTM"), seeds=(0, 1, 2, 3),
                        tables=("history",))
    summary = pd.read_parquet(sweep / schema.SWEEP_FILES["summary"])
    # Seeds 0-1 ran at lr 0.1, seeds 2-3 at lr 0.01 (which has the better validation accuracy).
    summary = summary.assign(lr=np.where(summary["seed"] < 2, 0.1, 0.01), split="takes", dataset="fsdd")
    summary.to_parquet(sweep / schema.SWEEP_FILES["summary"])
    (sweep / schema.SWEEP_FILES["sweep"]).write_text(json.dumps({"select_by": "validation", "grid": {"lr": [0.1, 0.01]}}))
    report = build_findings(load_runs(tmp_path / "runs", "all"), n_resamples=50).main()
    assert "speaker-dependent" in report
    tuned = report.split("### Tuned comparison")[1]
    assert "lr in {0.1, 0.01}" in tuned and "GRU: lr=0.01" in tuned and "test accuracy never used" in tuned
    row = next(line for line in report.splitlines() if line.startswith("| tuned "))
    assert "| 2 |" in row  # two seeds of the selected grid point behind each cell


def test_tuned_selection_is_made_per_speaker_fold(tmp_path):
    sweep = write_sweep(tmp_path / "runs", "folds", cells=("GRU", "LSTM"), seeds=tuple(range(8)),
                        tables=("history",))
    summary = pd.read_parquet(sweep / schema.SWEEP_FILES["summary"])
    # Two folds x two learning rates x two seeds. Fold george validates best at lr 0.1, fold theo at 0.01.
    speaker = np.where(summary["seed"] % 2 == 0, "george", "theo")
    lr = np.where(summary["seed"] < 4, 0.1, 0.01)
    best = ((speaker == "george") & (lr == 0.1)) | ((speaker == "theo") & (lr == 0.01))
    summary = summary.assign(lr=lr, test_speaker=speaker, split="speakers", dataset="fsdd",
                             best_val_accuracy=np.where(best, 0.9, 0.5))
    summary.to_parquet(sweep / schema.SWEEP_FILES["summary"])
    (sweep / schema.SWEEP_FILES["sweep"]).write_text(json.dumps({
        "select_by": "validation", "grid": {"lr": [0.1, 0.01], "test_speaker": ["george", "theo"]}}))
    tuned, notes = tune(load_runs(tmp_path / "runs", "all"))
    kept = tuned.summary.set_index("run_id")
    assert len(kept) == 8  # per cell and fold, the two seeds of the chosen lr
    assert (kept["best_val_accuracy"] == 0.9).all()
    assert set(zip(kept["test_speaker"], kept["lr"])) == {("george", 0.1), ("theo", 0.01)}
    assert "per cell and test_speaker" in notes[0] and "GRU (test_speaker theo): lr=0.01" in notes[0]


def _damage(sweep):
    (sweep / "gru-s0" / schema.RUN_FILES["history"]).write_bytes(b"")
    history = sweep / "lstm-s1" / schema.RUN_FILES["history"]
    history.write_bytes(history.read_bytes()[:100])
    (sweep / "rnn_tanh-s0" / schema.RUN_FILES["metrics"]).write_text("{not json")
    summary = sweep / schema.SWEEP_FILES["summary"]
    summary.write_bytes(summary.read_bytes()[-200:])


def test_damaged_runs_are_skipped_with_a_warning(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "runs", "hurt", cells=("RNN_TANH", "LSTM", "GRU"), seeds=(0, 1),
                        tables=("history",))
    _damage(sweep)
    with pytest.warns(DamagedRunWarning) as caught:
        data = load_runs(sweep, "all")
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 4 and len(data.skipped) == 4
    # A damaged summary.parquet falls back to each run's metrics.json.
    assert any("summary.parquet" in message and "metrics.json instead" in message for message in messages)
    for name in ("gru-s0/history.parquet", "lstm-s1/history.parquet", "rnn_tanh-s0/metrics.json"):
        assert any(name in message for message in messages), name
    # The damaged runs are gone from every table, summary included; the others stay.
    assert sorted(data.runs()["run_id"]) == ["gru-s1", "lstm-s0", "rnn_tanh-s1"]
    assert sorted(data.summary["run_id"]) == ["gru-s1", "lstm-s0", "rnn_tanh-s1"]
    assert main(["figures", str(sweep), "--out", str(tmp_path / "out"), "--formats", "png", "--dpi", "30"]) == 0
    printed = capsys.readouterr().out
    assert "warning: skipped run" in printed and "gru-s0/history.parquet" in printed
    assert "Runs left out" in (tmp_path / "out" / REPORT).read_text()
    assert main(["inspect", str(sweep)]) == 0
    # inspect reads only the summary and gradients: the damaged metrics.json is named, the history files are not read.
    printed = capsys.readouterr().out
    assert "rnn_tanh-s0/metrics.json" in printed and "history.parquet" not in printed


def test_a_skipped_run_names_its_damaged_file_once(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "runs", "hurt", cells=("RNN_TANH", "GRU"), seeds=(0,))
    metrics = sweep / "rnn_tanh-s0" / schema.RUN_FILES["metrics"]
    metrics.write_text("{not json")
    assert main(["inspect", str(sweep)]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    # was: "skipped run <sweep>/rnn_tanh-s0: <sweep>/rnn_tanh-s0/metrics.json: <sweep>/rnn_tanh-s0/metrics.json is ..."
    assert line.startswith(f"warning: skipped run rnn_tanh-s0: {metrics} is damaged (Expecting property name")
    assert line.count(str(sweep)) == 1


def test_no_readable_run_is_a_clear_error(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "runs", "lost", cells=("GRU",), seeds=(0,), tables=("history",),
                        summary_parquet=False)
    (sweep / "gru-s0" / schema.RUN_FILES["history"]).write_bytes(b"")
    assert main(["figures", str(sweep), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "no readable runs" in error and "gru-s0/history.parquet" in error


def test_inspect_prints_summary_and_gradient_head(runs, capsys):
    assert main(["inspect", str(runs / "main"), "--rows", "3"]) == 0
    printed = capsys.readouterr().out
    assert "== sweep main" in printed and "20 runs" in printed
    assert "test_accuracy" in printed and "rnn_tanh-s1" in printed
    gradient_rows = len(MAIN_SEEDS) * 4 * 6 * (len(CELLS) + 1)  # seeds x steps x timesteps x (cells + LSTM c)
    assert f"gradients: {gradient_rows} rows x 14 columns" in printed
    head = printed.split("gradients:")[1].strip().splitlines()
    assert len(head) == 1 + 1 + 3  # shape line, header, three rows


def test_analysis_never_imports_torch():
    import subprocess
    import sys

    code = "import gradlab.analysis, gradlab.analysis.commands, gradlab.analysis.report, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_flag_has_help():
    from gradlab.__main__ import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command").choices
    for name in ("figures", "inspect"):
        for action in subparsers[name]._actions:
            assert action.help, f"{name} {action.dest} lacks help"


def test_old_runs_get_their_classes_from_sweep_json(tmp_path):
    from gradlab.analysis.report import with_classes

    sweep = write_sweep(tmp_path / "runs", "old", cells=("GRU",), seeds=(0, 1), tables=("history",))
    summary = pd.read_parquet(sweep / schema.SWEEP_FILES["summary"]).drop(columns=["num_classes"])
    summary.to_parquet(sweep / schema.SWEEP_FILES["summary"])
    runs = [{"run_id": run_id, "data": {"dataset": "fsdd", "words": ["one", "two", "three"]}}
            for run_id in summary["run_id"]]
    (sweep / schema.SWEEP_FILES["sweep"]).write_text(json.dumps({"runs": runs}))
    data = with_classes(load_runs(sweep, "all"))
    assert list(data.summary["num_classes"]) == [3, 3]
    findings = build_findings(data, n_resamples=50)
    assert findings.evidence[0].chance == pytest.approx(1 / 3)


def test_split_scheme_from_the_sweep_configuration():
    from gradlab.analysis.report.format import split_of

    runs = [{"run_id": "a", "data": {"dataset": "fsdd", "split": "speakers"}}]
    empty = type("Runs", (), {"summary": pd.DataFrame({"dataset": ["fsdd"]})})()
    assert split_of(empty, {"runs": runs}) == "speakers"
    assert split_of(empty, {"runs": runs + [{"data": {"split": "takes"}}]}) is None  # mixed: no single label


def test_runs_of_an_older_layout_are_read_with_a_warning_naming_it(tmp_path):
    import json

    from gradlab.analysis.load import OlderLayoutWarning

    write_sweep(tmp_path / "runs", "old", cells=("GRU",), seeds=(0,), tables=("gradients",))
    for config in (tmp_path / "runs").rglob("config.json"):
        values = json.loads(config.read_text())
        values.pop("layout")
        config.write_text(json.dumps(values))
    with pytest.warns(OlderLayoutWarning, match="run-folder layout 1, before 2"):
        data = load_runs(tmp_path / "runs", "all")
    assert not data.summary.empty


FAST_FIGURES = ["--formats", "png", "--dpi", "30", "--resamples", "20"]


def test_figures_without_out_writes_into_the_sweep(tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path / "runs", "one", cells=("GRU",), seeds=(0, 1), tables=("history",))
    monkeypatch.chdir(tmp_path)
    assert main(["figures", str(sweep), *FAST_FIGURES]) == 0
    assert (sweep / "figures" / REPORT).is_file()
    assert not (tmp_path / "figures").exists()
    # several runs directories have no one default
    other = write_sweep(tmp_path / "runs", "two", cells=("GRU",), seeds=(0, 1), tables=("history",))
    assert main(["figures", str(sweep), str(other), *FAST_FIGURES]) == 2
    assert not (tmp_path / "figures").exists()


def test_a_report_of_other_sweeps_is_replaced_only_with_overwrite(tmp_path, capsys):
    first = write_sweep(tmp_path / "runs", "first", cells=("GRU",), seeds=(0, 1), tables=("history", "gradients"))
    second = write_sweep(tmp_path / "elsewhere", "second", cells=("LSTM",), seeds=(0, 1), tables=("history",))
    out = tmp_path / "out"
    assert main(["figures", str(first), "--out", str(out), *FAST_FIGURES]) == 0
    report = (out / REPORT).read_text()
    (out / "README.md").write_text("kept")  # not the report's: never deleted
    capsys.readouterr()
    assert main(["figures", str(second), "--out", str(out), *FAST_FIGURES]) == 2
    error = capsys.readouterr().err
    assert str(out / REPORT) in error and "first" in error and "--overwrite" in error
    assert (out / REPORT).read_text() == report
    # the same sweep, read from another working directory, redraws without --overwrite
    assert main(["figures", str(tmp_path / "runs" / ".." / "runs" / "first"), "--out", str(out), *FAST_FIGURES]) == 0
    assert main(["figures", str(second), "--out", str(out), "--overwrite", *FAST_FIGURES]) == 0
    fresh = tmp_path / "fresh"
    assert main(["figures", str(second), "--out", str(fresh), *FAST_FIGURES]) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted([*(path.name for path in fresh.iterdir()), "README.md"])
    assert "second" in (out / REPORT).read_text()


@pytest.mark.parametrize(("count", "shown"), [(150, 5), (6, 5), (5, 5), (2, 2)])
def test_a_refused_report_names_at_most_five_of_its_sweeps(tmp_path, count, shown):
    from gradlab.analysis.commands import ReportExistsError, check_report_target

    names = [f"runs/sweep-{index:03d}" for index in range(count)]
    (tmp_path / REPORT).write_text("# gradlab findings\n\nGenerated by `python -m gradlab figures` from "
                                   + ", ".join(f"`{name}`" for name in names) + ". Every number is computed ...\n")
    with pytest.raises(ReportExistsError) as caught:
        check_report_target(tmp_path, [tmp_path / "mine"], overwrite=False)
    message = str(caught.value)
    listed = ", ".join(names[:shown]) + (f" and {count - shown} more" if count > shown else "")
    assert f"was made from other sweeps ({listed}); pass --overwrite" in message
    assert [name for name in names if name in message] == names[:shown]


def test_figure_names_keep_an_exponents_sign():
    assert slug("sweep lr=1e+30") == "sweep_lr-1e+30"
    assert slug("sweep lr=1e+30") != slug("sweep lr=1e-30")
    assert slug("sweep readout=mean") == "sweep_readout-mean"


def test_inspect_prints_accuracies_in_percent_and_gradients_in_scientific_notation(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "runs", "tiny", cells=("GRU",), seeds=(0,), tables=("gradients",))
    summary = pd.read_parquet(sweep / schema.SWEEP_FILES["summary"])
    summary["test_accuracy"] = 0.745
    summary.to_parquet(sweep / schema.SWEEP_FILES["summary"])
    gradients_file = next(sweep.glob(f"*/{schema.RUN_FILES['gradients']}"))
    gradients = pd.read_parquet(gradients_file)
    gradients["grad_norm"] = 1.2e-11  # a vanished gradient: fixed decimals would print 0.000000
    gradients.to_parquet(gradients_file)
    assert main(["inspect", str(sweep), "--rows", "2"]) == 0
    summary_part, gradient_part = capsys.readouterr().out.split("gradients:")
    header, row = summary_part.strip().splitlines()[-2:]
    assert row.split()[header.split().index("test_accuracy")] == "74.5"  # as the sweep's own table prints it
    head = gradient_part.strip().splitlines()[1:]
    column = head[0].split().index("grad_norm")
    assert [line.split()[column] for line in head[1:]] == ["1.20e-11", "1.20e-11"]


def test_inspect_into_a_reader_that_stops_early_is_not_an_error(tmp_path):
    """``gradlab inspect SWEEP | head`` closes the pipe early: that is no error, and no message."""
    import subprocess
    import sys

    sweep = write_sweep(tmp_path / "runs", "tiny", cells=("GRU",), seeds=(0, 1), tables=("gradients",))
    reader = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-m', 'gradlab', 'inspect', sys.argv[1], "
              "'--rows', '5000'], stdout=subprocess.PIPE, stderr=subprocess.PIPE); p.stdout.readline(); "
              "p.stdout.close(); err = p.stderr.read().decode(); print(p.wait()); print(err, end='')")
    result = subprocess.run([sys.executable, "-c", reader, str(sweep)], capture_output=True, text=True, check=True)
    status, *errors = result.stdout.splitlines()
    assert status == "0" and errors == []
