"""Per-step gradient decay against its first-principles prediction, on real runs at initialisation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradlab.analysis.decay import INIT_GAIN, clipping_and_spikes, measured_decay, predicted_decay
from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.training import train_run


def _run(mode: str, init: str = "default", hidden: int = 128, seq_len: int = 40):
    config = RunConfig(
        model=ModelConfig(mode, hidden_size=hidden, num_layers=2, init=init),
        data=DataConfig("distance", seq_len=seq_len, n_train=64, n_validation=32, n_test=32),
        train=TrainConfig(epochs=1, batch_size=64, max_steps_per_epoch=1, record_every=1, diagnostics_batch=32,
                          jacobian_batch=1, jacobian_max_len=4, dtype="float64", clip_grad_norm=0.5),
        run_id=f"{mode}-{init}",
    )
    result = train_run(config)
    summary = pd.DataFrame([{**result.metrics, "run_id": config.run_id, "cell": mode, "seed": 0}])
    return result, summary


@pytest.mark.parametrize("mode, init", [("RNN_TANH", "default"), ("RNN_RELU", "default"),
                                        ("RNN_SIGMOID", "default"), ("RNN_TANH", "orthogonal")])
def test_the_decay_at_init_is_gain_times_rms_slope(mode, init):
    result, summary = _run(mode, init)
    measured = measured_decay(result.gradients, summary).set_index("run_id")["decay"].iloc[0]
    # Independently: the top layer's first-to-last ratio, straight from the recorded norms.
    top = result.gradients[(result.gradients.step == 0) & (result.gradients.layer == 1)
                           & (result.gradients.state == "h")].set_index("timestep")["grad_norm"]
    assert measured == pytest.approx((top[0] / top[39]) ** (1 / 39), rel=1e-12)
    predicted = predicted_decay(result.gates, summary).iloc[0]
    assert predicted["gain"] == pytest.approx(INIT_GAIN[init])
    # The prediction uses no gradient at all, yet lands within 15% of the measurement (H = 128).
    assert predicted["predicted"] == pytest.approx(measured, rel=0.15), (predicted.to_dict(), measured)
    if mode == "RNN_SIGMOID":
        assert predicted["slope_rms"] < 0.25  # sigmoid' <= 1/4: the textbook's worst case, measured
        assert measured < 0.25 / math.sqrt(3) * 1.15


def test_late_stage_has_no_gain_and_saturation_is_reported_for_saturating_cells():
    result, summary = _run("RNN_TANH", hidden=16, seq_len=12)
    late = predicted_decay(result.gates, summary, stage="late").iloc[0]
    assert math.isnan(late["gain"]) and math.isnan(late["predicted"]) and 0 <= late["saturated"] <= 1
    relu, relu_summary = _run("RNN_RELU", hidden=16, seq_len=12)
    assert math.isnan(predicted_decay(relu.gates, relu_summary).iloc[0]["saturated"])


def test_clipping_and_spikes_count_steps_by_hand():
    # 40 steps: a high start that decays (every run's first updates), then a burst at step 30.
    norms = [50.0 / (1 + step) for step in range(25)] + [1.0] * 15
    norms[30] = 30.0
    history = pd.DataFrame({"run_id": "r", "cell": "RNN_RELU", "seed": 0, "split": "train", "metric": "grad_norm",
                            "step": range(40), "value": norms})
    summary = pd.DataFrame({"run_id": ["r"], "clip_grad_norm": [1.0]})
    row = clipping_and_spikes(history, summary).iloc[0]
    assert row["clipped"] == pytest.approx(sum(norm > 1.0 for norm in norms) / 40)
    # Only the burst: the early decline never exceeds 10x the median of the 20 steps before it.
    baseline = np.median(norms[10:30])
    assert row["spikes"] == 1 and row["max_over_median"] == pytest.approx(30.0 / baseline)
    unclipped = clipping_and_spikes(history, summary.assign(clip_grad_norm=np.nan)).iloc[0]
    assert math.isnan(unclipped["clipped"])
