r"""How sensitive a linear recurrence's state is to its own eigenvalue: the curse of memory, in closed form.

Take the scalar recurrence :math:`h_t = \lambda h_{t-1} + x_t`, :math:`h_0 = 0`
(before the first input), driven by white noise: the :math:`x_t` independent
with mean 0 and variance 1. Unrolled, :math:`h_t = \sum_{k \ge 0} \lambda^k x_{t-k}`, so

.. math::
    \frac{\partial h_t}{\partial \lambda} = \sum_{k \ge 1} k \lambda^{k-1} x_{t-k},
    \qquad
    \mathbb{E}\Big[\Big(\frac{\partial h_t}{\partial \lambda}\Big)^2\Big]
      = \sum_{k \ge 1} k^2 \lambda^{2k-2}
      \xrightarrow{t \to \infty} \frac{1 + \lambda^2}{(1 - \lambda^2)^3},

the cross terms vanishing because the inputs are uncorrelated, and the sum
being :math:`\sum_k k^2 r^{k-1} = (1 + r)/(1 - r)^3` at :math:`r = \lambda^2`
(differentiate :math:`\sum_k k r^k = r/(1-r)^2`). As :math:`|\lambda| \to 1`
the sensitivity explodes like :math:`(1 - |\lambda|)^{-3}/4`: the longer a
recurrence remembers, the more its state moves when its eigenvalue does
(:func:`plain_sensitivity`).

**The LRU** (Orvieto et al. 2023, :mod:`gradlab.nn.lru`) changes two things:
the input is scaled by :math:`\gamma` (initialised to
:math:`\sqrt{1 - |\lambda|^2}`, then a parameter of its own), and
:math:`|\lambda| = r = \exp(-e^{\nu})` is parametrised by :math:`\nu`. For a
complex :math:`\lambda = r e^{i\phi}` and real white-noise input,
:math:`h_t = \gamma \sum_k \lambda^k x_{t-k}` and, since
:math:`\partial\lambda/\partial\nu = \lambda \log r`,

.. math::
    \frac{\partial h_t}{\partial \nu} = \gamma \log r \sum_{k \ge 1} k \lambda^k x_{t-k},
    \qquad
    \mathbb{E}\Big|\frac{\partial h_t}{\partial \nu}\Big|^2
      = \gamma^2 \log^2 r \sum_k k^2 r^{2k}
      = \gamma^2 \frac{r^2 \log^2 r\, (1 + r^2)}{(1 - r^2)^3}

(:math:`|\lambda^k|^2 = r^{2k}` whatever the phase). At the initial
:math:`\gamma^2 = 1 - r^2` this is :math:`r^2 \log^2 r\, (1 + r^2)/(1 - r^2)^2`,
which tends to **1/2** as :math:`r \to 1` (:math:`\log r \approx -(1 - r)`,
:math:`1 - r^2 \approx 2(1 - r)`): bounded, where the same recurrence
without :math:`\gamma` (:math:`\gamma = 1`) grows like :math:`1/(4(1 - r))`
in :math:`\nu` and the plain one like :math:`(1 - r)^{-3}/4` in
:math:`\lambda` (:func:`lru_nu_sensitivity`). Both changes are needed:
:math:`\gamma` removes one power of :math:`(1 - r^2)`, and the
:math:`\nu`-parametrisation the other two (its :math:`dr/d\nu = r \log r`
vanishes at :math:`r = 1`). With respect to :math:`r` itself, the
:math:`\gamma`-scaled state still has :math:`(1 + r^2)/(1 - r^2)^2`.

These are exact limits for the stationary state; a recurrence run for T
steps from rest misses the tail :math:`\sum_{k \ge T}`, which is below
:math:`T^2 r^{2T}` relatively: negligible once T is many times 1/(1 - r).
"""

from __future__ import annotations

import math


def _check_modulus(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= abs(value) < 1.0:
        raise ValueError(f"{name} must satisfy |{name}| < 1 (a stable recurrence has a stationary state), got {value}")
    return value


def plain_sensitivity(lam: float) -> float:
    """E[(dh_t/dlambda)^2] as t -> inf for h_t = lambda h_{t-1} + x_t with unit white noise: (1+l^2)/(1-l^2)^3."""
    lam = _check_modulus("lambda", lam)
    return (1.0 + lam**2) / (1.0 - lam**2) ** 3


def lru_nu_sensitivity(r: float, gamma: float | None = None) -> float:
    """E|dh_t/dnu|^2 as t -> inf for the LRU recurrence h_t = lambda h_{t-1} + gamma x_t, |lambda| = r = exp(-e^nu).

    Args:
        r: |lambda|, in (0, 1).
        gamma: the input scale; the LRU's initial sqrt(1 - r^2) when None, 1 for the unnormalised recurrence.

    Returns:
        gamma^2 r^2 log^2(r) (1 + r^2) / (1 - r^2)^3 (module docstring), whatever the phase of lambda.
    """
    r = _check_modulus("r", r)
    if r <= 0.0:
        raise ValueError(f"r = |lambda| must be > 0 (nu = log(-log r)), got {r}")
    scale_squared = 1.0 - r**2 if gamma is None else float(gamma) ** 2
    return scale_squared * r**2 * math.log(r) ** 2 * (1.0 + r**2) / (1.0 - r**2) ** 3
