"""The experiment scripts: --dry-run of every cell on FSDD and synthetic tasks, bad input, presets."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from data_helpers import fsdd_recordings
from train_helpers import load_script

ALL_CELLS = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]


compare_cells = load_script("compare_cells")
sequence_length = load_script("sequence_length")



@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("features"))


def summary_of(out: Path) -> pd.DataFrame:
    (sweep,) = [path for path in out.iterdir() if path.is_dir()]
    return pd.read_parquet(sweep / "summary.parquet")


def test_compare_cells_dry_run_on_fsdd_every_cell(tmp_path, cache_dir, capsys):
    out = tmp_path / "runs"
    assert compare_cells.main(["--dry-run", "--dataset", "fsdd", "--data-dir", str(fsdd_recordings()),
                               "--cache-dir", cache_dir, "--out", str(out), "--no-progress"]) == 0
    summary = summary_of(out)
    assert sorted(summary["cell"]) == sorted(ALL_CELLS)
    assert set(summary["status"]) == {"finished"} and set(summary["dataset"]) == {"fsdd"}
    printed = capsys.readouterr().out
    assert "test_acc_mean" in printed and "dry run" in printed


@pytest.mark.parametrize("dataset", ["distance", "adding", "copy-memory"])
def test_compare_cells_dry_run_on_synthetic_tasks_every_cell(tmp_path, dataset):
    out = tmp_path / "runs"
    assert compare_cells.main(["--dry-run", "--dataset", dataset, "--out", str(out), "--no-progress"]) == 0
    summary = summary_of(out)
    assert sorted(summary["cell"]) == sorted(ALL_CELLS)
    assert set(summary["status"]) == {"finished"}


def test_sequence_length_dry_run_on_fsdd_changes_the_hop(tmp_path, cache_dir):
    out = tmp_path / "runs"
    assert sequence_length.main(["--dry-run", "--dataset", "fsdd", "--data-dir", str(fsdd_recordings()),
                                 "--cache-dir", cache_dir, "--out", str(out), "--no-progress",
                                 "--hops", "1024,512"]) == 0
    summary = summary_of(out)
    assert sorted(summary["cell"].unique()) == sorted(ALL_CELLS)
    assert sorted(summary["seq_len"].unique()) == [16, 32]


def test_sequence_length_dry_run_on_a_synthetic_task(tmp_path):
    out = tmp_path / "runs"
    assert sequence_length.main(["--dry-run", "--out", str(out), "--no-progress"]) == 0
    summary = summary_of(out)
    assert sorted(summary["cell"].unique()) == sorted(ALL_CELLS)
    assert sorted(summary["seq_len"].unique()) == [25, 30]


def test_a_small_real_sweep_draws_figures_and_resumes(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["--dataset", "distance", "--seq-len", "12", "--n-train", "64", "--cells", "GRU", "--seeds", "0,1",
            "--epochs", "1", "--hidden-size", "8", "--num-layers", "1", "--batch-size", "32",
            "--out", str(out), "--name", "small", "--no-progress"]
    assert compare_cells.main(argv) == 0
    figures = out / "small" / "figures"
    assert (figures / "findings.md").is_file() and list(figures.glob("*.png"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main(argv)
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--resume" in error
    assert "usage:" not in error and len(error.splitlines()) == 1  # no usage dump
    assert compare_cells.main(argv + ["--resume", "--no-figures"]) == 0
    assert "2 of 2 runs already ended" in capsys.readouterr().err


BAD_INPUTS = [
    (["--cells", "LSTM,TRANSFORMER"], "unknown mode"),
    (["--activations", "swish"], "unknown activation"),
    (["--dataset", "mnist"], "unknown dataset"),
    (["--dataset", "fsdd", "--words", "one,eleven"], "eleven"),
    (["--words", "one,banana"], "banana"),
    (["--dataset", "fsdd", "--data-dir", "/nonexistent/fsdd"], "does not exist"),
    (["--seeds", ""], "seed list is empty"),
    (["--lr", "0"], "lr must be > 0"),
    (["--lr", "-0.01"], "lr must be > 0"),
    (["--epochs", "0"], "epochs must be a positive integer"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUTS)
def test_bad_input_is_a_clear_error_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main(argv + ["--out", str(out), "--no-progress", "--device", "cpu"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not out.exists()


def test_output_path_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main(["--dataset", "distance", "--out", str(tmp_path / "runs"), "--no-progress"])
    assert exit_info.value.code == 2 and "is a file" in capsys.readouterr().err


def test_missing_speech_commands_names_the_offline_choices(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        compare_cells.main(["--data-dir", str(empty), "--out", str(tmp_path / "runs"), "--no-progress"])
    error = capsys.readouterr().err
    assert "--dataset fsdd --data-dir" in error and "distance" in error
    assert not (tmp_path / "runs").exists()
    # The advice speaks in flags (the Python form says root= and download=True), with no usage text.
    assert "give --data-dir <folder holding validation_list.txt" in error and "or give --download" in error
    assert "root=" not in error and "download=True" not in error and "DataConfig(" not in error
    assert "usage:" not in error and len(error.strip().splitlines()) == 2


def test_missing_data_advice_names_arguments_in_python_and_flags_on_the_command_line(tmp_path, capsys):
    from gradlab.data.fsdd import find_fsdd_root
    from gradlab.data.speech_commands import prepare_speech_commands

    with pytest.raises(FileNotFoundError, match=r"pass root=<folder holding .*, or pass download=True$"):
        prepare_speech_commands(root=tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match=r"found via the root argument; .* pass root=<folder with the WAVs"):
        find_fsdd_root(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main(["--dataset", "fsdd", "--data-dir", str(tmp_path), "--out", str(tmp_path / "runs")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage:" not in error
    assert "found via --data-dir; " in error
    assert "give --data-dir <folder with the WAVs or a recordings/ folder>" in error
    assert "root=" not in error and "root argument" not in error and "({digit}_{speaker}_{take}.wav)" in error


def _listing(folder: Path) -> dict[str, float]:
    """Every path under ``folder`` (itself included) with its modification time."""
    return {str(path): path.stat().st_mtime_ns for path in [folder, *folder.rglob("*")]}


def test_plan_previews_a_resume_of_an_existing_sweep_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["--dataset", "distance", "--seq-len", "8", "--n-train", "32", "--cells", "GRU", "--epochs", "1",
            "--hidden-size", "4", "--num-layers", "1", "--batch-size", "32", "--out", str(out), "--name", "small",
            "--no-progress", "--no-figures"]
    assert compare_cells.main(argv + ["--seeds", "0,1"]) == 0
    (out / "small" / "GRU-s2").mkdir()  # an interrupted run: its checkpoint is all it wrote
    (out / "small" / "GRU-s2" / "checkpoint.pt").write_bytes(b"")
    capsys.readouterr()
    before = _listing(tmp_path)
    for extra in ([], ["--resume"]):
        assert compare_cells.main(argv + ["--seeds", "0,1,2,3", "--plan", *extra]) == 0
        printed = capsys.readouterr().out
        assert "2 of 4 runs ended; --resume would run 2" in printed
        assert ("give --resume to continue it" in printed) == (not extra)
        for run_id, label in (("GRU-s0", "ended"), ("GRU-s1", "ended"), ("GRU-s2", "resumes from its checkpoint"),
                              ("GRU-s3", "would train")):
            assert f"  {run_id}: {label}\n" in printed
    assert _listing(tmp_path) == before
    # What running would refuse, the plan refuses too: other settings than the ended runs'.
    with pytest.raises(SystemExit):
        compare_cells.main(argv + ["--seeds", "0", "--lr", "0.1", "--plan"])
    assert "made with other settings" in capsys.readouterr().err and _listing(tmp_path) == before


def test_plan_on_recordings_builds_no_feature_cache(tmp_path, capsys):
    cache = tmp_path / "cache"
    assert compare_cells.main(["--dataset", "fsdd", "--data-dir", str(fsdd_recordings()), "--cache-dir", str(cache),
                               "--cells", "GRU", "--seeds", "0", "--match-params", "2000", "--out",
                               str(tmp_path / "runs"), "--plan"]) == 0
    printed = capsys.readouterr().out
    assert f"data: fsdd: recordings in {fsdd_recordings()}" in printed and "nothing written" in printed
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_gradlab_sweep_runs_from_the_installed_package(tmp_path):
    """``python -m gradlab sweep`` needs no experiments/ folder: run it from elsewhere, end to end."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "gradlab", "sweep", "--dry-run", "--dataset", "distance", "--cells", "GRU",
               "--out", "runs", "--no-progress"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sweep = tmp_path / "runs" / "compare_cells-distance-dry-run"
    assert "test_acc_mean" in result.stdout and "dry run" in result.stdout
    assert pd.read_parquet(sweep / "summary.parquet")["status"].tolist() == ["finished"]
    assert json.loads((sweep / "sweep.json").read_text())["command"][1:3] == ["sweep", "--dry-run"]
    lengths = subprocess.run([sys.executable, "-m", "gradlab", "sweep-length", "--dry-run", "--cells", "GRU",
                              "--out", "runs", "--no-progress", "--no-figures"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert lengths.returncode == 0, lengths.stderr
    summary = pd.read_parquet(tmp_path / "runs" / "sequence_length-distance-dry-run" / "summary.parquet")
    assert sorted(summary["seq_len"]) == [25, 30]


def _base(argv):
    from gradlab.cli import base_config, option_values

    values, grid = option_values(compare_cells.build_parser().parse_args(argv))
    return base_config(values, grid, "LSTM")


def test_coursework_preset_sets_its_settings_and_flags_still_win():
    config = _base(["--preset", "coursework"])
    assert (config.model.hidden_size, config.model.num_layers) == (32, 2)
    assert (config.train.batch_size, config.train.lr, config.train.epochs) == (100, 0.01, 5)
    assert config.data.normalise is False and config.data.amplitude_scale == 32768.0
    assert _base(["--preset", "coursework", "--epochs", "30"]).train.epochs == 30


def test_every_flag_has_help():
    for module in (compare_cells, sequence_length):
        for action in module.build_parser()._actions:
            assert action.help, action.dest


def test_no_network_is_one_message_in_flags(tmp_path, monkeypatch, capsys):
    import gradlab.data.speech_commands as speech_commands
    from gradlab.data import DownloadError

    def offline(url, *args, **kwargs):
        raise DownloadError(f"downloading {url} failed: [Errno -3] Temporary failure in name resolution {{x}}")

    monkeypatch.setenv("GRADLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(speech_commands, "download_file", offline)
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main(["--out", str(tmp_path / "runs"), "--no-progress", "--device", "cpu"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "usage:" not in error and len(error.strip().splitlines()) == 2
    assert "name resolution {x}" in error and "retry when online" in error  # the cause, braces and all
    assert "give --data-dir <folder holding validation_list.txt" in error and "root=" not in error
    assert not (tmp_path / "runs").exists()
