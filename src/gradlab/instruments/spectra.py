"""Singular values of d h_last / d h_t, by products with the Jacobian, never a dense one.

For one layer and direction, the layer's inputs are held at their values on
the batch and h_last (h_{T-1} forward, h_0 backward) is a function of h_t
through the recurrence alone; for the LSTM c_t is held fixed, as in the
recorder's dL/dh_t (the path still runs through c_{t+1}, ..., c_last). Each
sample's Jacobian M_t = d h_last / d h_t is an (H, H) matrix; the whole
batch's is block-diagonal.

Both functions build *chains*: chain p starts at the p-th state in reading
order (plus a zero perturbation that autograd differentiates against) and
runs the rest of the recurrence. ``M^T u`` is a vector-Jacobian product and
``M v`` its double backward (the derivative of ``M^T u`` with respect to
``u``), for every chain and sample at once.

- :func:`jacobian_spectral_norms` (table :data:`gradlab.store.schema.JACOBIAN`):
  the largest singular value at every t, by power iteration.
- :func:`jacobian_singular_values` (table
  :data:`gradlab.store.schema.JACOBIAN_SINGULAR_VALUES`): the top k at chosen gaps
  T-1-t, by randomised subspace iteration (Halko, Martinsson & Tropp 2011,
  algorithm 4.4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gradlab.config import check_integer
from gradlab.instruments.frames import concat_columns, measurement_frame
from gradlab.instruments.recorder import recurrent_net, safe_norm
from gradlab.nn.cells import GRUCell, LSTMCell, RNNCell
from gradlab.nn.unroll import LayerTrajectory

#: How a batch's per-sample spectral norms become one value per row.
JACOBIAN_REDUCTIONS: tuple[str, ...] = ("mean", "max")
#: Cells whose Jacobian products come from dense per-step Jacobians (:class:`_DenseJacobian`); others chain steps.
CLASSIC_CELLS = (RNNCell, LSTMCell, GRUCell)


def _chained_final_states(trajectory: LayerTrajectory, perturbation: Tensor, starts: Sequence[int]) -> Tensor:
    """h_last as a function of an additive perturbation of the states at ``starts``.

    ``starts`` are ascending positions in reading order; chain i starts at
    ``starts[i]`` with h + perturbation[i] (c unchanged for the LSTM) and
    runs the rest of the recurrence on the fixed inputs. Chains are stacked
    along the batch, so each step advances every chain already started.

    Returns:
        (len(starts), B, H): row i is h_last of chain i.
    """
    cell = trajectory.cell
    batch, steps, hidden = trajectory.h.shape
    x_proj = cell.project_input(trajectory.inputs).detach()  # (B, T, G*H)
    order = list(trajectory.positions())
    is_lstm = trajectory.c is not None
    state, started = None, 0
    for position in range(starts[0], steps):
        t = order[position]
        if state is not None:
            state = cell.step(x_proj[:, t].repeat(started, 1), state)  # (started*B, H)
        if started < len(starts) and starts[started] == position:
            h_start = trajectory.h[:, t] + perturbation[started]  # (B, H)
            if state is None:
                state = (h_start, trajectory.c[:, t]) if is_lstm else h_start
            elif is_lstm:
                state = (torch.cat([state[0], h_start]), torch.cat([state[1], trajectory.c[:, t]]))
            else:
                state = torch.cat([state, h_start])
            started += 1
    final = state[0] if is_lstm else state  # (chains*B, H)
    return final.view(len(starts), batch, hidden)


class _ChainJacobian:
    """Products with the block-diagonal Jacobian of chained final states."""

    def __init__(self, trajectory: LayerTrajectory, starts: Sequence[int]) -> None:
        batch, _, hidden = trajectory.h.shape
        self.perturbation = trajectory.h.new_zeros(len(starts), batch, hidden, requires_grad=True)
        self.final = _chained_final_states(trajectory, self.perturbation, starts)  # (C, B, H)
        self.cotangent = torch.zeros_like(self.final, requires_grad=True)
        (self.transposed,) = torch.autograd.grad(
            self.final, self.perturbation, self.cotangent, create_graph=True
        )  # M^T u, linear in u

    def times(self, v: Tensor, keep: bool = True) -> Tensor:
        """M v for every chain and sample; ``keep=False`` frees the graph."""
        (jv,) = torch.autograd.grad(self.transposed, self.cotangent, v, retain_graph=keep)
        return jv

    def transposed_times(self, u: Tensor) -> Tensor:
        """M^T u for every chain and sample."""
        (jtu,) = torch.autograd.grad(self.final, self.perturbation, u, retain_graph=True)
        return jtu


class _DenseJacobian:
    """The same products as :class:`_ChainJacobian` from dense per-sample Jacobians, for the classic cells.

    One batched backward gives every step's state Jacobian A_q = d s_{q+1} / d s_q (B, S, S) at once, and
    M_p = E_h A_{last-1} ... A_p (E_h keeps h of the packed state s = h or (h, c); the columns of h only, c
    held fixed) follows by one (B, H, S) x (B, S, S) product per step: T matrix products instead of the chains'
    T^2/2 cell steps, differentiated twice per power iteration. Equal to the chains' products up to rounding.
    """

    def __init__(self, trajectory: LayerTrajectory) -> None:
        cell = trajectory.cell
        batch, steps, hidden = trajectory.h.shape
        order = list(trajectory.positions())
        states = trajectory.states.detach()  # (B, T, S), input time
        size = states.shape[2]
        x_proj = cell.project_input(trajectory.inputs).detach()  # (B, T, G*H)
        # Row (q, b): the state at reading position q and the input the next step reads.
        state = states[:, order[:-1]].transpose(0, 1).reshape(-1, size).requires_grad_(True)  # ((T-1)*B, S)
        inputs = x_proj[:, order[1:]].transpose(0, 1).reshape(state.shape[0], -1)  # ((T-1)*B, G*H)
        jacobians = state.new_zeros(0, batch, size, size)
        if state.shape[0]:
            with torch.enable_grad():
                following = cell.pack_state(cell.step(inputs, cell.unpack_state(state)))  # ((T-1)*B, S)
                basis = torch.eye(size, dtype=state.dtype, device=state.device)
                (rows,) = torch.autograd.grad(following, state, basis.unsqueeze(1).expand(size, *following.shape),
                                              is_grads_batched=True)  # (S, (T-1)*B, S): row k of each A
            jacobians = rows.permute(1, 0, 2).reshape(steps - 1, batch, size, size)  # A_q, (T-1, B, S, S)
        chained = [states.new_zeros(batch, hidden, size)]
        chained[0][:, :, :hidden] = torch.eye(hidden, dtype=states.dtype, device=states.device)  # d h_last / d s_last
        for q in range(steps - 2, -1, -1):
            chained.append(torch.bmm(chained[-1], jacobians[q]))  # d h_last / d s_q
        self.matrices = torch.stack(chained[::-1])[..., :hidden]  # (T, B, H, H): M_p, chain p in reading order

    def times(self, v: Tensor, keep: bool = True) -> Tensor:
        """M v for every chain and sample (``keep`` as in :class:`_ChainJacobian`, unused)."""
        return torch.matmul(self.matrices, v.unsqueeze(-1)).squeeze(-1)

    def transposed_times(self, u: Tensor) -> Tensor:
        """M^T u for every chain and sample."""
        return torch.matmul(self.matrices.transpose(-1, -2), u.unsqueeze(-1)).squeeze(-1)


def _row_normalised(v: Tensor) -> Tensor:
    # Each (chain, sample) row is its own power iteration; guard a zero Jacobian.
    return v / safe_norm(v, dim=-1).unsqueeze(-1).to(v.dtype).clamp_min(torch.finfo(v.dtype).tiny)


def jacobian_spectral_norms(
    model: nn.Module,
    x: Tensor,
    *,
    run_info: Mapping[str, object],
    step: int,
    epoch: int,
    iterations: int = 20,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> pd.DataFrame:
    """Spectral norms of d h_last / d h_t for every layer, direction and t, by power iteration.

    Each sample's largest singular value is estimated by ``iterations`` steps
    of power iteration on M^T M (module docstring), for all t and samples at
    once. The estimate ||M v|| never exceeds the true value.

    Cost: T^2/2 cell steps of B rows per layer and direction, kept for the
    backward passes; use a small batch (tens of samples) for long sequences.

    Args:
        model: an ``RNNModel`` or ``RecurrentNet``.
        x: a batch (B, T, F).
        run_info: ``run_id`` and ``seed`` (see :class:`gradlab.instruments.recorder.GradientRecorder`).
        step: optimiser steps taken so far.
        epoch: the epoch of ``step``.
        iterations: power-iteration steps, >= 1.
        reduction: ``mean``: the mean over samples of each sample's spectral
            norm (the typical sample's gain); ``max``: the largest, which is
            the spectral norm of the whole batch's block-diagonal Jacobian.
        generator: randomness of the starting vectors.

    Returns:
        A :data:`gradlab.store.schema.JACOBIAN` table, one row per layer, direction
        and timestep; ``distance`` is the number of steps from t to the last
        state, and the last state's own row is 1.
    """
    if reduction not in JACOBIAN_REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {list(JACOBIAN_REDUCTIONS)}")
    check_integer("iterations", iterations)
    net = recurrent_net(model)
    with torch.no_grad():
        trajectories = net.trajectories(x)
    parts: list[dict[str, np.ndarray]] = []
    for (layer, direction), trajectory in trajectories.items():
        steps = trajectory.h.shape[1]
        with torch.enable_grad():
            dense = isinstance(trajectory.cell, CLASSIC_CELLS)
            jacobian = _DenseJacobian(trajectory) if dense else _ChainJacobian(trajectory, range(steps))
            shape, dtype = (steps, *trajectory.h.shape[::2]), trajectory.h.dtype  # (chains, B, H)
            v = torch.randn(shape, generator=generator, dtype=dtype, device="cpu").to(trajectory.h.device)
            v = _row_normalised(v)
            for _ in range(iterations):
                v = _row_normalised(jacobian.transposed_times(jacobian.times(v)))
            jv = jacobian.times(v, keep=False)
        norms = safe_norm(jv.detach(), dim=-1)  # (T, B), by chain = steps before the last
        reduced = norms.mean(dim=1) if reduction == "mean" else norms.amax(dim=1)  # (T,)
        distance = np.arange(steps, dtype=np.int64)[::-1].copy()  # chain p is T-1-p steps from the end
        timestep = distance if direction == "backward" else np.arange(steps, dtype=np.int64)
        order = np.argsort(timestep)
        parts.append({
            "layer": np.full(steps, layer, dtype=np.int64),
            "direction": np.full(steps, direction, dtype=object),
            "timestep": timestep[order],
            "distance": distance[order],
            "spectral_norm": reduced.double().cpu().numpy()[order],
        })
    return measurement_frame(concat_columns(parts), model, "jacobian", run_info=run_info, step=step, epoch=epoch)


def default_gaps(steps: int, count: int = 24) -> list[int]:
    """About ``count`` distances 1 .. steps-1, spaced evenly in log (all of them for short sequences)."""
    if steps < 2:
        return [0]
    return sorted({int(round(g)) for g in np.geomspace(1, steps - 1, count)})


def _check_gaps(gaps: Sequence[int], steps: int) -> list[int]:
    if len(gaps) == 0:
        raise ValueError("gaps must name at least one distance T-1-t")
    return sorted({check_integer("gaps entry", int(g) if isinstance(g, np.integer) else g, 0, steps - 1,
                                 " (a distance T-1-t)") for g in gaps})


def _orthonormal_columns(z: Tensor, columns: int) -> Tensor:
    """(C, B*l, H) rows as per-block column sets -> orthonormal (C, B*l, H) rows."""
    chains, rows, hidden = z.shape
    blocks = z.view(chains, rows // columns, columns, hidden).transpose(2, 3)  # (C, B, H, l)
    q = torch.linalg.qr(blocks).Q
    return q.transpose(2, 3).reshape(chains, rows, hidden)


def jacobian_singular_values(
    model: nn.Module,
    x: Tensor,
    k: int = 4,
    *,
    gaps: Sequence[int] | None = None,
    iterations: int = 8,
    oversample: int = 4,
    generator: torch.Generator | None = None,
    run_info: Mapping[str, object] | None = None,
    step: int | None = None,
    epoch: int | None = None,
) -> pd.DataFrame:
    """The top ``k`` singular values of d h_last / d h_t as a function of the gap T-1-t.

    For each layer and direction and each gap g (t = T-1-g forward, t = g
    backward), each sample's M_t is sketched by ``k + oversample`` random
    directions refined by ``iterations`` rounds of subspace iteration with
    M^T M (module docstring); the singular values of M_t V are the
    estimates, each a lower bound that converges to the true value. Samples
    are stacked as independent rows, so the products run for all gaps,
    samples and directions at once; nothing (T, H, H)-sized is formed.

    Cost: sum of the gaps cell steps of B*(k + oversample) rows per layer and
    direction, kept for the backward passes (the default gaps are about 24,
    log-spaced).

    Args:
        model: an ``RNNModel`` or ``RecurrentNet``.
        x: a batch (B, T, F).
        k: how many of the largest singular values, 1 <= k <= H (2H for the LRU's packed complex state).
        gaps: distances T-1-t to measure, in [0, T-1]; default :func:`default_gaps`.
        iterations: subspace-iteration rounds, >= 0.
        oversample: extra sketch directions (capped so that k + oversample <= H).
        generator: randomness of the sketch (a fixed seed when None).
        run_info, step, epoch: the run's identifying columns, where given
            (see :func:`gradlab.instruments.frames.measurement_frame`).

    Returns:
        A :data:`gradlab.store.schema.JACOBIAN_SINGULAR_VALUES` table: per layer,
        direction, gap and index (0 = largest), the mean over samples and the
        per-sample standard deviation.
    """
    net = recurrent_net(model)
    hidden = net.cells[0].state_size if net.kind != "LSTM" else net.hidden_size  # 2H for the LRU's [Re, Im] state
    check_integer("k", k, 1, hidden, " (the state size)")
    check_integer("iterations", iterations, 0)
    columns = min(k + check_integer("oversample", oversample, 0), hidden)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.no_grad():
        trajectories = net.trajectories(x)
    parts: list[dict[str, np.ndarray]] = []
    for (layer, direction), trajectory in trajectories.items():
        batch, steps, _ = trajectory.h.shape
        chosen = _check_gaps(default_gaps(steps) if gaps is None else gaps, steps)
        starts = [steps - 1 - g for g in reversed(chosen)]  # ascending reading positions
        replicated = LayerTrajectory(
            trajectory.cell, trajectory.inputs.repeat_interleave(columns, 0),
            trajectory.h.repeat_interleave(columns, 0),
            None if trajectory.c is None else trajectory.c.repeat_interleave(columns, 0),
            trajectory.initial, trajectory.reverse,
        )  # row b*l + j is sample b's j-th direction
        with torch.enable_grad():
            jacobian = _ChainJacobian(replicated, starts)
            sketch = torch.randn(jacobian.final.shape, generator=generator, dtype=torch.float64)
            v = _orthonormal_columns(sketch.to(jacobian.final), columns)
            for _ in range(iterations):
                v = _orthonormal_columns(jacobian.transposed_times(jacobian.times(v)), columns)
            mv = jacobian.times(v, keep=False).detach()  # (C, B*l, H)
        blocks = mv.view(len(starts), batch, columns, hidden).transpose(2, 3)  # (C, B, H, l)
        values = torch.linalg.svdvals(blocks.double())[..., :k]  # (C, B, k), largest first
        spread = values.std(dim=1) if batch > 1 else torch.full_like(values[:, 0], float("nan"))
        distance = steps - 1 - np.repeat(np.array(starts, dtype=np.int64), k)
        rows = len(distance)
        parts.append({
            "layer": np.full(rows, layer, dtype=np.int64),
            "direction": np.full(rows, direction, dtype=object),
            "timestep": distance if direction == "backward" else steps - 1 - distance,
            "distance": distance,
            "index": np.tile(np.arange(k, dtype=np.int64), len(starts)),
            "singular_value": values.mean(dim=1).reshape(-1).cpu().numpy(),
            "singular_value_std": spread.reshape(-1).cpu().numpy(),
        })
    return measurement_frame(
        concat_columns(parts), model, "jacobian_singular_values", run_info=run_info, step=step, epoch=epoch
    )
