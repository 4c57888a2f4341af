"""The modern cells (INDRNN, MINGRU, MINLSTM, LRU, DIAGONAL): scans against loops, gradients, and the
recorder against an independent plain-torch reimplementation of every recurrence."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradlab.instruments.recorder import GradientRecorder
from gradlab.nn.cells import make_cell
from gradlab.nn.initialisation import initialise_
from gradlab.nn.models import RNNModel
from gradlab.nn.modern import indrnn_u_max
from gradlab.nn.scan import linear_scan, log_space_scan, sequential_linear_recurrence

MODERN = ["INDRNN", "MINGRU", "MINLSTM", "LRU", "DIAGONAL"]
SCANNING = ["MINGRU", "MINLSTM", "LRU", "DIAGONAL"]
RUN = {"run_id": "test", "seed": 0}


def _cell(mode, inputs=3, hidden=4, seed=0, dtype=torch.float64, **options):
    cell = make_cell(mode, inputs, hidden, **options).to(dtype)
    cell.reset_parameters(torch.Generator().manual_seed(seed))
    return cell


def _step_loop(cell, x_proj, h0):
    state, states = h0, []
    for t in range(x_proj.shape[1]):
        state = cell.step(x_proj[:, t], state)
        states.append(state)
    return torch.stack(states, dim=1)


@pytest.mark.parametrize("mode", SCANNING)
@pytest.mark.parametrize("steps", [1, 2, 7, 50])
def test_scan_equals_the_step_loop_in_float64(mode, steps):
    cell = _cell(mode)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, steps, 3, dtype=torch.float64, generator=generator)
    h0 = torch.randn(3, cell.state_size, dtype=torch.float64, generator=generator)  # negative entries included
    x_proj = cell.project_input(x)
    loop = _step_loop(cell, x_proj, h0)
    scanned = cell.scan(x_proj, h0)
    assert scanned.shape == loop.shape == (3, steps, cell.state_size)
    torch.testing.assert_close(scanned, loop, rtol=1e-12, atol=1e-12 * loop.abs().max().item())


def test_the_scan_functions_equal_the_sequential_recurrence():
    generator = torch.Generator().manual_seed(2)
    b = torch.randn(2, 45, 5, dtype=torch.float64, generator=generator)
    h0 = torch.randn(2, 5, dtype=torch.float64, generator=generator)
    for a in (torch.tensor([0.9, -0.99, 0.0, 1.0, -0.3], dtype=torch.float64),  # time-invariant, any sign
              torch.rand(2, 45, 5, dtype=torch.float64, generator=generator) * 2 - 1):  # time-varying
        torch.testing.assert_close(linear_scan(a, b, h0), sequential_linear_recurrence(a, b, h0), rtol=1e-13,
                                   atol=1e-13)
    complex_a = torch.polar(torch.rand(5, dtype=torch.float64, generator=generator), torch.arange(5.0).double())
    torch.testing.assert_close(linear_scan(complex_a, b.to(torch.complex128), h0.to(torch.complex128)),
                               sequential_linear_recurrence(complex_a, b.to(torch.complex128), h0.to(torch.complex128)),
                               rtol=1e-13, atol=1e-13)
    log_a = -torch.rand(2, 45, 5, dtype=torch.float64, generator=generator) * 3
    log_b = torch.randn(2, 45, 5, dtype=torch.float64, generator=generator)
    expected = sequential_linear_recurrence(log_a.exp(), log_b.exp(), h0)
    torch.testing.assert_close(log_space_scan(log_a, log_b, h0), expected, rtol=1e-12, atol=1e-12)


# float32 at T = 1000, relative to the largest |h_t| of the float64 loop. Measured here: 1.8e-6 (LRU),
# 1.4e-7 (DIAGONAL), 3.6e-5 (MINGRU), 4.8e-5 (MINLSTM); over other seeds up to 4.3e-6 (LRU: the unit with
# |lambda| nearest 1 carries each rounding error ~1/(1-|lambda|) steps) and 4.7e-7 (DIAGONAL). The log-space
# form is worse: exp(A_t + logcumsumexp) adds two logs of size |A_t| = |sum log a_s| (several hundred at
# T = 1000), each exact only to eps32 |A_t| ~ 6e-8 * 700 = 4e-5. Tolerances: about 4x the worst measured.
FLOAT32_TOLERANCE = {"LRU": 2e-5, "DIAGONAL": 2e-6, "MINGRU": 2e-4, "MINLSTM": 2e-4}


@pytest.mark.parametrize("mode", SCANNING)
def test_float32_scan_at_t_1000_stays_within_the_measured_tolerance(mode):
    cell = _cell(mode, hidden=16)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1000, 3, dtype=torch.float64, generator=generator)
    h0 = torch.randn(2, cell.state_size, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        reference = _step_loop(cell, cell.project_input(x), h0)
        single = make_cell(mode, 3, 16)
        single.load_state_dict({name: value.float() for name, value in cell.state_dict().items()})
        scanned = single.scan(single.project_input(x.float()), h0.float()).double()
        exact = cell.scan(cell.project_input(x), h0)
    assert ((exact - reference).abs().max() / reference.abs().max()).item() < 1e-12  # float64 at T = 1000 too
    error = ((scanned - reference).abs().max() / reference.abs().max()).item()
    assert error < FLOAT32_TOLERANCE[mode]
    assert error > 0  # float32 really ran


class _Layer(torch.nn.Module):
    """One cell over a sequence: its states (and the LRU's outputs), for functional_call."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, inputs, initial):
        x_proj = self.cell.project_input(inputs)
        states = self.cell.scan(x_proj, initial) if self.cell.scans else _step_loop(self.cell, x_proj, initial)
        readout = getattr(self.cell, "readout", None)
        return states if readout is None else (states, readout(states, inputs))


@pytest.mark.parametrize("mode", MODERN)
def test_gradients_pass_gradcheck(mode):
    layer = _Layer(_cell(mode, inputs=2, hidden=3))
    names = [name for name, _ in layer.named_parameters()]
    parameters = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    h0 = torch.randn(2, layer.cell.state_size, dtype=torch.float64, generator=generator, requires_grad=True)

    def run(*tensors):
        return torch.func.functional_call(layer, dict(zip(names, tensors[: len(names)])), tensors[len(names):])

    assert torch.autograd.gradcheck(run, (*parameters, x, h0))


def _g(x):
    """Feng et al.'s positive activation, written out again."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def _reference_step(mode, cell, x, h):
    """One step of ``mode`` in plain torch from the cell's parameters; returns (state, output)."""
    if mode == "LRU":
        lam = torch.exp(-torch.exp(cell.nu_log) + 1j * torch.exp(cell.theta_log))
        b = torch.complex(cell.B_re, cell.B_im)
        h = lam * h + torch.exp(cell.gamma_log) * (x.to(b.dtype) @ b.T)
        return h, (h @ torch.complex(cell.C_re, cell.C_im).T).real + x @ cell.D.T
    k = x @ cell.weight_ih.T + cell.bias_ih
    if mode == "INDRNN":
        h = torch.relu(k + cell.weight_hh * h)
    elif mode == "DIAGONAL":
        h = cell.weight_hh * h + k
    elif mode == "MINGRU":
        k_z, k_h = k.split(cell.hidden_size, dim=1)
        z = torch.sigmoid(k_z)
        h = (1 - z) * h + z * _g(k_h)
    else:
        k_f, k_i, k_h = k.split(cell.hidden_size, dim=1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        h = f / (f + i) * h + i / (f + i) * _g(k_h)
    return h, h


def _reference_loss(model, x, y):
    """The loss and every state h_t (complex for the LRU), by a plain loop over layers and time."""
    mode, net = model.mode, model.rnn
    inputs, states = x, {}
    for layer in range(net.num_layers):
        cell = net.cell(layer)
        h = torch.zeros(x.shape[0], net.hidden_size, dtype=torch.complex128 if mode == "LRU" else x.dtype)
        outputs = []
        for t in range(x.shape[1]):
            h, out = _reference_step(mode, cell, inputs[:, t], h)
            states[(layer, t)] = h
            outputs.append(out)
        inputs = torch.stack(outputs, dim=1)
    features = inputs[:, -1] if model.readout == "last" else inputs.mean(dim=1)
    return F.cross_entropy(model.fc(features), y), states


def _model(mode, readout="last", bidirectional="none", seed=0):
    return RNNModel(mode, 3, 4, 2, output_size=3, readout=readout, bidirectional=bidirectional,
                    generator=torch.Generator().manual_seed(seed)).double()


def _batch(steps=6):
    generator = torch.Generator().manual_seed(5)
    return torch.randn(3, steps, 3, dtype=torch.float64, generator=generator), torch.tensor([0, 2, 1])


@pytest.mark.parametrize("mode", MODERN)
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_recorder_matches_an_independent_reimplementation(mode, readout):
    model = _model(mode, readout)
    x, y = _batch()
    recorder = GradientRecorder(model, every=1, run_info=RUN)
    with recorder.record():
        F.cross_entropy(model(x), y).backward()
    frame = recorder.frame()
    loss, states = _reference_loss(model, x, y)
    assert loss.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-12)
    keys = list(states)
    # For the complex LRU state, autograd's gradient is dL/dRe h + i dL/dIm h: its norm is the norm over both parts.
    grads = dict(zip(keys, torch.autograd.grad(loss, [states[key] for key in keys])))
    assert len(frame) == len(keys) and set(frame.state) == {"h"} and set(frame.direction) == {"forward"}
    for row in frame.itertuples():
        grad = grads[(row.layer, row.timestep)]
        assert row.grad_norm == pytest.approx(torch.linalg.vector_norm(grad).item(), rel=1e-10, abs=1e-15)
        per_sample = x.shape[0] * torch.linalg.vector_norm(grad, dim=1).mean().item()
        assert row.grad_norm_per_sample == pytest.approx(per_sample, rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("mode", SCANNING)
@pytest.mark.parametrize("bidirectional", ["none", "separate", "interleaved"])
def test_scan_and_step_loop_paths_record_and_train_alike(mode, bidirectional):
    """A state observer makes the network run the step loop; rows and parameter gradients must not change."""
    x, y = _batch()
    results = []
    for observed in (False, True):
        model = _model(mode, "mean", bidirectional)
        handle = model.rnn.add_state_observer(lambda key, tensor: None) if observed else None
        recorder = GradientRecorder(model, every=1, run_info=RUN)
        with recorder.record():
            F.cross_entropy(model(x), y).backward()
        if handle is not None:
            handle.remove()
        results.append((recorder.frame(), {name: p.grad for name, p in model.named_parameters()}))
    (scan_frame, scan_grads), (loop_frame, loop_grads) = results
    merged = scan_frame.merge(loop_frame, on=["layer", "direction", "state", "timestep"], suffixes=("", "_loop"))
    assert len(merged) == len(scan_frame) == len(loop_frame) == 2 * (1 + (bidirectional != "none")) * x.shape[1]
    torch.testing.assert_close(torch.tensor(merged.grad_norm.values), torch.tensor(merged.grad_norm_loop.values),
                               rtol=1e-10, atol=1e-15)
    for name, grad in scan_grads.items():
        torch.testing.assert_close(grad, loop_grads[name], rtol=1e-10, atol=1e-14)


def test_lru_last_readout_reads_the_output_not_the_state():
    model = _model("LRU")
    x, _ = _batch()
    outputs, final = model.rnn(x)
    assert final.shape == (2, 3, 8)  # (layers, batch, 2H): the packed complex state
    torch.testing.assert_close(model.features(x), outputs[:, -1])


def test_modern_cells_refuse_what_does_not_apply():
    with pytest.raises(ValueError, match="apply to the modern cells"):
        make_cell("GRU", 2, 3, lambda_range=(0.0, 0.5))
    with pytest.raises(ValueError, match="r_min <= r_max"):
        make_cell("LRU", 2, 3, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="low <= high"):
        make_cell("INDRNN", 2, 3, u_range=(1.0, 0.0))
    with pytest.raises(TypeError, match="no weight_hh matrix"):
        make_cell("MINGRU", 2, 3).project_hidden(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="not MinGRUCell; use 'default'"):
        initialise_(make_cell("MINGRU", 2, 3), "orthogonal")
    cell = make_cell("DIAGONAL", 2, 3, lambda_range=(0.25, 0.25))
    assert torch.equal(cell.weight_hh.detach(), torch.full((3,), 0.25))
    assert math.isclose(make_cell("INDRNN", 2, 3, u_range=(0.5, 0.5)).weight_hh[0].item(), 0.5)
    assert math.isclose(indrnn_u_max(100, gain=2.0) ** 100, 2.0)


@pytest.mark.parametrize("mode", MODERN)
def test_a_sequence_split_in_two_continues_from_the_final_state(mode):
    net = _model(mode).rnn
    x, _ = _batch(steps=10)
    whole, final = net(x)
    first, middle = net(x[:, :4])
    second, final_again = net(x[:, 4:], middle)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final_again, final, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="expected initial state of shape"):
        net(x, torch.zeros(2, 3, 5, dtype=torch.float64))
