"""Jacobians and Lyapunov exponents of the modern cells against dense Jacobians from torch.autograd.functional."""

import pytest
import torch

from gradlab.instruments.diagnostics import gate_statistics, jacobian_singular_values, jacobian_spectral_norms
from gradlab.instruments.lyapunov import lyapunov_spectrum
from gradlab.nn.cells import make_cell
from gradlab.nn.models import RNNModel

MODERN = ["INDRNN", "MINGRU", "MINLSTM", "LRU", "DIAGONAL"]
RUN = {"run_id": "test", "seed": 0}


def _model(mode, layers=1, hidden=3):
    model = RNNModel(mode, 2, hidden, layers, output_size=2, generator=torch.Generator().manual_seed(0)).double()
    if mode == "INDRNN":  # keep the ReLUs mostly active, so the Jacobian products are not all zero
        with torch.no_grad():
            for cell in model.rnn.cells:
                cell.bias_ih.fill_(1.0)
    return model


def _x(batch=2, steps=9):
    return torch.randn(batch, steps, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))


def _dense_jacobians(cell, x):
    """Each sample's one-step Jacobians d s_t / d s_{t-1} (B, T, n, n), from the zero state along its trajectory."""
    x_proj = cell.project_input(x)
    batch, steps = x.shape[:2]
    out = torch.zeros(batch, steps, cell.state_size, cell.state_size, dtype=x.dtype)
    for b in range(batch):
        state = torch.zeros(1, cell.state_size, dtype=x.dtype)
        for t in range(steps):
            step = x_proj[b : b + 1, t]
            out[b, t] = torch.autograd.functional.jacobian(lambda h, step=step: cell.step(step, h), state)[0, :, 0]
            state = cell.step(step, state).detach()
    return out


@pytest.mark.parametrize("mode", MODERN)
def test_jacobian_diagonal_is_the_dense_step_jacobian(mode):
    cell = make_cell(mode, 2, 3).double()
    generator = torch.Generator().manual_seed(7)
    x_proj = cell.project_input(torch.randn(4, 2, dtype=torch.float64, generator=generator))
    previous = torch.randn(4, cell.state_size, dtype=torch.float64, generator=generator)
    diagonal = cell.jacobian_diagonal(x_proj, previous)  # (4, H), complex for the LRU
    for b in range(4):
        dense = torch.autograd.functional.jacobian(lambda h, b=b: cell.step(x_proj[b : b + 1], h), previous[b : b + 1])
        dense = dense[0, :, 0]  # (n, n)
        if mode == "LRU":  # [Re, Im] packing: each unit's block is [[Re l, -Im l], [Im l, Re l]]
            d = diagonal[b]
            expected = torch.cat([torch.cat([torch.diag(d.real), -torch.diag(d.imag)], 1),
                                  torch.cat([torch.diag(d.imag), torch.diag(d.real)], 1)], 0)
        else:
            expected = torch.diag(diagonal[b])
        torch.testing.assert_close(dense, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", MODERN)
def test_lyapunov_exponents_equal_those_of_the_dense_jacobian_product(mode):
    model, x, warmup = _model(mode), _x(), 2
    table = lyapunov_spectrum(model, x, warmup=warmup)
    jacobians = _dense_jacobians(model.rnn.cell(0), x)
    exponents = []
    for b in range(x.shape[0]):
        product = torch.eye(jacobians.shape[-1], dtype=x.dtype)
        for t in range(warmup, x.shape[1]):
            product = jacobians[b, t] @ product
        exponents.append(torch.linalg.svdvals(product).log() / (x.shape[1] - warmup))  # descending
    expected = torch.stack(exponents).mean(dim=0)
    got = torch.tensor(table.sort_values("index").exponent.values)
    assert len(got) == model.rnn.cell(0).state_size
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mode", MODERN)
def test_jacobian_singular_values_and_norms_match_dense_products(mode):
    model, x = _model(mode), _x(steps=6)
    cell = model.rnn.cell(0)
    size = cell.state_size
    gaps = [0, 1, 3, 5]
    exact = jacobian_singular_values(model, x, k=size, gaps=gaps, iterations=0, oversample=0)
    # Power iteration converges as (s2/s1)^(2 iterations); s2/s1 reaches 0.974 here (MINGRU, gap 3).
    norms = jacobian_spectral_norms(model, x, run_info=RUN, step=0, epoch=0, iterations=400,
                                    generator=torch.Generator().manual_seed(0))
    jacobians = _dense_jacobians(cell, x)
    steps = x.shape[1]
    for gap in gaps:
        products = []
        for b in range(x.shape[0]):
            product = torch.eye(size, dtype=x.dtype)
            for t in range(steps - gap, steps):
                product = jacobians[b, t] @ product
            products.append(torch.linalg.svdvals(product))
        dense = torch.stack(products)  # (B, n)
        rows = exact[exact.distance == gap].sort_values("index")
        floor = 1e-12 * dense.max().item()
        torch.testing.assert_close(torch.tensor(rows.singular_value.values), dense.mean(dim=0), rtol=1e-10,
                                   atol=floor)
        spectral = norms[norms.distance == gap].spectral_norm.item()
        assert spectral <= dense[:, 0].mean().item() * (1 + 1e-12)  # power iteration gives a lower bound
        assert spectral == pytest.approx(dense[:, 0].mean().item(), rel=1e-8, abs=floor)
        assert dense[:, 0].min() > 1e-3  # the products are not all zero (dead ReLUs)


@pytest.mark.parametrize("mode,gates", [("MINGRU", {"z"}), ("MINLSTM", {"f", "i"}), ("INDRNN", {"h"}),
                                        ("LRU", set()), ("DIAGONAL", set())])
def test_gate_statistics_name_each_cells_gates(mode, gates):
    model, x = _model(mode, layers=2), _x()
    table = gate_statistics(model, x, run_info=RUN, step=0, epoch=0)
    assert set(table.gate) == gates
    if mode == "MINGRU":  # the mean of z = sigmoid(k_z), computed here from the input projection
        k_z = model.rnn.cell(0).project_input(x)[..., :3]
        rows = table[(table.layer == 0) & (table.stat == "mean")].sort_values("timestep")
        torch.testing.assert_close(torch.tensor(rows.value.values), torch.sigmoid(k_z).mean(dim=(0, 2)))
