"""Loggers and the callback hooks they use: on_record, checkpoint keys per instance, TensorBoard event files."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from train_helpers import InterruptAfterEpoch

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.sweep import plan_runs, run_sweep
from gradlab.training import Callback, TensorBoardLogger, train_ensemble, train_run
from gradlab.training.callbacks import callback_keys
from gradlab.training.loggers import TENSORBOARD_INSTALL, first_to_last, require_tensorboard

pytest.importorskip("tensorboard", reason=f"the TensorBoard tests need {TENSORBOARD_INSTALL}")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def tiny(mode: str = "LSTM", bidirectional: str = "separate", **train) -> RunConfig:
    """Two layers, by default bidirectional (every layer and direction is logged), no diagnostics: a second or two."""
    options = {"epochs": 2, "batch_size": 16, "lr": 1e-2, "record_every": 2, "val_every": 2, "diagnostics": False,
               **train}
    return RunConfig(
        model=ModelConfig(mode, hidden_size=6, num_layers=2, bidirectional=bidirectional),
        data=DataConfig("distance", seq_len=10, n_train=48, n_validation=16, n_test=16),
        train=TrainConfig(**options),
        run_id=f"{mode}-s0",
    )


def events(log_dir) -> EventAccumulator:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def scalar_series(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def history_series(history: pd.DataFrame, split: str, metric: str) -> list[tuple[int, float]]:
    rows = history[(history["split"] == split) & (history["metric"] == metric)]
    # TensorBoard stores scalars as float32.
    return [(int(step), float(np.float32(value))) for step, value in zip(rows["step"], rows["value"])]


def independent_ratios(gradients: pd.DataFrame) -> dict[tuple[int, str], list[tuple[int, float]]]:
    """|dL/dh| at the first state over the last, per layer and direction, from grad_norm (not ratio_to_last)."""
    hidden = gradients[gradients["state"] == "h"]
    last_time = int(hidden["timestep"].max())
    ratios: dict[tuple[int, str], list[tuple[int, float]]] = {}
    for (step, layer, direction), group in hidden.groupby(["step", "layer", "direction"], sort=True):
        norms = dict(zip(group["timestep"], group["grad_norm"]))
        first, last = (0, last_time) if direction == "forward" else (last_time, 0)
        ratios.setdefault((layer, direction), []).append((int(step), float(np.float32(norms[first] / norms[last]))))
    return ratios


class Rows(Callback):
    """Keeps every recorded step's rows that on_record hands over."""

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []

    def on_record(self, state, rows) -> None:
        assert rows["step"].nunique() == 1  # one recorded step at a time
        self.frames.append(rows)


def test_tensorboard_scalars_and_images_equal_the_runs_tables(tmp_path):
    result = train_run(tiny(), callbacks=[TensorBoardLogger(tmp_path / "tb")])
    logged = events(tmp_path / "tb")
    history = result.history
    for metric in ("loss", "accuracy", "grad_norm", "lr"):
        assert scalar_series(logged, f"train/{metric}") == history_series(history, "train", metric), metric
    for metric in ("loss", "accuracy"):
        assert scalar_series(logged, f"validation/{metric}") == history_series(history, "validation", metric)
    expected = independent_ratios(result.gradients)
    assert set(expected) == {(0, "forward"), (0, "backward"), (1, "forward"), (1, "backward")}
    for (layer, direction), series in expected.items():
        got = scalar_series(logged, f"gradients/first_to_last/layer{layer}_{direction}")
        assert [step for step, _ in got] == [step for step, _ in series]
        np.testing.assert_allclose([value for _, value in got], [value for _, value in series], rtol=1e-6)
    recorded = sorted(result.gradients["step"].unique())
    assert len(recorded) >= 3  # steps 0, 2, ... and the final model's
    assert sorted(tag for tag in logged.Tags()["images"]) == ["gradients/profile/layer0", "gradients/profile/layer1"]
    for tag in logged.Tags()["images"]:
        images = logged.Images(tag)
        assert [image.step for image in images] == recorded
        assert all(image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and image.width > 100 for image in images)


def test_on_record_hands_each_recorded_steps_rows_once():
    rows = Rows()
    result = train_run(tiny("GRU", epochs=1), callbacks=[rows])
    assert len(rows.frames) == result.gradients["step"].nunique()
    pd.testing.assert_frame_equal(pd.concat(rows.frames, ignore_index=True), result.gradients)


def test_on_record_and_the_logger_work_in_an_ensemble(tmp_path):
    configs = [tiny("GRU", "none", seed=seed) for seed in (0, 1)]  # ensembles are unidirectional
    configs = [RunConfig(model=c.model, data=c.data, train=c.train, run_id=f"GRU-s{c.train.seed}") for c in configs]
    rows = [Rows(), Rows()]
    results = train_ensemble(configs, callbacks=[[rows[0], TensorBoardLogger(tmp_path / "a")],
                                                 [rows[1], TensorBoardLogger(tmp_path / "b")]])
    for member, folder in enumerate(("a", "b")):
        pd.testing.assert_frame_equal(pd.concat(rows[member].frames, ignore_index=True), results[member].gradients)
        logged = events(tmp_path / folder)
        assert scalar_series(logged, "train/loss") == history_series(results[member].history, "train", "loss")
        series = independent_ratios(results[member].gradients)[(1, "forward")]
        got = scalar_series(logged, "gradients/first_to_last/layer1_forward")
        np.testing.assert_allclose([v for _, v in got], [v for _, v in series], rtol=1e-6)
    assert not results[0].history["value"].equals(results[1].history["value"])


def test_a_resumed_run_logs_each_step_once(tmp_path):
    config = tiny("RNN_TANH", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, run_dir=tmp_path / "run", callbacks=[TensorBoardLogger(tmp_path / "tb"),
                                                                 InterruptAfterEpoch(1)], checkpoint_every=0)
    result = train_run(config, run_dir=tmp_path / "run", callbacks=[TensorBoardLogger(tmp_path / "tb")])
    logged = events(tmp_path / "tb")
    assert scalar_series(logged, "train/loss") == history_series(result.history, "train", "loss")
    assert scalar_series(logged, "validation/loss") == history_series(result.history, "validation", "loss")


class Counter(Callback):
    """A stateful callback: adds ``amount`` per training step and keeps the sum in the checkpoint."""

    def __init__(self, amount: int) -> None:
        self.amount, self.total = amount, 0

    def on_train_batch(self, state, values) -> None:
        self.total += self.amount

    def state_dict(self) -> dict:
        return {"total": self.total}

    def load_state_dict(self, saved, state) -> None:
        self.total = saved["total"]


def test_two_instances_of_one_callback_resume_their_own_state(tmp_path):
    config = tiny("GRU", epochs=2, record_every=None)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, run_dir=tmp_path / "run", callbacks=[Counter(1), Counter(100), InterruptAfterEpoch(0)],
                  checkpoint_every=0)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    steps = checkpoint["step"]
    assert checkpoint["callbacks"]["Counter"] == {"total": steps}
    assert checkpoint["callbacks"]["Counter#1"] == {"total": 100 * steps}
    assert "BestCheckpoint" in checkpoint["callbacks"]  # one instance: the key it always had
    counters = [Counter(1), Counter(100)]
    result = train_run(config, run_dir=tmp_path / "run", callbacks=counters)
    assert [counter.total for counter in counters] == [result.metrics["steps"], 100 * result.metrics["steps"]]
    assert result.metrics["steps"] == 2 * steps


def test_checkpoint_keys_count_instances_and_honour_state_key():
    named = Counter(1)
    named.state_key = "mine"
    assert callback_keys([Counter(1), named, Counter(2), Counter(3)]) == ["Counter", "mine", "Counter#1", "Counter#2"]
    clash = Counter(1)
    clash.state_key = "Counter"
    with pytest.raises(ValueError, match="distinct state_key"):
        callback_keys([Counter(1), clash])


def test_first_to_last_by_hand():
    rows = pd.DataFrame({
        "step": 4, "layer": [0, 0, 0, 0], "direction": ["forward", "forward", "backward", "backward"],
        "state": "h", "timestep": [0, 1, 0, 1], "grad_norm": [0.1, 1.0, 2.0, 0.5],
        "ratio_to_last": [0.1, 1.0, 1.0, 0.25],
    })
    assert first_to_last(rows) == {(0, "backward"): 0.25, (0, "forward"): 0.1}


def test_missing_tensorboard_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'gradlab\[tensorboard\]'"):
        require_tensorboard()
    with pytest.raises(ModuleNotFoundError, match=r"gradlab\[tensorboard\]"):
        TensorBoardLogger(tmp_path / "tb")
    runs = plan_runs(tiny(epochs=1), modes=("GRU",), seeds=(0,))
    with pytest.raises(ValueError, match=r"gradlab\[tensorboard\]"):
        run_sweep(runs, tmp_path / "sweep", figures=False, progress=False, tensorboard=tmp_path / "tb")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow  # two spawned worker processes import torch
def test_a_sweep_logs_every_run_under_its_name_with_worker_processes(tmp_path):
    base = tiny(epochs=1, max_steps_per_epoch=2)
    runs = plan_runs(base, modes=("GRU", "RNN_TANH"), seeds=(0,))
    result = run_sweep(runs, tmp_path / "sweep", figures=False, progress=False, workers=2, ensemble="off",
                       tensorboard=tmp_path / "tb")
    for run_id in result.summary["run_id"]:
        history = pd.read_parquet(tmp_path / "sweep" / run_id / "history.parquet")
        logged = events(tmp_path / "tb" / "sweep" / run_id)
        assert scalar_series(logged, "train/loss") == history_series(history, "train", "loss")
