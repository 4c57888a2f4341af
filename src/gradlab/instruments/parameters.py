"""Per-unit gradients of the parameters that set each unit's memory: the curse of memory, unit by unit.

dL/dh_t says how much gradient reaches a state; this says how hard the loss
pulls on the parameters that decide how long each unit remembers. For a
diagonal recurrence that is one number per eigenvalue: dL/dlambda_i
(DIAGONAL), dL/du_i (INDRNN), dL/dnu_i and dL/dtheta_i (LRU). As |lambda_i|
approaches 1 the plain recurrence's sensitivity to lambda_i explodes
(:mod:`gradlab.instruments.sensitivity`), and this table shows it in a run.

:func:`unit_parameter_gradients` reads the ``.grad`` of the recurrent
parameters after a backward pass, so it sees what that pass accumulated
(zero the gradients before the step, as a training loop does). Cells know
nothing of it: the mapping from a cell to its memory parameters lives here.

:func:`unit_memory` says how long each unit remembers at the time of the
recording (column ``memory``): |lambda_i| for DIAGONAL and the LRU, |u_i| for
IndRNN, and for minGRU/minLSTM the mean retention 1 - z_t or f'_t over a
batch and its timesteps (their coefficient of h_{t-1} depends on the input).
Plotting ``grad_norm`` against ``memory`` shows the curse of memory.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gradlab.nn.cells import RecurrentCell
from gradlab.nn.lru import LRUCell
from gradlab.nn.modern import DiagonalCell, IndRNNCell, MinGRUCell, MinLSTMCell
from gradlab.nn.network import RecurrentNet


def _rows(cell: RecurrentCell, gate: str, grad_weight: Tensor, grad_bias: Tensor | None) -> Tensor:
    """Per-unit L2 norm of a gate's input-weight rows and bias entries, (H,)."""
    rows = grad_weight[cell.chunk(gate)]  # (H, I)
    squares = rows.double().square().sum(dim=1)
    if grad_bias is not None:
        squares = squares + grad_bias[cell.chunk(gate)].double().square()
    return squares.sqrt()


def _zeros_if_none(parameter: Tensor | None) -> Tensor | None:
    if parameter is None:
        return None
    return parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)


def memory_parameter_gradients(cell: RecurrentCell) -> dict[str, Tensor]:
    """Each memory parameter's per-unit gradient norm, {name: (H,) float64} (schema.PARAMETER_GRADIENTS)."""
    if isinstance(cell, LRUCell):
        return {name: _zeros_if_none(getattr(cell, name)).double().abs() for name in ("nu_log", "theta_log")}
    if isinstance(cell, (DiagonalCell, IndRNNCell)):
        return {"weight_hh": _zeros_if_none(cell.weight_hh).double().abs()}
    if isinstance(cell, (MinGRUCell, MinLSTMCell)):
        gates = ("z",) if isinstance(cell, MinGRUCell) else ("f", "i")
        weight, bias = _zeros_if_none(cell.weight_ih), _zeros_if_none(cell.bias_ih)
        return {gate: _rows(cell, gate, weight, bias) for gate in gates}
    grad = _zeros_if_none(cell.weight_hh).double()  # (G*H, H): unit i owns row i of every gate
    per_gate = grad.view(cell.num_chunks, cell.hidden_size, cell.hidden_size)
    return {"weight_hh": per_gate.square().sum(dim=(0, 2)).sqrt()}


#: Cells whose memory depends on their input (measured on a batch by :func:`unit_memory`).
INPUT_GATED = (MinGRUCell, MinLSTMCell)


def needs_inputs(net: RecurrentNet) -> bool:
    """Whether :func:`unit_memory` of ``net`` needs a batch (it has minGRU or minLSTM layers)."""
    return any(isinstance(net.cell(layer, direction), INPUT_GATED)
               for layer in range(net.num_layers) for direction in net.directions)


def unit_memory(net: RecurrentNet, x: Tensor | None = None) -> dict[tuple[int, str], np.ndarray]:
    """Each unit's memory, {(layer, direction): (H,) float64}: |lambda_i|, |u_i|, or the mean retention on ``x``.

    The classic cells have no per-unit memory coefficient (NaN), nor do minGRU/minLSTM layers without ``x``.
    """
    found: dict[tuple[int, str], np.ndarray] = {}
    with torch.no_grad():
        trajectories = net.trajectories(x) if x is not None and needs_inputs(net) else {}
        for layer in range(net.num_layers):
            for direction in net.directions:
                cell = net.cell(layer, direction)
                values = torch.full((cell.hidden_size,), float("nan"), dtype=torch.float64)
                if isinstance(cell, LRUCell):
                    values = cell.eigenvalues().abs().double()
                elif isinstance(cell, (DiagonalCell, IndRNNCell)):
                    values = cell.weight_hh.detach().double().abs()
                elif isinstance(cell, INPUT_GATED) and (layer, direction) in trajectories:
                    trajectory = trajectories[(layer, direction)]
                    x_proj = cell.project_input(trajectory.inputs)  # (B, T, G*H)
                    retention = cell.jacobian_diagonal(x_proj, trajectory.h)  # 1 - z_t or f'_t, (B, T, H)
                    values = retention.double().mean(dim=(0, 1))
                found[(layer, direction)] = values.cpu().numpy()
    return found


def unit_parameter_gradients(net: RecurrentNet, *, step: int, epoch: int,
                             memory: dict[tuple[int, str], np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The columns (no run columns) of one step's parameter-gradient rows, for every layer and direction.

    ``memory`` (from :func:`unit_memory`) fills column ``memory``; without it the column is what
    :func:`unit_memory` gives without a batch.
    """
    memory = unit_memory(net) if memory is None else memory
    parts: dict[str, list] = {name: [] for name in ("layer", "direction", "parameter", "unit", "grad_norm",
                                                    "memory")}
    with torch.no_grad():
        for layer in range(net.num_layers):
            for direction in net.directions:
                for name, norms in memory_parameter_gradients(net.cell(layer, direction)).items():
                    count = norms.numel()
                    parts["layer"].append(np.full(count, layer, dtype=np.int64))
                    parts["direction"].append(np.full(count, direction, dtype=object))
                    parts["parameter"].append(np.full(count, name, dtype=object))
                    parts["unit"].append(np.arange(count, dtype=np.int64))
                    parts["grad_norm"].append(norms.cpu().numpy())
                    parts["memory"].append(memory[(layer, direction)])
    columns = {name: np.concatenate(values) for name, values in parts.items()}
    rows = len(columns["unit"])
    columns["memory"] = columns.pop("memory")  # after grad_norm, as in the schema
    return {"epoch": np.full(rows, epoch, dtype=np.int64), "step": np.full(rows, step, dtype=np.int64), **columns}
