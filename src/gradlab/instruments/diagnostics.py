"""Why a gradient curve falls: gate statistics, Jacobian spectra and Lyapunov exponents.

All are computed on request (say once an epoch, on a fixed batch), not on
every step, at the model's current parameters and from the zero initial
state (the model's default). All read the per-layer inputs and states from
:meth:`gradlab.nn.network.RecurrentNet.trajectories`, so cells know nothing
about them.

- :func:`gate_statistics` (table :data:`gradlab.store.schema.GATES`): per layer,
  direction, timestep and gate, the ``mean`` activation over batch and units
  and the fraction of ``saturated`` units, whose pre-activation lies beyond
  :data:`gradlab.nn.cells.SATURATION_THRESHOLD` of its sigmoid or tanh (a unit
  whose slope is below a quarter of the peak). Gates: i, f, g, o for the LSTM,
  plus ``c`` for the tanh it applies to the cell state (h = o * tanh(c); its
  "pre-activation" is c itself); r, z, n for the GRU (n's pre-activation is
  W_in x + b_in + r * (W_hn h + b_hn)); ``h`` for an RNN's activation, which
  gets a ``saturated`` row only for tanh and sigmoid. An RNN's ``h`` also gets
  ``slope``, the mean derivative f'(a) over batch and units, and
  ``slope_rms``, its root mean square: backpropagation multiplies dL/dh_t by
  W_hh^T diag(f'(a_t)) each step, so for W_hh with i.i.d. entries the
  gradient's norm shrinks per step by about spectral radius x ``slope_rms``.
  The modern cells name their own gates (``gate_activations``): z for minGRU,
  f and i (before normalisation) for minLSTM, h (ReLU) for IndRNN; the linear
  LRU and DIAGONAL have none (no rows).
- :func:`jacobian_spectral_norms` (table :data:`gradlab.store.schema.JACOBIAN`): the
  spectral norm of d h_last / d h_t of one layer's recurrence, its inputs held
  fixed, for every t, by power iteration with vector-Jacobian products (no
  dense Jacobian); :func:`jacobian_singular_values` (table
  :data:`gradlab.store.schema.JACOBIAN_SINGULAR_VALUES`) the top k of them at chosen
  gaps (both in :mod:`gradlab.instruments.spectra`).
- :func:`lyapunov_spectrum` (table :data:`gradlab.store.schema.LYAPUNOV`): the
  leading Lyapunov exponents of every layer's recurrence along the trajectory
  a batch drives (:mod:`gradlab.instruments.lyapunov`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gradlab.instruments.frames import concat_columns, measurement_frame
from gradlab.instruments.lyapunov import lyapunov_exponents, lyapunov_spectrum
from gradlab.instruments.recorder import recurrent_net
from gradlab.instruments.spectra import JACOBIAN_REDUCTIONS, jacobian_singular_values, jacobian_spectral_norms
from gradlab.nn.cells import SATURATION_THRESHOLD, LSTMCell, RecurrentCell, RNNCell, get_activation

__all__ = [
    "GATE_ACTIVATIONS", "JACOBIAN_REDUCTIONS", "activation_function", "gate_columns", "gate_parts",
    "gate_statistics", "gate_step_statistics", "jacobian_singular_values",
    "jacobian_spectral_norms", "lyapunov_exponents", "lyapunov_spectrum",
]

#: The nonlinearity each gate passes its pre-activation through.
GATE_ACTIVATIONS: dict[str, dict[str, str]] = {
    "LSTM": {"i": "sigmoid", "f": "sigmoid", "g": "tanh", "o": "sigmoid", "c": "tanh"},
    "GRU": {"r": "sigmoid", "z": "sigmoid", "n": "tanh"},
}
_NONLINEARITIES = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}


def activation_function(name: str):
    """The function a gate's activation ``name`` stands for: sigmoid, tanh, or any of :data:`ACTIVATIONS`."""
    return _NONLINEARITIES.get(name) or get_activation(name)


def _gate_activations(cell: RecurrentCell) -> dict[str, str | None]:
    gates = getattr(cell, "gate_activations", None)  # the modern cells name theirs (none for LRU and DIAGONAL)
    if gates is not None:
        return gates
    if isinstance(cell, RNNCell):
        return {"h": cell.nonlinearity}
    return GATE_ACTIVATIONS["LSTM" if isinstance(cell, LSTMCell) else "GRU"]


def elementwise_derivative(function, a: Tensor) -> Tensor:
    """f'(a) of an elementwise ``function``, by autograd (any activation, its own subgradient at kinks)."""
    with torch.enable_grad():
        point = a.detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(function(point).sum(), point)
    return slope  # same shape as a


def gate_statistics(
    model: nn.Module,
    x: Tensor,
    *,
    run_info: Mapping[str, object],
    step: int,
    epoch: int,
) -> pd.DataFrame:
    """Mean gate activations and saturated fractions per layer, direction and timestep.

    Args:
        model: an ``RNNModel`` or ``RecurrentNet``.
        x: a batch (B, T, F), for example a fixed validation batch.
        run_info: ``run_id`` and ``seed`` (see :class:`gradlab.instruments.recorder.GradientRecorder`).
        step: optimiser steps taken so far.
        epoch: the epoch of ``step``.

    Returns:
        A :data:`gradlab.store.schema.GATES` table: per (layer, direction), T rows for
        each gate and stat (module docstring).
    """
    return measurement_frame(gate_columns(model, x), model, "gates", run_info=run_info, step=step, epoch=epoch)


def gate_columns(model: nn.Module, x: Tensor) -> dict[str, np.ndarray]:
    """:func:`gate_statistics`' measured columns (layer, direction, timestep, gate, stat, value), no table built."""
    net = recurrent_net(model)
    parts: list[dict[str, np.ndarray]] = []
    with torch.no_grad():
        for (layer, direction), trajectory in net.trajectories(x).items():
            cell = trajectory.cell
            batch, steps, hidden = trajectory.h.shape
            x_proj = cell.project_input(trajectory.inputs).reshape(batch * steps, -1)  # (B*T, G*H)
            previous = cell.unpack_state(trajectory.previous().reshape(batch * steps, -1))
            pre = cell.preactivations(x_proj, previous)
            if trajectory.c is not None:
                pre["c"] = trajectory.c.reshape(batch * steps, hidden)
            for gate, activation in _gate_activations(cell).items():
                a = pre[gate].reshape(batch, steps, hidden)  # (B, T, H)
                function = _NONLINEARITIES.get(activation) or cell.activation
                stats = gate_step_statistics(a, activation, function, slope=isinstance(cell, RNNCell))
                parts.extend(gate_parts(layer, direction, gate, stats))
    return concat_columns(parts or [_no_gates()])


def gate_step_statistics(a: Tensor, activation: str, function, *, slope: bool, dims: tuple[int, int] = (-3, -1),
                         ) -> dict[str, Tensor]:
    """The statistics of one gate at each timestep, from its pre-activations ``a``.

    Args:
        a: ([S,] B, T, H) pre-activations (``dims`` names the batch and unit dimensions to average over).
        activation: its name (``saturated`` is measured for those in :data:`SATURATION_THRESHOLD`).
        function: the activation itself.
        slope: also ``slope`` and ``slope_rms``, of f'(a) (an RNN's ``h``).

    Returns:
        ``{stat: ([S,] T)}``, in the order of the table's rows.
    """
    stats = {"mean": function(a).mean(dim=dims)}  # ([S,] T)
    if activation in SATURATION_THRESHOLD:
        saturated = a.abs() > SATURATION_THRESHOLD[activation]
        stats["saturated"] = saturated.to(a.dtype).mean(dim=dims)
    if slope:
        derivative = elementwise_derivative(function, a)
        stats["slope"] = derivative.mean(dim=dims)
        stats["slope_rms"] = derivative.square().mean(dim=dims).sqrt()
    return stats


def gate_parts(layer: int, direction: str, gate: str, stats: Mapping[str, Tensor]) -> list[dict[str, np.ndarray]]:
    """Column chunks of one gate's rows: one chunk of T rows per statistic.

    ``stats`` holds ([S,] T) values: with a leading member dimension, each chunk's ``value`` is (S, T), for
    the caller to split, and the other columns are each member's.
    """
    parts = []
    for stat, values in stats.items():
        steps = values.shape[-1]
        parts.append({
            "layer": np.full(steps, layer, dtype=np.int64),
            "direction": np.full(steps, direction, dtype=object),
            "timestep": np.arange(steps, dtype=np.int64),
            "gate": np.full(steps, gate, dtype=object),
            "stat": np.full(steps, stat, dtype=object),
            "value": values.double().cpu().numpy(),
        })
    return parts


def _no_gates() -> dict[str, np.ndarray]:
    """The columns with no rows: a linear recurrence (LRU, DIAGONAL) has no gates."""
    return {"layer": np.zeros(0, dtype=np.int64), "direction": np.zeros(0, dtype=object),
            "timestep": np.zeros(0, dtype=np.int64), "gate": np.zeros(0, dtype=object),
            "stat": np.zeros(0, dtype=object), "value": np.zeros(0, dtype=np.float64)}
