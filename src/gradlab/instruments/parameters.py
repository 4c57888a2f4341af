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


def unit_parameter_gradients(net: RecurrentNet, *, step: int, epoch: int) -> dict[str, np.ndarray]:
    """The columns (no run columns) of one step's parameter-gradient rows, for every layer and direction."""
    parts: dict[str, list] = {name: [] for name in ("layer", "direction", "parameter", "unit", "grad_norm")}
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
    columns = {name: np.concatenate(values) for name, values in parts.items()}
    rows = len(columns["unit"])
    return {"epoch": np.full(rows, epoch, dtype=np.int64), "step": np.full(rows, step, dtype=np.int64), **columns}
