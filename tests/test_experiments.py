"""The experiment scripts: --dry-run of every cell on FSDD and synthetic tasks, bad input, presets."""

from __future__ import annotations

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
    assert compare_cells.main(["--dry-run", "--dataset", "fsdd", "--data-dir", str(fsdd_recordings()), "--cache-dir", cache_dir,
                               "--out", str(out), "--no-progress"]) == 0
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
    assert sequence_length.main(["--dry-run", "--dataset", "fsdd", "--data-dir", str(fsdd_recordings()), "--cache-dir", cache_dir,
                                 "--out", str(out), "--no-progress", "--hops", "1024,512"]) == 0
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
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main(argv)
    assert exit_info.value.code == 2 and "--resume" in capsys.readouterr().err
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
