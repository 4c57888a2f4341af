"""Whole-sequence recurrent layers with a hand-written backprop-through-time.

:func:`bptt_unroll` computes exactly what :func:`gradlab.models.unroll_direction`
computes, for the cells whose derivative it knows (LSTM, GRU, and RNNs with
tanh or relu), as one ``torch.autograd.Function`` per layer and direction:

- the forward pass runs the recurrence without building an autograd graph,
  keeping the gate activations it needs;
- the backward pass walks t = T-1 .. 0 once, computing dL/dh_t (and dL/dc_t)
  — the total gradient through time and from above — with a handful of
  tensor operations per step; every factor that does not depend on the
  recurrence is computed for all timesteps at once before the loop, and the
  recurrent weight gradient is a single matmul over all steps.

Because the backward loop holds dL/dh_t anyway, it hands each one to an
optional ``on_grad(t, name, grad)`` callback: that is how gradient
recording costs almost nothing on this path.

Everything is time-major inside ((T, B, ...), so that step t is a contiguous
block); :func:`bptt_unroll` takes and returns batch-first tensors like
``unroll_direction``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gradlab.cells import GRUCell, LSTMCell, RNNCell, RecurrentCell

GradCallback = Callable[[int, str, Tensor], None]


def has_handwritten_backward(cell: RecurrentCell) -> bool:
    """Whether :func:`bptt_unroll` has a hand-written backward for ``cell``."""
    if isinstance(cell, RNNCell):
        return cell.nonlinearity in ("tanh", "relu")
    return isinstance(cell, (LSTMCell, GRUCell))


def _order(steps: int, reverse: bool) -> range:
    return range(steps - 1, -1, -1) if reverse else range(steps)


def _previous(states: Tensor, initial: Tensor, reverse: bool) -> Tensor:
    """The state each step read: (T, B, H) of h_{t-1} (h_{t+1} when reversed)."""
    if reverse:
        return torch.cat([states[1:], initial.unsqueeze(0)])
    return torch.cat([initial.unsqueeze(0), states[:-1]])


def _incoming(grad_outputs: Tensor | None, like: Tensor) -> Tensor:
    return like.new_zeros(like.shape) if grad_outputs is None else grad_outputs


def _in_input_time(per_step: list[Tensor], reverse_loop: bool) -> Tensor:
    """Stack tensors appended in loop order into (T, ...) in input time order."""
    return torch.stack(per_step[::-1] if reverse_loop else per_step)


class _LSTMFunction(torch.autograd.Function):
    """x_proj (T, B, 4H) incl. both biases, h0, c0 (B, H), W_hh (4H, H) -> outputs, h_T, c_T."""

    @staticmethod
    def forward(ctx, x_proj, h0, c0, weight_hh, reverse, on_grad):
        hidden = weight_hh.shape[1]
        # One sigmoid for all four gates: with the g rows of the pre-activation
        # doubled, s_g = sigmoid(2 a_g) and tanh(a_g) = 2 s_g - 1, so
        # c' = f c + i (2 s_g - 1) = f c - i + 2 i s_g. Per-step operator count,
        # not arithmetic, is what costs at these sizes.
        scale = x_proj.new_ones(4 * hidden)
        scale[2 * hidden : 3 * hidden] = 2.0
        x_scaled = x_proj * scale  # (T, B, 4H)
        weight_t = (weight_hh * scale.unsqueeze(1)).t()  # (H, 4H)
        acts, cells, outputs = [], [], []
        h, c = h0, c0
        for t in _order(x_proj.shape[0], reverse):
            gates = torch.addmm(x_scaled[t], h, weight_t).sigmoid_()  # (B, 4H): i, f, s_g, o
            i, f, s_g, o = gates.chunk(4, dim=1)
            c = torch.addcmul(torch.mul(f, c).sub_(i), i, s_g, value=2.0)  # (B, H)
            h = o * torch.tanh(c)  # (B, H)
            acts.append(gates)
            cells.append(c)
            outputs.append(h)
        acts, cells, outputs = (_in_input_time(x, reverse) for x in (acts, cells, outputs))
        ctx.save_for_backward(acts, cells, outputs, h0, c0, weight_hh)
        ctx.reverse, ctx.on_grad = reverse, on_grad
        return outputs, h, c

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last, grad_c_last):
        acts, cells, outputs, h0, c0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        i, f, s_g, o = acts.chunk(4, dim=2)  # each (T, B, H)
        g = s_g * 2.0 - 1.0  # tanh of the g pre-activation
        tanh_c = torch.tanh(cells)
        # Factors that do not depend on the recurrence, for all steps at once
        # (h_t = o tanh c_t is `outputs`; x (1 - x) is written x - x*x):
        #   dc_t += dh_t (o - h_t tanh c_t)
        #   d a_{i,f,g,o} = (dc, dc, dc, dh) * (g i(1-i), c_{t-1} f(1-f), i(1-g^2), h_t (1-o))
        dh_to_dc = torch.addcmul(o, outputs, tanh_c, value=-1.0)  # (T, B, H)
        to_gates = torch.empty_like(acts)  # (T, B, 4H)
        i_part, f_part, g_part, o_part = to_gates.chunk(4, dim=2)
        torch.mul(torch.addcmul(i, i, i, value=-1.0), g, out=i_part)
        torch.mul(torch.addcmul(f, f, f, value=-1.0), _previous(cells, c0, reverse), out=f_part)
        torch.addcmul(i, i * g, g, value=-1.0, out=g_part)
        torch.addcmul(outputs, outputs, o, value=-1.0, out=o_part)
        incoming = _incoming(grad_outputs, outputs)  # (T, B, H)
        dh = torch.zeros_like(h0) if grad_h_last is None else grad_h_last
        dc = torch.zeros_like(c0) if grad_c_last is None else grad_c_last
        grad_gates = []
        for t in _order(cells.shape[0], not reverse):
            dh = dh + incoming[t]  # total dL/dh_t
            dc = torch.addcmul(dc, dh, dh_to_dc[t])  # total dL/dc_t
            if on_grad is not None:
                on_grad(t, "h", dh)
                on_grad(t, "c", dc)
            step_grad = torch.cat((dc, dc, dc, dh), dim=1).mul_(to_gates[t])  # (B, 4H)
            grad_gates.append(step_grad)
            dh = step_grad.mm(weight_hh)  # (B, H) into h_{t-1}
            dc = dc * f[t]  # into c_{t-1}
        grad_gates = _in_input_time(grad_gates, not reverse)  # (T, B, 4H)
        h_prev = _previous(outputs, h0, reverse)
        grad_weight = grad_gates.flatten(0, 1).t().mm(h_prev.flatten(0, 1))  # (4H, H)
        return grad_gates, dh, dc, grad_weight, None, None


class _GRUFunction(torch.autograd.Function):
    """x_proj (T, B, 3H) incl. b_ih, h0 (B, H), W_hh (3H, H), b_hh (3H) -> outputs, h_T."""

    @staticmethod
    def forward(ctx, x_proj, h0, weight_hh, bias_hh, reverse, on_grad):
        hidden = weight_hh.shape[1]
        weight_t = weight_hh.t()
        gates, hidden_ns, outputs = [], [], []
        h = h0
        for t in _order(x_proj.shape[0], reverse):
            projected = h.mm(weight_t) if bias_hh is None else torch.addmm(bias_hh, h, weight_t)  # (B, 3H)
            x_rz, x_n = x_proj[t].split((2 * hidden, hidden), dim=1)
            h_rz, h_n = projected.split((2 * hidden, hidden), dim=1)
            rz = (x_rz + h_rz).sigmoid_()  # (B, 2H)
            r, z = rz.chunk(2, dim=1)
            n = torch.addcmul(x_n, r, h_n).tanh_()  # (B, H)
            h = torch.addcmul(n, z, h - n)  # (1 - z) n + z h
            gates.append(torch.cat((rz, n), dim=1))
            hidden_ns.append(h_n)
            outputs.append(h)
        gates, hidden_ns, outputs = (_in_input_time(x, reverse) for x in (gates, hidden_ns, outputs))
        ctx.save_for_backward(gates, hidden_ns, outputs, h0, weight_hh)
        ctx.reverse, ctx.on_grad, ctx.has_bias = reverse, on_grad, bias_hh is not None
        return outputs, h

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last):
        gates, hidden_n, outputs, h0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        r, z, n = gates.chunk(3, dim=2)  # each (T, B, H)
        h_prev = _previous(outputs, h0, reverse)
        # Per step, with dh the total dL/dh_t:
        #   d a_r = dh (1-z)(1-n^2) (W_hn h + b_hn) r (1-r)   d a_z = dh (h_{t-1} - n) z (1-z)
        #   d a_n = dh (1-z)(1-n^2)                           d(W_hn h + b_hn) = d a_n r
        dh_to_dn = (1 - z) * (1 - n * n)
        to_input = torch.cat([dh_to_dn * hidden_n * r * (1 - r), (h_prev - n) * z * (1 - z), dh_to_dn], dim=2)
        to_hidden = torch.cat([to_input[..., : 2 * r.shape[2]], dh_to_dn * r], dim=2)  # (T, B, 3H)
        incoming = _incoming(grad_outputs, outputs)
        dh = torch.zeros_like(h0) if grad_h_last is None else grad_h_last
        totals = []  # dL/dh_t per step, in loop order
        for t in _order(outputs.shape[0], not reverse):
            dh = dh + incoming[t]  # total dL/dh_t
            if on_grad is not None:
                on_grad(t, "h", dh)
            totals.append(dh)
            step_grad = torch.cat((dh, dh, dh), dim=1).mul_(to_hidden[t])  # (B, 3H)
            dh = torch.addmm(dh * z[t], step_grad, weight_hh)  # into h_{t-1}
        totals = _in_input_time(totals, not reverse).repeat(1, 1, 3)  # (T, B, 3H)
        grad_hidden = totals * to_hidden
        grad_input = totals * to_input
        flat_hidden = grad_hidden.flatten(0, 1)  # (T*B, 3H)
        grad_weight = flat_hidden.t().mm(h_prev.flatten(0, 1))  # (3H, H)
        grad_bias = flat_hidden.sum(0) if ctx.has_bias else None
        return grad_input, dh, grad_weight, grad_bias, None, None


class _RNNFunction(torch.autograd.Function):
    """x_proj (T, B, H) incl. both biases, h0 (B, H), W_hh (H, H) -> outputs, h_T."""

    @staticmethod
    def forward(ctx, x_proj, h0, weight_hh, relu, reverse, on_grad):
        weight_t = weight_hh.t()
        outputs = []
        h = h0
        for t in _order(x_proj.shape[0], reverse):
            h = torch.addmm(x_proj[t], h, weight_t)
            h = h.relu_() if relu else h.tanh_()
            outputs.append(h)
        outputs = _in_input_time(outputs, reverse)  # (T, B, H)
        ctx.save_for_backward(outputs, h0, weight_hh)
        ctx.relu, ctx.reverse, ctx.on_grad = relu, reverse, on_grad
        return outputs, h

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last):
        outputs, h0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        # The activation's derivative from its output: relu' = [h > 0], tanh' = 1 - h^2.
        slope = (outputs > 0).to(outputs.dtype) if ctx.relu else 1 - outputs * outputs  # (T, B, H)
        incoming = _incoming(grad_outputs, outputs)
        dh = torch.zeros_like(h0) if grad_h_last is None else grad_h_last
        grad_pre = []
        for t in _order(outputs.shape[0], not reverse):
            dh = dh + incoming[t]  # total dL/dh_t
            if on_grad is not None:
                on_grad(t, "h", dh)
            step_grad = dh * slope[t]  # (B, H)
            grad_pre.append(step_grad)
            dh = step_grad.mm(weight_hh)
        grad_pre = _in_input_time(grad_pre, not reverse)
        grad_weight = grad_pre.flatten(0, 1).t().mm(_previous(outputs, h0, reverse).flatten(0, 1))
        return grad_pre, dh, grad_weight, None, None, None


def _time_major_projection(inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return F.linear(inputs.transpose(0, 1), weight, bias).contiguous()  # (T, B, G*H)


def bptt_unroll(
    cell: RecurrentCell,
    inputs: Tensor,
    state: Tensor | tuple[Tensor, Tensor],
    *,
    reverse: bool,
    on_grad: GradCallback | None = None,
) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """Same contract as :func:`gradlab.models.unroll_direction`, with a hand-written backward.

    Args:
        cell: a cell for which :func:`has_handwritten_backward` is true.
        inputs: (B, T, I) batch-first layer inputs.
        state: initial (B, H), or (h, c) for LSTM.
        reverse: read the sequence from t = T-1 down to 0.
        on_grad: called during backward as ``on_grad(t, "h" | "c", grad)`` with
            the total gradient of the loss with respect to that state (input
            time t; the tensor is reused afterwards, so read it, don't keep it).

    Returns:
        outputs (B, T, H) and the final state.
    """
    if not has_handwritten_backward(cell):
        raise ValueError(f"no hand-written backward for {cell!r}; use gradlab.models.unroll_direction")
    if isinstance(cell, GRUCell):
        x_proj = _time_major_projection(inputs, cell.weight_ih, cell.bias_ih)
        outputs, h = _GRUFunction.apply(x_proj, state, cell.weight_hh, cell.bias_hh, reverse, on_grad)
        return outputs.transpose(0, 1), h
    # LSTM and RNN: both biases enter the pre-activation as a sum, so fold b_hh
    # into the whole-sequence projection instead of adding it per step.
    bias = None if cell.bias_ih is None else cell.bias_ih + cell.bias_hh
    x_proj = _time_major_projection(inputs, cell.weight_ih, bias)
    if isinstance(cell, LSTMCell):
        outputs, h, c = _LSTMFunction.apply(x_proj, state[0], state[1], cell.weight_hh, reverse, on_grad)
        return outputs.transpose(0, 1), (h, c)
    relu = cell.nonlinearity == "relu"
    outputs, h = _RNNFunction.apply(x_proj, state, cell.weight_hh, relu, reverse, on_grad)
    return outputs.transpose(0, 1), h
