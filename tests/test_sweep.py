"""Sweeps: the runs folder, resume, divergence, parallel workers and the per-cell table."""

from __future__ import annotations

import json
import math
import multiprocessing.forkserver
import sys
from dataclasses import replace

import pandas as pd
import pytest
from train_helpers import InterruptAfterEpoch

from gradlab.analysis.summary_table import cell_table
from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.store import schema
from gradlab.sweep import expand_cells, plan_runs, run_sweep
from gradlab.sweep.folder import check_output_path, open_sweep_dir
from gradlab.training import train_run

BASE = RunConfig(
    model=ModelConfig("GRU", hidden_size=8, num_layers=1),
    data=DataConfig("distance", seq_len=20, n_train=48, n_validation=16, n_test=16),
    train=TrainConfig(epochs=2, batch_size=16, lr=1e-2, record_every=2, val_every=None,
                      diagnostics_batch=4, jacobian_batch=2),
)


def plan(modes=("RNN_TANH", "GRU"), seeds=(0, 1)):
    return plan_runs(BASE, modes=modes, seeds=seeds)


def test_plan_names_every_run_and_expands_rnn_activations():
    assert expand_cells(["RNN", "LSTM", "gru"], ["tanh", "relu"]) == ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
    runs = plan_runs(BASE, modes=["LSTM"], seeds=[0, 1], bidirectional=["none", "separate"])
    assert [run.run_id for run in runs] == ["LSTM-s0", "LSTM-s1", "LSTM-separate-s0", "LSTM-separate-s1"]
    assert [run.train.seed for run in runs] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="seed list is empty"):
        plan_runs(BASE, modes=["LSTM"], seeds=[])
    with pytest.raises(ValueError, match="unknown activation"):
        expand_cells(["RNN"], ["swish"])
    with pytest.raises(ValueError, match="unknown mode"):
        expand_cells(["TRANSFORMER"])


def test_sweep_writes_the_documented_layout(tmp_path):
    result = run_sweep(plan(seeds=(0,)), tmp_path / "sweep", figures=False, progress=False, command=["x"])
    sweep = result.sweep_dir
    assert (sweep / schema.SWEEP_FILES["sweep"]).is_file()
    summary = pd.read_parquet(sweep / schema.SWEEP_FILES["summary"])
    schema.conform(summary, "summary")
    assert sorted(summary["run_id"]) == ["GRU-s0", "RNN_TANH-s0"]
    for run_id in summary["run_id"]:
        for kind, name in schema.RUN_FILES.items():
            if kind in ("lyapunov", "parameter_gradients"):  # only with lyapunov_every, record_parameters
                continue
            assert (sweep / run_id / name).is_file(), name
    assert not list(sweep.rglob("*.tmp"))
    stored = json.loads((sweep / "sweep.json").read_text())
    assert stored["command"] == ["x"] and len(stored["runs"]) == 2


def test_existing_sweep_is_never_overwritten_silently(tmp_path):
    runs = plan(seeds=(0,))
    run_sweep(runs, tmp_path / "sweep", figures=False, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run_sweep(runs, tmp_path / "sweep", figures=False, progress=False)
    changed = [replace(run, train=replace(run.train, lr=0.5)) for run in runs]
    with pytest.raises(ValueError, match="other settings"):
        run_sweep(changed, tmp_path / "sweep", resume=True, figures=False, progress=False)
    before = (tmp_path / "sweep" / "GRU-s0" / "metrics.json").read_text()
    resumed = run_sweep(runs, tmp_path / "sweep", resume=True, figures=False, progress=False)
    assert (tmp_path / "sweep" / "GRU-s0" / "metrics.json").read_text() == before  # skipped, not retrained
    assert len(resumed.summary) == 2
    replaced = run_sweep(changed, tmp_path / "sweep", overwrite=True, figures=False, progress=False)
    assert set(replaced.summary["lr"]) == {0.5}


def test_resumed_sweep_equals_uninterrupted(tmp_path):
    runs = plan(seeds=(0,))
    whole = run_sweep(runs, tmp_path / "whole", figures=False, progress=False)
    # Interrupt the second run after its first epoch, as a killed sweep would leave it.
    cut = open_sweep_dir(tmp_path / "cut", runs, overwrite=False, command=None)
    train_run(runs[0], run_dir=cut / runs[0].run_id)
    with pytest.raises(KeyboardInterrupt):
        train_run(runs[1], run_dir=cut / runs[1].run_id, callbacks=[InterruptAfterEpoch(0)], checkpoint_every=0)
    resumed = run_sweep(runs, cut, resume=True, figures=False, progress=False)
    timing = ["time_per_epoch", "train_time_per_epoch", "wall_time"]
    pd.testing.assert_frame_equal(whole.summary.drop(columns=timing), resumed.summary.drop(columns=timing))
    for run in runs:
        for kind in ("history", "gradients"):
            a, b = (pd.read_parquet(d / run.run_id / schema.RUN_FILES[kind]) for d in (whole.sweep_dir, cut))
            pd.testing.assert_frame_equal(a.drop(columns=["wall_time"], errors="ignore"),
                                          b.drop(columns=["wall_time"], errors="ignore"))


def test_a_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    runs = plan_runs(BASE, modes=["RNN_RELU", "GRU"], seeds=[0])
    runs[0] = replace(runs[0], train=replace(runs[0].train, lr=1e6))
    result = run_sweep(runs, tmp_path / "sweep", figures=False, progress=False)
    by_id = result.summary.set_index("run_id")
    assert by_id.loc["RNN_RELU-s0", "status"] == "diverged"
    assert by_id.loc["RNN_RELU-s0", "diverged_step"] >= 1
    assert by_id.loc["GRU-s0", "status"] == "finished"
    assert cell_table(result.summary).set_index("cell").loc["RNN_RELU", "diverged"] == 1


def test_parallel_workers_give_the_same_numbers(tmp_path):
    runs = plan(seeds=(0,))
    serial = run_sweep(runs, tmp_path / "serial", figures=False, progress=False)
    parallel = run_sweep(runs, tmp_path / "parallel", workers=2, figures=False, progress=False)
    # the workers came from a fork server, stopped once they ended: the next sweep's workers see its environment
    assert getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None) is None
    columns = ["run_id", "status", "best_val_accuracy", "test_accuracy", "final_test_accuracy", "test_loss"]
    pd.testing.assert_frame_equal(serial.summary[columns].sort_values("run_id").reset_index(drop=True),
                                  parallel.summary[columns].sort_values("run_id").reset_index(drop=True))


def test_cell_table_by_hand():
    summary = pd.DataFrame({
        "cell": ["GRU", "GRU", "GRU", "LSTM"],
        "status": ["finished", "finished", "diverged", "finished"],
        "test_accuracy": [0.5, 0.7, 0.9, 0.4],
        "final_test_accuracy": [0.5, 0.6, 0.7, 0.3],
        "best_val_accuracy": [0.6, 0.6, 0.9, 0.5],
        "time_per_epoch": [1.0, 2.0, 3.0, 4.0],
        "n_params": [10, 10, 10, 20],
        "readout": ["last"] * 4,
    })
    table = cell_table(summary).set_index("cell")
    assert table.loc["GRU", "test_acc_mean"] == pytest.approx(0.7)
    assert table.loc["GRU", "test_acc_std"] == pytest.approx(0.2)
    assert (table.loc["GRU", "test_acc_min"], table.loc["GRU", "test_acc_max"]) == (0.5, 0.9)
    assert table.loc["GRU", "diverged"] == 1 and table.loc["GRU", "time_per_epoch"] == pytest.approx(2.0)
    assert table.loc["GRU", "seeds"] == 3 and table.loc["LSTM", "seeds"] == 1
    assert math.isnan(table.loc["LSTM", "test_acc_std"])
    assert "readout" not in table.columns  # constant across runs: not a grouping key


def test_output_path_that_is_a_file_is_rejected(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_output_path(tmp_path / "file" / "sweep")
    with pytest.raises(ValueError, match="is a file"):
        run_sweep(plan(seeds=(0,)), tmp_path / "file", figures=False, progress=False)


def _longest_name(out) -> int:
    """The longest sweep name whose lock files fit ``out``'s filesystem on this host."""
    import os

    from gradlab.store.locking import longest_lock_file_name

    return os.pathconf(out, "PC_NAME_MAX") - len(longest_lock_file_name(""))


def test_a_name_too_long_for_the_lock_files_is_refused_before_anything_is_written(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    runs = plan(modes=("GRU",), seeds=(0,))
    longest = _longest_name(tmp_path)
    name = "n" * (longest + 1)  # the folder itself would fit; the lock's claim file would not
    assert len(name) < 250
    with pytest.raises(ValueError, match=f"too long.*at most {longest} characters"):
        run_sweep(runs, tmp_path / name, figures=False, progress=False)
    assert list(tmp_path.iterdir()) == []
    script = Path(__file__).resolve().parents[1] / "experiments" / "compare_cells.py"
    plan_only = subprocess.run([sys.executable, str(script), "--dataset", "distance", "--cells", "GRU", "--seeds", "0",
                                "--out", str(tmp_path), "--name", name, "--plan"], capture_output=True, text=True,
                               timeout=120)
    assert plan_only.returncode == 2 and f"at most {longest} characters" in plan_only.stderr, plan_only.stderr
    assert list(tmp_path.iterdir()) == []
    sweep = tmp_path / ("n" * longest)  # the longest name that works trains, releases its lock, and resumes
    run_sweep(runs, sweep, figures=False, progress=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == [sweep.name]
    assert len(run_sweep(runs, sweep, resume=True, figures=False, progress=False).summary) == 1


def test_a_lock_whose_claim_cannot_be_made_says_how_to_clear_it(tmp_path):
    import socket
    import subprocess
    import sys

    from gradlab.store.locking import SweepLock, SweepLockedError, lock_path_for

    # Its lock file fits, its claim cannot (41 characters longer): as a sweep made before names were checked left it.
    sweep = tmp_path / ("n" * (_longest_name(tmp_path) + 20))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = lock_path_for(sweep)
    lock.write_text(json.dumps({"token": "d" * 32, "host": socket.gethostname(), "pid": dead.pid,
                                "process_start": None, "started": 0.0, "heartbeat": 0.0}))
    with pytest.raises(SweepLockedError, match=f"cannot make the claim file .*delete {lock} by hand"):
        SweepLock(sweep).acquire()


def test_a_killed_overwrite_never_strands_the_sweep(tmp_path, monkeypatch):
    import shutil

    from gradlab.sweep import folder

    runs = plan(modes=("GRU",), seeds=(0,))
    out, copy = tmp_path / "out", tmp_path / "copy"
    run_sweep(runs, out / "sweep", figures=False, progress=False)

    def killed_rmtree(path, *arguments, **options):  # deletes sweep.json first, as rmtree may, then is killed
        (path / "sweep.json").unlink()
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(folder.shutil, "rmtree", killed_rmtree)
        with pytest.raises(KeyboardInterrupt):
            run_sweep(runs, out / "sweep", overwrite=True, figures=False, progress=False)
    assert not (out / "sweep").exists()  # renamed aside whole: never a sweep folder without its sweep.json
    assert len(list(out.glob(".sweep.deleting-*"))) == 1
    shutil.copytree(out, copy)
    replaced = run_sweep(runs, out / "sweep", overwrite=True, figures=False, progress=False)
    assert len(replaced.summary) == 1 and not list(out.glob(".sweep.deleting-*"))  # the leftover is gone
    resumed = run_sweep(runs, copy / "sweep", resume=True, figures=False, progress=False)
    assert len(resumed.summary) == 1 and not list(copy.glob(".sweep.deleting-*"))


def test_a_half_deleted_sweep_is_recognised_named_and_replaceable(tmp_path):
    runs = plan(modes=("GRU",), seeds=(0,))
    sweep = tmp_path / "sweep"
    run_sweep(runs, sweep, figures=False, progress=False)
    (sweep / "sweep.json").unlink()  # as an older gradlab's killed --overwrite left it
    with pytest.raises(ValueError, match="gradlab sweep folder that lost its sweep.json .*run folders GRU-s0.*"
                                         "--overwrite"):
        run_sweep(runs, sweep, resume=True, figures=False, progress=False)
    assert len(run_sweep(runs, sweep, overwrite=True, figures=False, progress=False).summary) == 1
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a gradlab sweep folder"):  # anything else is still never deleted
        run_sweep(runs, tmp_path / "notes", overwrite=True, figures=False, progress=False)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_the_figures_modules_load_quietly_while_workers_train(capfd):
    import threading

    from gradlab.sweep.runner import _import_quietly_meanwhile

    sys.modules.pop("email.mime.audio", None)
    _import_quietly_meanwhile("email.mime.audio")
    _import_quietly_meanwhile("gradlab.no_such_module")  # drawing imports it again and reports the failure
    for thread in threading.enumerate():
        if thread.name.startswith("import "):
            thread.join(timeout=30)
    assert "email.mime.audio" in sys.modules and "gradlab.no_such_module" not in sys.modules
    assert capfd.readouterr() == ("", "")
