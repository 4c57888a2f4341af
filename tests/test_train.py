"""The training function: honest evaluation, determinism, resume, divergence, run files."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from train_helpers import InterruptAfterEpoch

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.data import DataSplits, SplitTensors
from gradlab.data.from_config import load_data
from gradlab.nn.models import RNNModel
from gradlab.store import schema
from gradlab.store.io import PROVENANCE_KEYS
from gradlab.training import build_model, evaluate, train_run


def tiny(mode: str = "GRU", dataset: str = "distance", **train) -> RunConfig:
    readout = "sequence" if dataset == "copy-memory" else "last"
    options = {"epochs": 3, "batch_size": 16, "lr": 1e-2, "record_every": 2, "val_every": 3,
               "diagnostics_batch": 4, "jacobian_batch": 2, **train}
    return RunConfig(
        model=ModelConfig(mode, hidden_size=8, num_layers=2, readout=readout),
        data=DataConfig(dataset, seq_len=24, n_train=48, n_validation=24, n_test=24),
        train=TrainConfig(**options),
        run_id=f"{mode}-s0",
    )


def without_time(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in ("wall_time",) if c in frame.columns]).reset_index(drop=True)


TIMING = ("time_per_epoch", "train_time_per_epoch", "wall_time")


def same_metrics(a: dict, b: dict) -> None:
    for key in a:
        if key in TIMING:
            continue
        x, y = a[key], b[key]
        assert (x == y) or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), key


def scores_from_checkpoint(config: RunConfig, run_dir) -> dict[str, float]:
    """Test loss and accuracy of the selected and the final weights, computed here on the whole test split at once.

    Independent of gradlab's evaluation loop: the weights come from the run's checkpoint, the sums from torch.
    """
    data = load_data(config.data)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    model = build_model(config, data)
    scores = {}
    for prefix, weights in (("", checkpoint["callbacks"]["BestCheckpoint"]["state"]), ("final_", checkpoint["model"])):
        model.load_state_dict(weights)
        model.eval()
        with torch.no_grad():
            logits = model(data.test.x)
        y = data.test.y
        if config.data.dataset == "adding":
            scores[f"{prefix}test_loss"] = F.mse_loss(logits[:, 0], y).item()
            continue
        if logits.dim() == 3:  # copy memory: every step's loss, accuracy over the symbols only (class 0 is blank)
            scores[f"{prefix}test_loss"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
            symbols = y != 0
            scores[f"{prefix}test_accuracy"] = ((logits.argmax(-1) == y) & symbols).sum().item() / symbols.sum().item()
        else:
            scores[f"{prefix}test_loss"] = F.cross_entropy(logits, y).item()
            scores[f"{prefix}test_accuracy"] = (logits.argmax(-1) == y).double().mean().item()
    return scores


def assert_scores_match(result, config: RunConfig, run_dir) -> None:
    expected = scores_from_checkpoint(config, run_dir)
    for key, value in expected.items():
        tolerance = 1e-12 if "accuracy" in key else 1e-6  # losses: batched vs whole-split float32 sums
        assert result.metrics[key] == pytest.approx(value, rel=tolerance, abs=0), key


def test_same_seed_gives_bitwise_same_numbers():
    config = tiny("LSTM")
    first, second = train_run(config), train_run(config)
    pd.testing.assert_frame_equal(without_time(first.history), without_time(second.history))
    pd.testing.assert_frame_equal(first.gradients, second.gradients)
    pd.testing.assert_frame_equal(first.jacobian, second.jacobian)
    same_metrics(first.metrics, second.metrics)
    other = train_run(replace(config, train=replace(config.train, seed=1)))
    assert not other.history["value"].equals(first.history["value"])


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    config = tiny("RNN_TANH")
    whole = train_run(config, run_dir=tmp_path / "whole")

    with pytest.raises(KeyboardInterrupt):
        train_run(config, run_dir=tmp_path / "cut", callbacks=[InterruptAfterEpoch(0)], checkpoint_every=0)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    assert not (tmp_path / "cut" / "metrics.json").exists()
    resumed = train_run(config, run_dir=tmp_path / "cut")
    assert not resumed.skipped
    same_metrics(whole.metrics, resumed.metrics)
    for kind in ("history", "gradients", "gates", "jacobian"):
        on_disk = [pd.read_parquet(tmp_path / name / schema.RUN_FILES[kind]) for name in ("whole", "cut")]
        pd.testing.assert_frame_equal(without_time(on_disk[0]), without_time(on_disk[1]))
    # An ended run is read back, not trained again.
    again = train_run(config, run_dir=tmp_path / "cut")
    assert again.skipped and again.metrics["test_accuracy"] == whole.metrics["test_accuracy"]


def test_checkpoint_holds_state_dicts_config_and_rng(tmp_path):
    config = tiny("GRU", epochs=1)
    train_run(config, run_dir=tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert {"model", "optimiser", "config", "rng", "callbacks", "step", "epochs_done"} <= set(checkpoint)
    assert set(checkpoint["rng"]["generators"]) == {"init", "shuffle", "diagnostics"}
    assert RunConfig.from_dict(checkpoint["config"]) == config
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert RunConfig.from_dict({k: v for k, v in stored.items() if k not in PROVENANCE_KEYS}) == config
    assert stored["layout"] == 2 and stored["gradlab_version"]


def test_selection_uses_validation_and_test_accuracy_is_the_selected_checkpoints(tmp_path):
    result = train_run(tiny("GRU", epochs=3), run_dir=tmp_path / "run")
    history = result.history
    validation = history[(history["split"] == "validation") & (history["metric"] == "accuracy") & (history["step"] > 0)]
    assert result.metrics["best_val_accuracy"] == validation["value"].max()
    best = validation[validation["value"] == validation["value"].max()].iloc[0]
    assert result.metrics["best_epoch"] == best["epoch"]
    # validation rows at the fixed interval (every 3 steps) and at every epoch end (3 steps an epoch)
    assert sorted(validation["step"].unique()) == [3, 6, 9]
    # test scores are the selected (and the final) weights' on the whole test split, as fractions
    assert_scores_match(result, tiny("GRU", epochs=3), tmp_path / "run")
    assert result.metrics["test_accuracy"] * 24 == pytest.approx(round(result.metrics["test_accuracy"] * 24))
    summary = schema.conform(pd.DataFrame([result.metrics]), "summary")
    assert summary.loc[0, "status"] == "finished"


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(0)
    model = RNNModel("LSTM", 3, 5, 1, True, 3)
    split = SplitTensors(torch.randn(23, 7, 3), torch.randint(0, 3, (23,)))
    loss, accuracy = evaluate(model, split, "classification", batch_size=5)
    with torch.no_grad():
        logits = model(split.x)
    assert loss == pytest.approx(F.cross_entropy(logits, split.y).item(), rel=1e-6)
    assert accuracy == pytest.approx((logits.argmax(1) == split.y).double().mean().item())


def test_gradients_recorded_at_init_every_k_and_at_the_end():
    result = train_run(tiny("LSTM", epochs=2, record_every=4))
    steps = sorted(result.gradients["step"].unique())
    assert steps == [0, 4, 6]  # 3 steps an epoch: init, step 4, and the final model (6)
    assert set(result.gradients["state"]) == {"h", "c"}
    assert sorted(result.gates["step"].unique()) == [0, 3, 6]
    assert sorted(result.jacobian["step"].unique()) == [0, 6]
    train_rows = result.history[result.history["split"] == "train"]
    assert set(train_rows["metric"]) == {"loss", "accuracy", "grad_norm", "lr"}
    assert sorted(train_rows["step"].unique()) == list(range(1, 7))


def test_non_finite_loss_marks_the_run_diverged_and_keeps_history(tmp_path):
    config = tiny("RNN_RELU", epochs=2)
    data = load_data(config.data)
    x = data.train.x.clone()
    x[:] = float("nan")  # every batch is poisoned: the first update's loss is NaN
    poisoned = replace(data, train=SplitTensors(x, data.train.y))
    result = train_run(config, data=poisoned, run_dir=tmp_path / "run")
    assert result.status == "diverged" and result.metrics["diverged_step"] == 1
    assert math.isnan(result.metrics["test_accuracy"])  # no validated checkpoint before it
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stored["status"] == "diverged"
    assert len(pd.read_parquet(tmp_path / "run" / "history.parquet")) > 0


def test_huge_learning_rate_diverges():
    result = train_run(tiny("RNN_RELU", lr=1e6, epochs=3, diagnostics=False))
    assert result.status == "diverged"
    assert result.metrics["diverged_step"] >= 1


def test_copy_memory_trains_with_a_per_step_readout(tmp_path):
    config = tiny("GRU", "copy-memory", epochs=1, diagnostics=False)
    result = train_run(config, run_dir=tmp_path / "run")
    assert result.metrics["task"] == "sequence_classification"
    assert_scores_match(result, config, tmp_path / "run")
    with pytest.raises(ValueError, match="readout 'last' does not fit"):
        config = tiny("GRU", "copy-memory")
        train_run(replace(config, model=replace(config.model, readout="last")))


def test_sequence_readout_gives_per_step_logits():
    model = RNNModel("GRU", 4, 6, 2, True, 5, readout="sequence", bidirectional="interleaved")
    x = torch.randn(3, 9, 4)
    logits = model(x)
    assert logits.shape == (3, 9, 5)
    outputs, _ = model.rnn(x)
    torch.testing.assert_close(logits, model.fc(outputs))


def test_adding_problem_reports_loss_and_no_accuracy(tmp_path):
    config = tiny("LSTM", "adding", epochs=1, diagnostics=False)
    result = train_run(config, run_dir=tmp_path / "run")
    assert math.isnan(result.metrics["test_accuracy"])
    assert_scores_match(result, config, tmp_path / "run")  # the mean squared error of the selected weights
    assert "accuracy" not in set(result.history["metric"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainConfig(lr=0), "lr must be > 0"),
        (lambda: TrainConfig(lr=-1e-3), "lr must be > 0"),
        (lambda: TrainConfig(epochs=0), "epochs must be a positive integer"),
        (lambda: ModelConfig("RNN_SWISH"), "unknown mode"),
        (lambda: DataConfig("mnist"), "unknown dataset"),
        (lambda: TrainConfig(device="tpu"), "unknown device"),
        (lambda: RunConfig(run_id="a/b"), "plain folder name"),
    ],
)
def test_bad_configs_are_rejected_with_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_build_model_uses_the_init_generator_only():
    config = tiny("GRU")
    data = DataSplits(SplitTensors(torch.zeros(2, 5, 3), torch.zeros(2, dtype=torch.long)),
                      SplitTensors(torch.zeros(2, 5, 3), torch.zeros(2, dtype=torch.long)),
                      SplitTensors(torch.zeros(2, 5, 3), torch.zeros(2, dtype=torch.long)),
                      task="classification", num_outputs=3, input_size=3, seq_len=5)
    a = build_model(config, data, torch.Generator().manual_seed(1))
    torch.manual_seed(123)
    b = build_model(config, data, torch.Generator().manual_seed(1))
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name


def test_float64_keeps_gradients_that_float32_underflows():
    # A tanh RNN over 400 steps at default init: the gradient reaching the first
    # step is far below float32's range (about 1e-45) but not float64's.
    def first_to_last(dtype: str) -> float:
        config = tiny("RNN_TANH", epochs=1, max_steps_per_epoch=1, record_every=1, diagnostics=False, dtype=dtype)
        config = replace(config, data=replace(config.data, seq_len=400))
        gradients = train_run(config).gradients
        at_init = gradients[(gradients["step"] == 0) & (gradients["layer"] == 0)].set_index("timestep")
        return float(at_init.loc[0, "grad_norm"] / at_init.loc[399, "grad_norm"])

    assert first_to_last("float32") == 0.0
    ratio = first_to_last("float64")
    assert 0.0 < ratio < 1e-45
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        TrainConfig(dtype="float16")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_loss_is_computed_in_the_runs_dtype(dtype):
    # A float64 run must not route its loss through float32: that adds ~1e-7 relative
    # noise to every gradient it records. Half precision alone is lifted to float32.
    from gradlab.training import batch_loss
    from gradlab.training.ensemble import cross_entropy_loss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 3, generator=generator, dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    exact = -torch.log_softmax(logits.detach().double(), dim=-1)[torch.arange(7), y].mean()
    for loss in (batch_loss(logits, y, "classification"), cross_entropy_loss(logits, y)):
        assert loss.dtype == dtype
        tolerance = 1e-15 if dtype == torch.float64 else 1e-6
        assert abs(loss.item() - exact.item()) <= tolerance * abs(exact.item())
        (grad,) = torch.autograd.grad(loss, logits)
        assert grad.dtype == dtype
    half = batch_loss(logits.detach().bfloat16(), y, "classification")
    assert half.dtype == torch.float32
