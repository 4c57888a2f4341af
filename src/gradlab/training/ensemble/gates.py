"""Gate statistics of every member of an ensemble, measured in one batched pass.

A single run measures its gates (:func:`gradlab.instruments.diagnostics.gate_columns`)
on a probe of a few validation samples after every epoch: at that size each of
the pass's operations costs its call, not its arithmetic, so S members measured
one by one cost about S times one. :func:`member_gate_columns` runs the members'
layers as the ensemble trains them (one batched matmul per step for all members)
and forms every gate's pre-activations for all members and timesteps at once.
Its columns are each member's own ``gate_columns``, to rounding: the layers here
are the hand-written ones, and the single model's statistics come from its
plain cell unroll.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gradlab.config.vocabulary import parse_mode
from gradlab.instruments.diagnostics import GATE_ACTIVATIONS, activation_function, gate_parts, gate_step_statistics
from gradlab.instruments.frames import concat_columns
from gradlab.nn.bptt import recurrence
from gradlab.nn.bptt.steps import previous_states, project
from gradlab.training.ensemble.model import EnsembleModel

__all__ = ["member_gate_columns"]


def member_gate_columns(ensemble: EnsembleModel, x: Tensor) -> list[dict[str, np.ndarray]]:
    """Each member's :func:`~gradlab.instruments.diagnostics.gate_columns` on the same batch ``x`` (B, T, F).

    Returns:
        One dict of columns (layer, direction, timestep, gate, stat, value) per member, in member order.
    """
    kind, nonlinearity = parse_mode(ensemble.mode)
    gates = GATE_ACTIVATIONS[kind] if kind in GATE_ACTIVATIONS else {"h": nonlinearity}
    members, batch, hidden = ensemble.num_members, x.shape[0], ensemble.hidden_size
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in range(members)]
    with torch.no_grad():
        layer_input = x.transpose(0, 1).expand(members, -1, -1, -1)  # (S, T, B, F): every member reads x
        for layer, cell in enumerate(ensemble.rnn.cells):
            zeros = x.new_zeros(members, batch, hidden)
            state = (zeros, zeros) if kind == "LSTM" else zeros
            outputs, _ = recurrence(ensemble.mode, layer_input, cell.weight_ih, cell.bias_ih, cell.weight_hh,
                                    cell.bias_hh, state)  # (S, T, B, H)
            input_term = project(layer_input, cell.weight_ih, cell.bias_ih)  # (S, T, B, G*H)
            hidden_term = project(previous_states(outputs, zeros, reverse=False), cell.weight_hh, cell.bias_hh)
            pre = _preactivations(kind, input_term, hidden_term)  # each (S, T, B, H)
            for gate, activation in gates.items():
                stats = gate_step_statistics(pre[gate], activation, activation_function(activation),
                                             slope=kind == "RNN", dims=(2, 3))  # each (S, T)
                for part in gate_parts(layer, "forward", gate, stats):  # values (S, T); the labels each member's
                    for member, member_parts in enumerate(parts):
                        member_parts.append({**part, "value": part["value"][member]})
            layer_input = outputs
    return [concat_columns(member_parts) for member_parts in parts]


def _preactivations(kind: str, input_term: Tensor, hidden_term: Tensor) -> dict[str, Tensor]:
    """Every gate's pre-activation from the two projections, as the cells' ``preactivations`` form them.

    An LSTM's ``c`` (the cell state, which its tanh reads) runs the cell's recurrence c' = f c + i g over the
    gates; it reads nothing else.
    """
    if kind == "GRU":
        x_r, x_z, x_n = input_term.chunk(3, dim=-1)
        h_r, h_z, h_n = hidden_term.chunk(3, dim=-1)
        reset = x_r + h_r
        return {"r": reset, "z": x_z + h_z, "n": x_n + torch.sigmoid(reset) * h_n}
    total = input_term + hidden_term
    if kind != "LSTM":
        return {"h": total}
    pre = dict(zip("ifgo", total.chunk(4, dim=-1)))
    forget, written = torch.sigmoid(pre["f"]), torch.sigmoid(pre["i"]) * torch.tanh(pre["g"])
    cells = torch.empty_like(written)  # (S, T, B, H)
    c = torch.zeros_like(written[:, 0])
    for t in range(cells.shape[1]):
        c = torch.addcmul(written[:, t], forget[:, t], c, out=cells[:, t])
    pre["c"] = cells
    return pre
