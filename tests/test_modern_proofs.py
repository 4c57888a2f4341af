"""Proofs as tests: what a diagonal linear recurrence does to gradients, and what the LRU's normalisation changes.

Each closed form lives in :mod:`gradlab.instruments.sensitivity` with its derivation; here it is measured
through gradlab's own cells with autograd. Monte Carlo tolerances are 4 standard errors of the sample mean,
estimated from the same samples (a chance failure below 1e-4 per assertion; seeds are fixed).
"""

import functools
import math

import numpy as np
import pytest
import torch

from gradlab.instruments.lyapunov import lyapunov_spectrum
from gradlab.instruments.recorder import GradientRecorder
from gradlab.instruments.sensitivity import lru_nu_sensitivity, plain_sensitivity
from gradlab.nn.cells import make_cell
from gradlab.nn.network import RecurrentNet

LAMBDAS = torch.tensor([0.9, -0.5, 0.99, 0.3, -0.95], dtype=torch.float64)


def _diagonal_net(lambdas, inputs=2):
    net = RecurrentNet("DIAGONAL", inputs, len(lambdas)).double()
    with torch.no_grad():
        net.cell(0).weight_hh.copy_(lambdas)
    return net


def test_gradient_decays_exactly_as_lambda_to_the_distance_along_each_unit():
    net, steps = _diagonal_net(LAMBDAS), 40
    x = torch.randn(3, steps, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.5], dtype=torch.float64)
    grads = {}
    handle = net.add_gradient_observer(lambda key, grad: grads.__setitem__(key.timestep, grad.clone()))
    outputs, _ = net(x)
    (outputs[:, -1] * weights).sum().backward()  # the loss reads h_{T-1} only
    handle.remove()
    for t in range(steps):
        expected = (weights * LAMBDAS ** (steps - 1 - t)).expand(3, -1)  # dL/dh_t = w lambda^(T-1-t), per unit
        torch.testing.assert_close(grads[t], expected, rtol=1e-12, atol=0)


def test_recorder_ratio_to_last_is_the_power_of_lambda():
    for lam in (0.9, -0.7):
        net, steps = _diagonal_net(torch.tensor([lam], dtype=torch.float64)), 30
        x = torch.randn(2, steps, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        recorder = GradientRecorder(net, every=1, run_info={"run_id": "r", "seed": 0})
        with recorder.record():
            net(x)[0][:, -1].sum().backward()
        frame = recorder.frame().sort_values("timestep")
        np.testing.assert_allclose(frame.ratio_to_last, abs(lam) ** (steps - 1 - frame.timestep.to_numpy()),
                                   rtol=1e-12)


def test_lyapunov_exponents_are_log_abs_lambda():
    net = _diagonal_net(LAMBDAS)
    x = torch.randn(2, 25, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    table = lyapunov_spectrum(net, x, warmup=5).sort_values("index")
    expected = np.sort(np.log(np.abs(LAMBDAS.numpy())))[::-1]
    np.testing.assert_allclose(table.exponent, expected, rtol=1e-12)
    np.testing.assert_allclose(table.exponent_std, 0.0, atol=1e-15)  # the same for every sample


def test_the_closed_forms_equal_their_series():
    k = np.arange(1, 200_000, dtype=np.float64)
    for lam in (0.5, 0.9, 0.99):
        assert plain_sensitivity(lam) == pytest.approx(np.sum(k**2 * lam ** (2 * k - 2)), rel=1e-10)
        for gamma in (None, 1.0):
            scale = (1 - lam**2) if gamma is None else 1.0
            series = scale * math.log(lam) ** 2 * np.sum(k**2 * lam ** (2 * k))
            assert lru_nu_sensitivity(lam, gamma) == pytest.approx(series, rel=1e-10)
    with pytest.raises(ValueError, match="< 1"):
        plain_sensitivity(1.0)


def _steps(r):
    # The stationary limit misses the tail sum_{k >= T}, about (T (1 - r))^2 r^(2T) relatively: < 1e-6 here,
    # far below one standard error.
    return math.ceil(10 / (1 - r))


def _within_standard_errors(samples, expected, errors=4.0):
    mean = samples.mean().item()
    standard_error = samples.std().item() / math.sqrt(samples.numel())
    assert abs(mean - expected) < errors * standard_error, (mean, expected, standard_error)
    return mean


@pytest.mark.parametrize("lam", [0.5, 0.9, 0.99])
def test_white_noise_sensitivity_of_the_plain_recurrence(lam):
    """E[(dh_t/dlambda)^2] -> (1 + lambda^2)/(1 - lambda^2)^3, measured on 4000 independent units of DIAGONAL
    (standard error sqrt(2/4000) ~ 2% of the mean, since (dh/dlambda)^2 is a squared Gaussian)."""
    units, steps = 4000, _steps(lam)
    cell = make_cell("DIAGONAL", 1, units, lambda_range=(lam, lam)).double()
    noise = torch.randn(1, steps, units, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    states = cell.scan(noise, noise.new_zeros(1, units))  # h_t = lambda h_{t-1} + x_t, each unit its own x
    states[0, -1].sum().backward()  # unit i's h_T depends on lambda_i only: its gradient is dh_T/dlambda_i
    _within_standard_errors(cell.weight_hh.grad.square(), plain_sensitivity(lam))


@functools.cache
def _lru_sensitivity_samples(r, normalised, units=1000, seed=4):
    """|dh_T/dnu_i|^2 of 1000 LRU units with |lambda| = r driven by independent unit white noise (kept: two tests
    read them)."""
    cell = make_cell("LRU", 1, units, r_min=r, r_max=r).double()
    gamma = torch.exp(cell.gamma_log).detach() if normalised else torch.ones(units, dtype=torch.float64)
    steps = _steps(r)
    noise = torch.randn(1, steps, units, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    x_proj = torch.cat([gamma * noise, torch.zeros_like(noise)], dim=-1)  # gamma x_t, real input
    last = cell.scan(x_proj, x_proj.new_zeros(1, 2 * units))[0, -1]  # [Re h_T, Im h_T]
    (real,) = torch.autograd.grad(last[:units].sum(), cell.nu_log, retain_graph=True)
    (imaginary,) = torch.autograd.grad(last[units:].sum(), cell.nu_log)
    assert torch.allclose(torch.exp(-torch.exp(cell.nu_log)), torch.full((units,), r, dtype=torch.float64))
    return real.square() + imaginary.square()


@pytest.mark.parametrize("r", [0.5, 0.9, 0.99])
def test_lru_sensitivity_to_nu_matches_its_closed_form(r):
    _within_standard_errors(_lru_sensitivity_samples(r, normalised=True), lru_nu_sensitivity(r))
    _within_standard_errors(_lru_sensitivity_samples(r, normalised=False), lru_nu_sensitivity(r, gamma=1.0))


def test_lru_normalisation_keeps_the_sensitivity_bounded_where_the_plain_one_explodes():
    lru = {r: _lru_sensitivity_samples(r, normalised=True).mean().item() for r in (0.5, 0.99)}
    unnormalised = {r: _lru_sensitivity_samples(r, normalised=False).mean().item() for r in (0.5, 0.99)}
    assert lru[0.99] < 0.55 and lru[0.99] / lru[0.5] < 2.5  # the limit is 1/2; the closed forms' ratio is 1.86
    assert unnormalised[0.99] / unnormalised[0.5] > 40  # ~ 1/(4(1-r)): 70 in closed form
    # The plain recurrence in lambda: (1+l^2)/(1-l^2)^3 grows ~ (1-l)^-3 / 4: 8.5e4 between 0.5 and 0.99.
    assert plain_sensitivity(0.99) / plain_sensitivity(0.5) > 8e4
    assert (1 - 0.999) ** 3 * plain_sensitivity(0.999) == pytest.approx(0.25, rel=0.01)
