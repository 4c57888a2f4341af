"""Lyapunov exponents of each layer's recurrence along the trajectory a batch drives.

A layer's state s_t (h_t, or (h_t, c_t) for the LSTM) follows
s_t = f(x_t, s_{t-1}) with its input sequence x held at its values on the
batch. The exponents are the growth rates, in natural log per step, of
volumes spanned by perturbations of the state carried along by the per-step
Jacobians J_t = d s_t / d s_{t-1}: the largest one sets the exponential rate
at which gradients through time vanish (< 0) or explode (> 0) (Vogt et al.
2022; Engelken 2023, "Gradient flossing").

They are estimated by the standard QR method (Benettin et al. 1980; Geist,
Parlitz & Lauterborn 1990): an orthonormal basis Q (n, k) is pushed through
every step, J_t Q = Q' R, and

    lambda_i = 1 / (T - warmup) * sum over steps after the warmup of log |R_ii|.

J_t Q comes from the cell's own ``step`` by autograd (:func:`jacobian_times`,
the samples and the k basis vectors stacked as rows of one batch), so any
activation works and the (n, n) Jacobian is never formed: the cost grows
with k. Everything is differentiable, so the exponents can be trained on
(:mod:`gradlab.instruments.remedies`).

The elementwise cells (:mod:`gradlab.nn.modern`, :mod:`gradlab.nn.lru`) have a
diagonal step Jacobian (``jacobian_diagonal``: diag(lambda) for DIAGONAL,
diag(u relu') for IndRNN, diag(1 - z_t) for minGRU, diag(f'_t) for minLSTM,
the complex diag(lambda) for the LRU). Products of diagonal matrices need no
QR: every coordinate grows on its own, and the exponents are exactly the
per-coordinate averages of log |d_t,i| over the steps after the warmup,
sorted (:func:`diagonal_log_gains`; the LRU's real and imaginary coordinates
of a unit both grow by |lambda_i|). The basis plays no part there.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gradlab.config import check_integer
from gradlab.instruments.frames import concat_columns, measurement_frame
from gradlab.instruments.recorder import recurrent_net
from gradlab.nn.cells import RecurrentCell
from gradlab.nn.unroll import LayerTrajectory


def default_warmup(steps: int) -> int:
    """Steps that only align the basis before the estimate starts: a tenth of the sequence."""
    return steps // 10


def jacobian_times(cell: RecurrentCell, x_proj: Tensor, previous: Tensor, basis: Tensor) -> Tensor:
    """J Q for one step of ``cell``, with J = d s' / d s at each sample's previous state.

    The k columns of each sample's basis are stacked as rows of one batch, and
    J v comes from a double backward: u -> u^T J is linear in u, and its
    derivative with respect to u, applied to v, is J v. Differentiable (with
    respect to parameters and ``previous``) when gradients are enabled.

    Args:
        cell: the cell.
        x_proj: projected inputs of this step (B, G*H).
        previous: packed previous states (B, n).
        basis: (B, n, k).

    Returns:
        (B, n, k).
    """
    differentiable = torch.is_grad_enabled()
    batch, size, count = basis.shape
    with torch.enable_grad():
        rows = previous.repeat_interleave(count, 0)  # (B*k, n): sample b's rows b*k .. b*k+k-1
        if not (differentiable and rows.requires_grad):
            rows = rows.detach().requires_grad_()
        moved = cell.pack_state(cell.step(x_proj.repeat_interleave(count, 0), cell.unpack_state(rows)))
        cotangent = torch.zeros_like(moved, requires_grad=True)
        (transposed,) = torch.autograd.grad(moved, rows, cotangent, create_graph=True)  # u^T J
        tangents = basis.transpose(1, 2).reshape(batch * count, size)  # (B*k, n)
        (product,) = torch.autograd.grad(transposed, cotangent, tangents, create_graph=differentiable)  # J v
    return product.reshape(batch, count, size).transpose(1, 2)


def _check_k(k: int | None, size: int) -> int:
    return size if k is None else check_integer("k", k, 1, size, " (the state size; None for all)")


def _check_warmup(warmup: int | None, steps: int) -> int:
    warmup = default_warmup(steps) if warmup is None else warmup
    return check_integer("warmup", warmup, 0, steps - 1, f" so that one of the {steps} steps is averaged")


def random_basis(size: int, k: int, generator: torch.Generator | None = None, like: Tensor | None = None) -> Tensor:
    """An (size, k) matrix with orthonormal columns: the first k of Q of a standard normal (size, size) draw.

    Drawing the whole square keeps the first columns the same for every k, so
    the k leading estimates do not depend on how many are asked for. Seed 0
    when no generator is given.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64)[:, :k]).Q
    return q if like is None else q.to(like)


def diagonal_log_gains(trajectory: LayerTrajectory) -> Tensor | None:
    """log |d h_t / d h_{t-1}| per step and packed state entry, (B, T, n), for cells with a diagonal step Jacobian.

    None for the other cells. For the LRU the complex state's real and
    imaginary entries of unit i both get log |lambda_i|.
    """
    cell = trajectory.cell
    if getattr(cell, "jacobian_diagonal", None) is None:
        return None
    diagonal = cell.jacobian_diagonal(cell.project_input(trajectory.inputs), trajectory.previous())  # (B, T, H)
    gains = diagonal.abs().log()
    return torch.cat([gains, gains], dim=-1) if diagonal.is_complex() else gains


def lyapunov_exponents(
    trajectory: LayerTrajectory,
    k: int | None = None,
    *,
    warmup: int | None = None,
    basis: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Each sample's k leading Lyapunov exponents of one layer and direction.

    Differentiable with respect to the cell's parameters and the trajectory
    when they require gradients.

    Args:
        trajectory: from :meth:`gradlab.nn.network.RecurrentNet.trajectories`.
        k: how many exponents, 1 <= k <= state size (H, or 2H for the LSTM); all when None.
        warmup: leading steps (in reading order) that only align the basis;
            default :func:`default_warmup`.
        basis: the starting basis, (n, k) or (B, n, k) with orthonormal columns;
            :func:`random_basis` from ``generator`` when None (unused for a diagonal Jacobian, whose
            exponents are exact: module docstring).
        generator: randomness of the default basis.

    Returns:
        (B, k), largest first up to the estimate's noise (natural log per step).
    """
    cell = trajectory.cell
    batch, steps, _ = trajectory.h.shape
    size = cell.state_size
    k = _check_k(k if basis is None else basis.shape[-1], size)
    warmup = _check_warmup(warmup, steps)
    gains = diagonal_log_gains(trajectory)
    if gains is not None:  # exact for a diagonal Jacobian (module docstring)
        averaged = gains[:, list(trajectory.positions())[warmup:]].mean(dim=1)  # (B, n)
        return averaged.sort(dim=1, descending=True).values[:, :k]
    x_proj = cell.project_input(trajectory.inputs)  # (B, T, G*H)
    previous = trajectory.previous()  # (B, T, n)
    q = random_basis(size, k, generator, like=previous) if basis is None else basis.to(previous)
    q = q.expand(batch, size, k)
    growth = previous.new_zeros(batch, k)
    for position, t in enumerate(trajectory.positions()):
        q, r = torch.linalg.qr(jacobian_times(cell, x_proj[:, t], previous[:, t], q))  # J_t Q = Q' R
        if position >= warmup:
            growth = growth + r.diagonal(dim1=-2, dim2=-1).abs().log()  # (B, k)
    return growth / (steps - warmup)


def lyapunov_spectrum(
    model: nn.Module,
    x: Tensor,
    k: int | None = None,
    warmup: int | None = None,
    *,
    generator: torch.Generator | None = None,
    run_info: Mapping[str, object] | None = None,
    step: int | None = None,
    epoch: int | None = None,
) -> pd.DataFrame:
    """The k leading Lyapunov exponents of every layer and direction's recurrence on ``x``.

    Each sample of ``x`` drives its own trajectory from the zero state; the
    exponents are estimated per sample (:func:`lyapunov_exponents`) and
    summarised over the batch.

    Cost: per layer and direction and step, a cell step on B*k rows with its
    double backward, and a batched QR of B (n, k) matrices (see
    ``benchmarks/bench_lyapunov.py``).

    Args:
        model: an ``RNNModel`` or ``RecurrentNet``.
        x: a batch (B, T, F).
        k: exponents per layer and direction; all (H, or 2H for the LSTM) when None.
        warmup: steps before the average starts; default a tenth of T (20 of 200).
        generator: randomness of the starting basis (a fixed seed when None).
        run_info, step, epoch: the run's identifying columns, where given
            (see :func:`gradlab.instruments.frames.measurement_frame`).

    Returns:
        A :data:`gradlab.store.schema.LYAPUNOV` table: per layer, direction and
        index (0 = largest), the mean exponent over samples and the
        per-sample standard deviation.
    """
    net = recurrent_net(model)
    parts: list[dict[str, np.ndarray]] = []
    with torch.no_grad():
        for (layer, direction), trajectory in net.trajectories(x).items():
            exponents = lyapunov_exponents(trajectory, k, warmup=warmup, generator=generator)  # (B, k)
            # Sort each sample's estimates: with a finite horizon they can come out of order.
            exponents = exponents.double().sort(dim=1, descending=True).values
            count = exponents.shape[1]
            steps = trajectory.h.shape[1]
            used = _check_warmup(warmup, steps)
            spread = exponents.std(dim=0) if exponents.shape[0] > 1 else torch.full((count,), float("nan"))
            parts.append({
                "layer": np.full(count, layer, dtype=np.int64),
                "direction": np.full(count, direction, dtype=object),
                "index": np.arange(count, dtype=np.int64),
                "exponent": exponents.mean(dim=0).cpu().numpy(),
                "exponent_std": spread.cpu().numpy(),
                "warmup": np.full(count, used, dtype=np.int64),
                "timesteps": np.full(count, steps - used, dtype=np.int64),
            })
    return measurement_frame(concat_columns(parts), model, "lyapunov", run_info=run_info, step=step, epoch=epoch)
