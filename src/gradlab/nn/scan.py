r"""All states of an elementwise linear recurrence at once, with the adjoint recurrence as backward.

The modern cells (:mod:`gradlab.nn.modern`, :mod:`gradlab.nn.lru`) all reduce
to a diagonal linear recurrence over the time axis of (B, T, N) tensors:

.. math:: h_t = a_t \odot h_{t-1} + b_t, \qquad t = 0 .. T-1,\ h_{-1} = h_0,

with real or complex coefficients. Two forward algorithms compute every h_t
without a Python loop over time:

- :func:`linear_scan`: a blocked (two-level) parallel scan. The sequence is
  cut into chunks of C ~ sqrt(T) steps; all chunks are scanned from rest at
  once (C vectorised steps, keeping each chunk's running product of
  coefficients), then the state entering each chunk is carried from chunk to
  chunk (T/C small steps) and added in, times the running products. About
  2 sqrt(T) Python steps instead of T, O(T) work, and the same
  multiply-adds as the sequential loop up to reassociation, so the rounding
  error is that of the loop's. Any sign, any complex a; a time-invariant
  diagonal a (N,) uses its powers a^1 .. a^C for the running products.
- :func:`log_space_scan`: the cumulative log-sum-exp form of Feng et al. (2024,
  "Were RNNs All We Needed?") for positive coefficients given as logarithms:
  with :math:`A_t = \sum_{s \le t} \log a_s`,
  :math:`h_t = e^{A_t} h_0 + \exp(A_t + \mathrm{logcumsumexp}_t(\log b - A))`.
  The paper passes h_0 through the positive activation and puts it into the
  log-sum-exp; here the h_0 term is kept linear, so any initial state
  (negative ones included) is exact.

Both are ``torch.autograd.Function`` s whose backward runs the adjoint
recurrence, itself a (reversed) linear scan: with e_t the gradient arriving
at h_t from outside the recurrence,

.. math:: g_t = e_t + \overline{a_{t+1}} \odot g_{t+1}, \quad g_{T-1} = e_{T-1},

and dL/db_t = g_t, dL/da_t = g_t \odot \overline{h_{t-1}}, dL/dh_0 = \overline{a_0} \odot g_0
(torch's convention for complex gradients). g_t is the *total* gradient
dL/dh_t through the recurrence, the quantity the gradient observers of
:class:`gradlab.nn.network.RecurrentNet` report, so the backward hands it to an
optional ``on_grad(g)`` callback with the whole (B, T, N) tensor. The backward
is built from differentiable operations, so double backward works.

:func:`sequential_linear_recurrence` is the same recurrence as a plain loop,
the reference the scans are checked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

#: Called during backward with the total gradient dL/dh (B, T, N) of every state (read it, don't keep it).
ScanGradCallback = Callable[[Tensor], None]


def _prefix_scan(a: Tensor, b: Tensor) -> Tensor:
    """h_t = a_t h_{t-1} + b_t from h_{-1} = 0 along dim 1 (module docstring: a blocked scan).

    ``a`` is (B, T, N), or (N,) for a time-invariant diagonal (then each chunk's running products are
    the powers a^1 .. a^C, computed once); ``b`` is (B, T, N).
    """
    batch, steps, size = b.shape
    width = max(1, math.isqrt(steps - 1) + 1)  # chunk length C ~ sqrt(T): C + T/C Python steps in all
    chunks = -(-steps // width)
    padding = chunks * width - steps
    constant = a.dim() == 1
    if padding:  # b = 0 (and a = 1) past the end; those states are cut off below
        b = torch.cat([b, b.new_zeros(batch, padding, size)], dim=1)
        if not constant:
            a = torch.cat([a, a.new_ones(batch, padding, size)], dim=1)
    b = b.reshape(batch, chunks, width, size)
    a = a if constant else a.reshape(batch, chunks, width, size)
    # 1. Every chunk scanned from rest at once, with the running product of its coefficients.
    local = [b[:, :, 0]]  # each (B, chunks, N)
    for position in range(1, width):
        local.append((a if constant else a[:, :, position]) * local[-1] + b[:, :, position])
    if constant:
        exponents = torch.arange(1, width + 1, device=a.device, dtype=a.real.dtype).unsqueeze(1)  # (C, 1)
        products = a**exponents  # (C, N): a^(position + 1)
        last_product = products[-1].expand(batch, chunks, size)
    else:
        running = [a[:, :, 0]]
        for position in range(1, width):
            running.append(a[:, :, position] * running[-1])
        products = torch.stack(running, dim=2)  # (B, chunks, C, N)
        last_product = running[-1]
    # 2. The state entering each chunk, chunk after chunk.
    carry = b.new_zeros(batch, size)
    entering = []
    for chunk in range(chunks):
        entering.append(carry)
        carry = local[-1][:, chunk] + last_product[:, chunk] * carry
    # 3. Each state is its chunk's local state plus the entering state carried through the chunk so far.
    states = torch.stack(local, dim=2) + products * torch.stack(entering, dim=1).unsqueeze(2)
    return states.reshape(batch, chunks * width, size)[:, :steps]


def _adjoint(a: Tensor, grad: Tensor) -> Tensor:
    """Total gradients g_t = e_t + conj(a_{t+1}) g_{t+1} for a (B, T, N) or (N,) and e = ``grad`` (B, T, N)."""
    if a.dim() == 1:  # the coefficient of the reversed scan's first element meets a zero state: no shift needed
        return _prefix_scan(a.conj(), grad.flip(1)).flip(1)
    following = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1).conj()  # a_{t+1}, 0 after the end
    return _prefix_scan(following.flip(1), grad.flip(1)).flip(1)


def _reduce_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape`` (the coefficient's own shape)."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for dim, size in enumerate(shape):
        if size == 1 and grad.shape[dim] != 1:
            grad = grad.sum(dim, keepdim=True)
    return grad


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor, on_grad: ScanGradCallback | None) -> Tensor:
        coefficients = a if a.dim() == 1 else a.expand_as(b)  # (N,) stays time-invariant
        first = a.expand_as(b)[:, :1] * h0.unsqueeze(1) + b[:, :1]  # h0 folded into the first input
        states = _prefix_scan(coefficients, torch.cat([first, b[:, 1:]], dim=1))  # (B, T, N)
        ctx.save_for_backward(a, h0, states)
        ctx.on_grad = on_grad
        return states

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, h0, states = ctx.saved_tensors
        total = _adjoint(a if a.dim() == 1 else a.expand_as(grad), grad)  # (B, T, N)
        if ctx.on_grad is not None:
            ctx.on_grad(total)
        previous = torch.cat([h0.unsqueeze(1), states[:, :-1]], dim=1)  # h_{t-1}
        grad_a = _reduce_to(total * previous.conj(), a.shape)
        grad_h0 = total[:, 0] * a.expand_as(grad)[:, 0].conj()
        return grad_a, total, grad_h0, None


class _LogSpaceScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_a: Tensor, log_b: Tensor, h0: Tensor, on_grad: ScanGradCallback | None) -> Tensor:
        decay = torch.cumsum(log_a, dim=1)  # A_t = sum_{s<=t} log a_s, (B, T, N)
        driven = torch.exp(decay + torch.logcumsumexp(log_b - decay, dim=1))  # sum_s b_s prod_{s<r<=t} a_r
        states = torch.exp(decay) * h0.unsqueeze(1) + driven
        ctx.save_for_backward(log_a, log_b, h0, states)
        ctx.on_grad = on_grad
        return states

    @staticmethod
    def backward(ctx, grad: Tensor):
        log_a, log_b, h0, states = ctx.saved_tensors
        a = torch.exp(log_a)
        total = _adjoint(a, grad)
        if ctx.on_grad is not None:
            ctx.on_grad(total)
        previous = torch.cat([h0.unsqueeze(1), states[:, :-1]], dim=1)
        return total * a * previous, total * torch.exp(log_b), total[:, 0] * a[:, 0], None


def _check(b: Tensor, h0: Tensor) -> None:
    if b.dim() != 3 or tuple(h0.shape) != (b.shape[0], b.shape[2]):
        raise ValueError(f"expected inputs (B, T, N) and an initial state (B, N), got {tuple(b.shape)} and "
                         f"{tuple(h0.shape)}")


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, on_grad: ScanGradCallback | None = None) -> Tensor:
    """Every state of h_t = a_t h_{t-1} + b_t, by an associative scan (module docstring).

    Args:
        a: the coefficients, (B, T, N) or anything broadcastable to ``b`` ((N,) for a time-invariant
            diagonal); real or complex.
        b: the inputs (B, T, N).
        h0: the initial state (B, N).
        on_grad: called during backward with the total gradient dL/dh (B, T, N).

    Returns:
        The states (B, T, N), h_t at position t.
    """
    _check(b, h0)
    return _LinearScan.apply(a, b, h0, on_grad)


def log_space_scan(log_a: Tensor, log_b: Tensor, h0: Tensor, on_grad: ScanGradCallback | None = None) -> Tensor:
    """Every state of h_t = a_t h_{t-1} + b_t for positive a, b given as logs, by cumulative log-sum-exp.

    Args:
        log_a, log_b: log a_t and log b_t, (B, T, N) each (real).
        h0: the initial state (B, N), any sign.
        on_grad: called during backward with the total gradient dL/dh (B, T, N).

    Returns:
        The states (B, T, N).
    """
    _check(log_b, h0)
    return _LogSpaceScan.apply(log_a.expand_as(log_b), log_b, h0, on_grad)


def sequential_linear_recurrence(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The same recurrence as a step loop (the reference for the scans); shapes as :func:`linear_scan`."""
    _check(b, h0)
    a = a.expand_as(b)
    state, states = h0, []
    for t in range(b.shape[1]):
        state = a[:, t] * state + b[:, t]  # (B, N)
        states.append(state)
    return torch.stack(states, dim=1)
