"""GradientRecorder against independent computations of dL/dh_t and dL/dc_t."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from gradlab.data.synthetic import adding_split
from gradlab.instruments.recorder import GradientRecorder
from gradlab.nn.models import RNNModel
from gradlab.store import schema
from gradlab.store.io import read_table as load_frame
from gradlab.store.io import write_table as save_frame

MODES = ["RNN_TANH", "LSTM", "GRU"]
BIDIRECTIONAL = ["none", "separate", "interleaved"]
RUN = {"run_id": "test", "seed": 0}


def _model(mode, bidirectional="none", layers=2, readout="last", hidden=4, features=3, seed=0, handwritten_bptt=True):
    model = RNNModel(
        mode, features, hidden, layers, output_size=3, bidirectional=bidirectional, readout=readout,
        generator=torch.Generator().manual_seed(seed), handwritten_bptt=handwritten_bptt,
    )
    return model.double()


def _batch(batch=3, steps=5, features=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, features, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 3, (batch,), generator=generator)
    return x, y


def _record(model, x, y, step=0, epoch=0, recorder=None):
    recorder = recorder or GradientRecorder(model, every=1, run_info=RUN)
    with recorder.record(step=step, epoch=epoch):
        F.cross_entropy(model(x), y).backward()
    model.zero_grad()
    return recorder


def _capture_states(model):
    """Attach an observer that keeps every state tensor; returns (dict, handle)."""
    states = {}
    handle = model.rnn.add_state_observer(lambda key, tensor: states.__setitem__(key, tensor))
    return states, handle


def _reference_norms(model, x, y):
    """(grad_norm, grad_norm_per_sample) per state key, from torch.autograd.grad."""
    states, handle = _capture_states(model)
    loss = F.cross_entropy(model(x), y)
    handle.remove()
    keys = list(states)
    grads = torch.autograd.grad(loss, [states[k] for k in keys], allow_unused=True)
    out = {}
    for key, grad in zip(keys, grads):
        grad = torch.zeros_like(states[key]) if grad is None else grad
        out[(key.layer, key.direction, key.state, key.timestep)] = (
            grad.norm().item(),
            x.shape[0] * grad.norm(dim=1).mean().item(),
        )
    return out


def _by_key(frame):
    return {
        (row.layer, row.direction, row.state, row.timestep): row
        for row in frame.itertuples(index=False)
    }


@pytest.mark.parametrize("mode,bidirectional,readout", list(itertools.product(MODES, BIDIRECTIONAL, ["last", "mean"])))
@pytest.mark.parametrize("handwritten_bptt", [True, False], ids=["bptt", "autograd"])
def test_norms_match_autograd_grad_of_retained_states(mode, bidirectional, readout, handwritten_bptt):
    # The reference holds the state tensors, which runs the plain autograd unroll.
    model = _model(mode, bidirectional, readout=readout, handwritten_bptt=handwritten_bptt)
    x, y = _batch()
    frame = _record(model, x, y).frame()
    reference = _reference_norms(model, x, y)
    recorded = _by_key(frame)
    assert set(recorded) == set(reference)
    for key, (norm, per_sample) in reference.items():
        assert recorded[key].grad_norm == pytest.approx(norm, rel=1e-10, abs=1e-14)
        assert recorded[key].grad_norm_per_sample == pytest.approx(per_sample, rel=1e-10, abs=1e-14)
    states = 2 if mode == "LSTM" else 1
    directions = 1 if bidirectional == "none" else 2
    assert len(frame) == 2 * directions * states * x.shape[1]


def _finite_difference_gradient(model, x, y, target, eps=1e-6):
    """dL/d(state ``target``) by central differences on an additive perturbation of it.

    The observer perturbs the state in place, and the network uses that very
    tensor downstream. The LSTM's h_t = o * tanh(c_t) is computed before c_t
    is exposed, so perturbing c_t also redoes h_t (o = h_t / tanh(c_t)): the
    recorded dL/dc_t is the total derivative, through h_t too.
    """
    batch, hidden = x.shape[0], model.rnn.hidden_size
    grad = torch.zeros(batch, hidden, dtype=torch.float64)
    for b, j in itertools.product(range(batch), range(hidden)):
        losses = []
        for sign in (1.0, -1.0):
            latest_h = {}

            def perturb(key, tensor, sign=sign, b=b, j=j):
                if key.state == "h":
                    latest_h[(key.layer, key.direction, key.timestep)] = tensor
                if (key.layer, key.direction, key.state, key.timestep) == target:
                    if key.state == "c":
                        h = latest_h[(key.layer, key.direction, key.timestep)]
                        h[b, j] *= torch.tanh(tensor[b, j] + sign * eps) / torch.tanh(tensor[b, j])
                    tensor[b, j] += sign * eps

            handle = model.rnn.add_state_observer(perturb)
            with torch.no_grad():
                losses.append(F.cross_entropy(model(x), y).item())
            handle.remove()
        grad[b, j] = (losses[0] - losses[1]) / (2 * eps)
    return grad


@pytest.mark.parametrize("mode,bidirectional", [("LSTM", "interleaved"), ("GRU", "separate"), ("RNN_TANH", "none")])
def test_norms_match_central_finite_differences(mode, bidirectional):
    model = _model(mode, bidirectional, hidden=3)
    x, y = _batch(batch=2, steps=4)
    recorded = _by_key(_record(model, x, y).frame())
    states = ("h", "c") if mode == "LSTM" else ("h",)
    directions = ("forward", "backward") if bidirectional != "none" else ("forward",)
    # Lower layer (gradient through the layer above too) at both ends and the middle.
    for direction, state, t in itertools.product(directions, states, (0, 2, 3)):
        key = (0, direction, state, t)
        grad = _finite_difference_gradient(model, x, y, key)
        assert recorded[key].grad_norm == pytest.approx(grad.norm().item(), rel=1e-6)
        assert recorded[key].grad_norm_per_sample == pytest.approx(2 * grad.norm(dim=1).mean().item(), rel=1e-6)


@pytest.mark.parametrize("bidirectional", ["separate", "interleaved"])
def test_backward_direction_is_indexed_in_input_time(bidirectional):
    # One layer, readout "last": the backward state read by the head is the
    # one after reading x_0, so its gradient is the head's gradient alone.
    model = _model("GRU", bidirectional, layers=1)
    x, y = _batch(steps=6)
    frame = _record(model, x, y).frame()
    features = model.features(x).detach().requires_grad_(True)
    loss = F.cross_entropy(model.fc(features), y)
    (head_grad,) = torch.autograd.grad(loss, features)  # (B, 2H): forward, then backward
    hidden = model.rnn.hidden_size
    recorded = _by_key(frame)
    assert recorded[(0, "backward", "h", 0)].grad_norm == pytest.approx(head_grad[:, hidden:].norm().item(), rel=1e-12)
    assert recorded[(0, "forward", "h", 5)].grad_norm == pytest.approx(head_grad[:, :hidden].norm().item(), rel=1e-12)
    last = frame[(frame.direction == "backward") & (frame.timestep == 0)]
    assert (last.ratio_to_last == 1.0).all()
    last = frame[(frame.direction == "forward") & (frame.timestep == 5)]
    assert (last.ratio_to_last == 1.0).all()


def test_ratio_to_last_divides_by_the_directions_last_state():
    model = _model("LSTM", "separate")
    x, y = _batch()
    frame = _record(model, x, y).frame()
    for (layer, direction, state), group in frame.groupby(["layer", "direction", "state"]):
        last_t = group.timestep.max() if direction == "forward" else 0
        last = group.loc[group.timestep == last_t, "grad_norm"].item()
        np.testing.assert_allclose(group.ratio_to_last, group.grad_norm / last, rtol=1e-15)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("handwritten_bptt", [True, False], ids=["bptt", "autograd"])
def test_recording_does_not_change_parameter_gradients(mode, handwritten_bptt):
    model = RNNModel(mode, 3, 5, 2, output_size=3, bidirectional="interleaved",
                     generator=torch.Generator().manual_seed(0), handwritten_bptt=handwritten_bptt)
    x, y = _batch()
    x = x.float()
    F.cross_entropy(model(x), y).backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    recorder = GradientRecorder(model, every=1, run_info=RUN)
    with recorder.record(step=0, epoch=0):
        F.cross_entropy(model(x), y).backward()
    recorded = [p.grad.clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(plain, recorded))
    assert len(recorder.frame()) > 0


@pytest.mark.parametrize("handwritten_bptt", [True, False], ids=["bptt", "autograd"])
def test_nothing_reaches_the_recorder_outside_a_recorded_step(handwritten_bptt):
    model = _model("LSTM", "interleaved", handwritten_bptt=handwritten_bptt)
    x, y = _batch()
    recorder = GradientRecorder(model, every=1, run_info=RUN)
    with recorder.record(step=0, epoch=0):
        assert len(model.rnn._gradient_observers) == 1
        loss = F.cross_entropy(model(x), y)
        loss.backward(retain_graph=True)
    assert not model.rnn._gradient_observers and not model.rnn._state_observers
    # A later backward through the same graph must not reach the recorder.
    frame = recorder.frame()
    loss.backward()
    pd.testing.assert_frame_equal(recorder.frame(), frame)


def test_unrecorded_steps_attach_nothing():
    model = _model("GRU")
    x, y = _batch()
    recorder = GradientRecorder(model, every=3, run_info=RUN)
    assert [recorder.should_record(step) for step in range(7)] == [True, False, False, True, False, False, True]
    for step in range(7):
        with recorder.maybe_record(step=step, epoch=0):
            assert bool(model.rnn._gradient_observers) == recorder.should_record(step)
            assert not model.rnn._state_observers
            F.cross_entropy(model(x), y).backward()
    assert sorted(recorder.frame().step.unique()) == [0, 3, 6]


def test_exception_inside_the_block_detaches_and_records_nothing():
    model = _model("RNN_TANH")
    x, y = _batch()
    recorder = GradientRecorder(model, every=1, run_info=RUN)
    with pytest.raises(ZeroDivisionError):
        with recorder.record(step=0, epoch=0):
            F.cross_entropy(model(x), y).backward()
            1 / 0
    assert not model.rnn._gradient_observers
    assert recorder.frame().empty
    _record(model, x, y, recorder=recorder)  # the recorder still works afterwards
    assert len(recorder.frame()) == 2 * x.shape[1]


def test_backward_outside_the_block_is_an_error():
    model = _model("RNN_TANH")
    x, y = _batch()
    recorder = GradientRecorder(model, every=1, run_info=RUN)
    with pytest.raises(RuntimeError, match="no gradient"):
        with recorder.record(step=0, epoch=0):
            loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert not model.rnn._gradient_observers


def test_two_backward_passes_in_one_recorded_step_are_an_error():
    model = _model("RNN_TANH")
    x, y = _batch()
    recorder = GradientRecorder(model, every=1, run_info=RUN)
    with pytest.raises(RuntimeError, match="twice"):
        with recorder.record(step=0, epoch=0):
            (F.cross_entropy(model(x), y) + F.cross_entropy(model(x), y)).backward()
    assert not model.rnn._gradient_observers
    with recorder.record(step=0, epoch=0):  # an evaluation forward under no_grad is harmless
        with torch.no_grad():
            model(x)
        F.cross_entropy(model(x), y).backward()
    assert len(recorder.frame()) == 2 * x.shape[1]


def test_frame_schema_run_info_and_parquet_round_trip(tmp_path):
    frames = []
    for seed, mode in enumerate(["LSTM", "GRU"]):
        model = _model(mode, "separate", seed=seed)
        x, y = _batch()
        recorder = GradientRecorder(model, every=5, run_info={"run_id": f"r{seed}", "seed": seed, "lr": 0.1})
        for step in (0, 5):
            _record(model, x, y, step=step, epoch=step // 5, recorder=recorder)
        frame = recorder.frame()
        assert list(frame.columns)[: len(schema.GRADIENTS)] == list(schema.GRADIENTS)
        assert frame.dtypes[list(schema.GRADIENTS)].astype(str).to_dict() == schema.GRADIENTS
        assert (frame.cell == mode).all() and (frame.activation == "tanh").all() and (frame.lr == 0.1).all()
        states = 2 if mode == "LSTM" else 1
        assert frame.groupby("step").size().to_dict() == {0: 2 * 2 * states * 5, 5: 2 * 2 * states * 5}
        path = save_frame(frame, tmp_path / f"r{seed}" / "gradients.parquet", kind="gradients")
        loaded = load_frame(path, "gradients")
        pd.testing.assert_frame_equal(loaded, frame)
        frames.append(loaded)
    combined = pd.concat(frames, ignore_index=True)
    assert combined.groupby("run_id").size().to_dict() == {"r0": 80, "r1": 40}
    assert not list(tmp_path.rglob("*.tmp"))


def test_run_info_is_checked():
    model = _model("GRU")
    # run_id and seed are optional (GradientRecorder's defaults), but what is given must fit the model.
    assert GradientRecorder(model, run_info={"seed": 0}).run_info["run_id"] == "unnamed"
    with pytest.raises(ValueError, match="cell"):
        GradientRecorder(model, run_info={**RUN, "cell": "LSTM"})
    with pytest.raises(ValueError, match="every"):
        GradientRecorder(model, every=0, run_info=RUN)
    assert GradientRecorder(model, run_info=RUN).frame().columns.tolist()[:13] == list(schema.GRADIENTS)


def test_vanishing_gradient_physics_tanh_rnn_against_lstm_with_forget_bias():
    # Adding problem, T = 100, default init, H = 32, one layer, seed 0, float64
    # (float32 underflows the RNN's ratio to 0). Measured ratio of the norm at
    # t = 0 to t = 99, seeds 0-4: tanh RNN 7.4e-25, 9.6e-19, 4.9e-25, 8.2e-25,
    # 1.4e-26; LSTM (forget bias 1) 7.4e-9, 3.7e-9, 5.1e-7, 1.1e-7, 1.7e-8:
    # at least 3.9e9 times larger. We assert a factor of 1e6.
    data = adding_split(100, 100, torch.Generator().manual_seed(0))
    ratios = {}
    for mode, init in (("RNN_TANH", "default"), ("LSTM", "forget_bias")):
        model = RNNModel(mode, 2, 32, 1, output_size=1, init=init, forget_bias=1.0,
                         generator=torch.Generator().manual_seed(0)).double()
        recorder = GradientRecorder(model, every=1, run_info=RUN)
        with recorder.record(step=0, epoch=0):
            F.mse_loss(model(data.x.double()).squeeze(1), data.y.double()).backward()
        frame = recorder.frame()
        ratios[mode] = frame.loc[(frame.state == "h") & (frame.timestep == 0), "ratio_to_last"].item()
    assert 0 < ratios["RNN_TANH"] < 1e-15
    assert ratios["LSTM"] > 1e-10
    assert ratios["LSTM"] > 1e6 * ratios["RNN_TANH"]


@pytest.mark.parametrize("value", [0.01, 1e-30, 3e30], ids=["ordinary", "squares-underflow", "squares-overflow"])
def test_low_precision_gradients_are_summarised_in_float64(value):
    # 1e-30 squared (1e-60) is below bf16's (and float32's) smallest value, so a norm summed in bf16 or
    # float32 is 0; 3e30 squared overflows them to inf. Summed in float64 each is exact to rounding.
    recorder = GradientRecorder(_model("GRU"), every=1, run_info=RUN)
    grad = torch.full((4, 300), value, dtype=torch.bfloat16)
    grad[1] *= 2  # samples differ: each sample's own norm
    recorder._store(object(), grad)
    norms = recorder._sample_norms.popitem()[1]
    assert norms.dtype == torch.float64
    stored = float(grad[0, 0])  # the bf16 value (0.01 is stored as 0.010009765625)
    expected = torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64) * stored * 300 ** 0.5
    torch.testing.assert_close(norms, expected, rtol=1e-12, atol=0)
    naive = torch.linalg.vector_norm(grad, dim=1)  # bf16 throughout: rounds to 3 digits, or under/overflows
    assert not torch.allclose(naive.double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "dtype, exponent",
    [(torch.float32, -100), (torch.float32, 100), (torch.float64, -600), (torch.float64, 600)],
    ids=["float32-tiny", "float32-huge", "float64-tiny", "float64-huge"],
)
def test_norms_neither_underflow_nor_overflow(dtype, exponent):
    # Scaling the loss by a power of two scales every gradient exactly, so the recorded
    # norms must scale exactly too, even where the squares of the entries leave the
    # dtype's range (2^-200 underflows float32 squares; 2^-1200 float64's).
    model = _model("LSTM").to(dtype)
    x, y = _batch()
    x = x.to(dtype)
    frames = []
    for scale in (1.0, 2.0**exponent):
        recorder = GradientRecorder(model, every=1, run_info=RUN)
        with recorder.record(step=0, epoch=0):
            (scale * F.cross_entropy(model(x), y)).backward()
        model.zero_grad()
        frames.append(recorder.frame())
    plain, scaled = frames
    assert (plain["grad_norm"] > 0).all() and np.isfinite(scaled["grad_norm"]).all()
    np.testing.assert_array_equal(scaled["grad_norm"].to_numpy(), plain["grad_norm"].to_numpy() * 2.0**exponent)
    np.testing.assert_array_equal(
        scaled["grad_norm_per_sample"].to_numpy(), plain["grad_norm_per_sample"].to_numpy() * 2.0**exponent
    )
