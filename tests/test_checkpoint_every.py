"""How often a run writes its epoch checkpoint (``checkpoint_every``), and that resume stays exact either way."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
import torch
from train_helpers import REPO, InterruptAfterEpoch

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig, check_checkpoint_every
from gradlab.store import schema
from gradlab.sweep import run_sweep
from gradlab.training import Callback, train_ensemble, train_run

TIMING = {"time_per_epoch", "train_time_per_epoch", "wall_time"}


def config(seed: int = 0, epochs: int = 6) -> RunConfig:
    return RunConfig(
        model=ModelConfig("GRU", hidden_size=6, num_layers=1),
        data=DataConfig("distance", seq_len=12, n_train=32, n_validation=16, n_test=16),
        train=TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, seed=seed, record_every=2,
                          diagnostics_batch=4, jacobian_batch=2),
        run_id=f"GRU-s{seed}",
    )


class SlowTraining(Callback):
    """Adds ``seconds`` to the run's training time once per epoch, as if each epoch had trained that long."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.epochs: set[int] = set()

    def on_step_end(self, state) -> None:
        if state.epoch not in self.epochs:
            self.epochs.add(state.epoch)
            state.train_time += self.seconds


def epochs_saved(run_dir) -> int | None:
    """Epochs done in the run folder's checkpoint (None without one)."""
    path = run_dir / schema.RUN_FILES["checkpoint"]
    return torch.load(path, weights_only=True)["epochs_done"] if path.is_file() else None


def assert_same_run(expected, actual) -> None:
    for key, value in expected.metrics.items():
        if key not in TIMING:
            other = actual.metrics[key]
            assert value == other or (isinstance(value, float) and math.isnan(value) and math.isnan(other)), key
    for kind in ("history", "gradients", "gates", "jacobian", "predictions"):
        frames = [getattr(result, kind).drop(columns=["wall_time"], errors="ignore").reset_index(drop=True)
                  for result in (expected, actual)]
        pd.testing.assert_frame_equal(*frames, check_exact=True, obj=kind)


def test_a_checkpoint_waits_for_every_seconds_of_training_and_resume_from_it_is_exact(tmp_path):
    whole = train_run(config(), run_dir=tmp_path / "whole")
    # 10 s of training per epoch, a checkpoint every 25 s: after epoch 3 (30 s), next after epoch 6 (the last).
    with pytest.raises(KeyboardInterrupt):
        train_run(config(), run_dir=tmp_path / "cut", checkpoint_every=25,
                  callbacks=[SlowTraining(10.0), InterruptAfterEpoch(4)])
    assert epochs_saved(tmp_path / "cut") == 3
    resumed = train_run(config(), run_dir=tmp_path / "cut", checkpoint_every=25, callbacks=[SlowTraining(10.0)])
    assert not resumed.skipped and epochs_saved(tmp_path / "cut") == 6
    assert_same_run(whole, resumed)


def test_a_short_run_checkpoints_only_its_last_epoch_and_restarts_exactly_without_one(tmp_path):
    whole = train_run(config(epochs=3), run_dir=tmp_path / "whole")  # the default: 30 s, far more than a tiny run
    assert epochs_saved(tmp_path / "whole") == 3  # an ended run keeps its weights
    with pytest.raises(KeyboardInterrupt):
        train_run(config(epochs=3), run_dir=tmp_path / "cut", callbacks=[InterruptAfterEpoch(1)])
    assert epochs_saved(tmp_path / "cut") is None
    assert not (tmp_path / "cut" / "checkpoint-rows").exists()
    resumed = train_run(config(epochs=3), run_dir=tmp_path / "cut")
    assert not resumed.skipped
    assert_same_run(whole, resumed)
    every_epoch = tmp_path / "every"
    with pytest.raises(KeyboardInterrupt):
        train_run(config(epochs=3), run_dir=every_epoch, checkpoint_every=0, callbacks=[InterruptAfterEpoch(1)])
    assert epochs_saved(every_epoch) == 2


def test_ensemble_members_checkpoint_at_the_same_epochs(tmp_path):
    configs = [config(seed) for seed in (0, 1)]
    dirs = [tmp_path / c.run_id for c in configs]
    with pytest.raises(KeyboardInterrupt):
        train_ensemble(configs, run_dirs=dirs, checkpoint_every=25,
                       callbacks=[[SlowTraining(10.0)], [SlowTraining(10.0), InterruptAfterEpoch(4)]])
    assert [epochs_saved(run_dir) for run_dir in dirs] == [3, 3]
    resumed = train_ensemble(configs, run_dirs=dirs, checkpoint_every=25)
    for whole, result in zip(train_ensemble(configs), resumed):  # float32: an ensemble equals an ensemble
        assert_same_run(whole, result)


@pytest.mark.parametrize("every", [-1, math.nan, True, "5"])
def test_a_bad_checkpoint_every_is_refused_before_anything_is_written(tmp_path, every):
    with pytest.raises(ValueError, match="checkpoint_every must be a number of seconds >= 0"):
        check_checkpoint_every(every)
    with pytest.raises(ValueError, match="checkpoint_every"):
        run_sweep([config()], tmp_path / "sweep", checkpoint_every=every, figures=False, progress=False)
    with pytest.raises(ValueError, match="checkpoint_every"):
        train_run(config(), run_dir=tmp_path / "run", checkpoint_every=every)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "run").exists()


def test_the_command_line_refuses_a_negative_checkpoint_every(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "compare_cells.py"), "--dataset", "distance",
                             "--checkpoint-every", "-1", "--out", str(tmp_path), "--plan"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "--checkpoint-every must be a number of seconds >= 0, got -1" in result.stderr
    assert list(tmp_path.iterdir()) == []
