"""Whole-sequence recurrent layers with a hand-written backprop-through-time.

:func:`bptt_unroll` computes exactly what :func:`gradlab.models.unroll_direction`
computes, for the cells whose derivative it knows (LSTM, GRU, and RNNs with
tanh or relu), as one ``torch.autograd.Function`` per layer and direction:

- the forward pass runs the recurrence without building an autograd graph,
  writing the gate activations it needs straight into whole-sequence buffers;
- the backward pass walks t = T-1 .. 0 once, computing dL/dh_t (and dL/dc_t)
  — the total gradient through time and from above — with a handful of
  tensor operations per step; every factor that does not depend on the
  recurrence is computed for all timesteps at once before the loop, and the
  recurrent weight gradient is a single matmul over all steps.

Because the backward loop holds dL/dh_t anyway, it hands each one to an
optional ``on_grad(t, name, grad)`` callback: that is how gradient
recording costs almost nothing on this path.

:func:`recurrence` is the layer itself, on a projected input. It also runs an
ensemble of S independent layers at once: give every tensor a leading
member dimension (``x_proj`` (S, T, B, G*H), states (S, B, H), weights
(S, G*H, H)) and each matmul becomes a batched one (``baddbmm``); the
elementwise maths is the same code. :mod:`gradlab.ensemble` builds on that.

Everything is time-major inside ((T, B, ...), so that step t of a member is a
contiguous block); :func:`bptt_unroll` takes and returns batch-first tensors
like ``unroll_direction``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gradlab.cells import GRUCell, LSTMCell, RNNCell, RecurrentCell

GradCallback = Callable[[int, str, Tensor], None]

#: The cells :func:`recurrence` runs, by mode name.
KINDS: tuple[str, ...] = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")

#: The time dimension of every sequence tensor inside: (T, B, ...) for one
#: layer, (S, T, B, ...) for S members.
TIME = -3


def has_handwritten_backward(cell: RecurrentCell) -> bool:
    """Whether :func:`bptt_unroll` has a hand-written backward for ``cell``."""
    if isinstance(cell, RNNCell):
        return cell.nonlinearity in ("tanh", "relu")
    return isinstance(cell, (LSTMCell, GRUCell))


def _order(steps: int, reverse: bool) -> list[int]:
    return list(range(steps - 1, -1, -1)) if reverse else list(range(steps))


def _previous(states: Tensor, initial: Tensor, reverse: bool) -> Tensor:
    """The state each step read: ([S,] T, B, H) of h_{t-1} (h_{t+1} when reversed)."""
    steps = states.shape[TIME]
    if reverse:
        return torch.cat([states.narrow(TIME, 1, steps - 1), initial.unsqueeze(TIME)], dim=TIME)
    return torch.cat([initial.unsqueeze(TIME), states.narrow(TIME, 0, steps - 1)], dim=TIME)


def _affine(bias: Tensor, a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """``bias + a @ b``, per member when the operands carry a member dimension."""
    if a.dim() == 2:
        return torch.addmm(bias, a, b, out=out)
    return torch.baddbmm(bias, a, b, out=out)


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    return a.mm(b) if a.dim() == 2 else a.bmm(b)


def _weight_grad(grad_pre: Tensor, previous: Tensor) -> Tensor:
    """sum over t and b of grad_pre^T h_prev: ([S,] T, B, G) x ([S,] T, B, H) -> ([S,] G, H)."""
    flat_grad, flat_previous = grad_pre.flatten(-3, -2), previous.flatten(-3, -2)  # ([S,] T*B, ...)
    return _matmul(flat_grad.transpose(-1, -2), flat_previous)


def _bias_grad(grad_pre: Tensor) -> Tensor:
    """sum over t and b: ([S,] T, B, G) -> ([S,] G)."""
    return grad_pre.flatten(-3, -2).sum(-2)


def _first_dh(incoming: Tensor | None, grad_last: Tensor | None, t: int, like: Tensor) -> Tensor:
    """dL/dh at the loop's first step: from above (if anything) plus from the final state."""
    dh = torch.zeros_like(like) if grad_last is None else grad_last
    return dh if incoming is None else dh + incoming.select(TIME, t)


def _add_matmul_(target: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``target += a @ b`` in place, per member when the operands carry a member dimension."""
    return target.addmm_(a, b) if a.dim() == 2 else target.baddbmm_(a, b)


def _writable_steps(grad_outputs: Tensor | None) -> tuple[Tensor, ...] | None:
    """Per-step views of a private copy of the gradient from above, to accumulate into in place."""
    return None if grad_outputs is None else grad_outputs.clone().unbind(TIME)


def _into_previous(step_grad: Tensor, weight: Tensor, incoming: tuple[Tensor, ...] | None, order: list[int], k: int) -> Tensor:
    """dL/dh of the state read at loop step k: through W_hh, plus from above at that state's own step.

    ``incoming`` is from :func:`_writable_steps`: the sum is formed in place there.
    """
    if k + 1 < len(order) and incoming is not None:
        return _add_matmul_(incoming[order[k + 1]], step_grad, weight)
    return _matmul(step_grad, weight)


class _LSTMFunction(torch.autograd.Function):
    """x_proj ([S,] T, B, 4H) incl. both biases, h0, c0 ([S,] B, H), W_hh ([S,] 4H, H) -> outputs, h_T, c_T."""

    @staticmethod
    def forward(ctx, x_proj, h0, c0, weight_hh, reverse, on_grad):
        hidden = weight_hh.shape[-1]
        # One sigmoid for all four gates: with the g rows of the pre-activation
        # doubled, s_g = sigmoid(2 a_g) and tanh(a_g) = 2 s_g - 1, so
        # c' = f c + i (2 s_g - 1) = f c - i + 2 i s_g. Per-step operator count,
        # not arithmetic, is what costs at these sizes.
        scale = x_proj.new_ones(4 * hidden)
        scale[2 * hidden : 3 * hidden] = 2.0
        # Each step writes into whole-sequence buffers: no per-step tensors to
        # stack. The gate buffer starts as the scaled input projection, and
        # each step adds h W^T in place (addmm_ skips addmm's copy of its input).
        acts = x_proj * scale  # ([S,] T, B, 4H): becomes i, f, s_g, o
        weight_t = (weight_hh * scale.unsqueeze(1)).transpose(-1, -2)  # ([S,] H, 4H)
        cells = x_proj.new_empty(x_proj.shape[:-1] + (hidden,))  # ([S,] T, B, H)
        tanh_cells, outputs = torch.empty_like(cells), torch.empty_like(cells)
        # Per-step views made once (unbind is one call; indexing per step is one each).
        act_steps = acts.unbind(TIME)
        i_steps, f_steps, s_steps, o_steps = (part.unbind(TIME) for part in acts.chunk(4, dim=-1))
        cell_steps, tanh_steps, out_steps = cells.unbind(TIME), tanh_cells.unbind(TIME), outputs.unbind(TIME)
        h, c = h0, c0
        for t in _order(x_proj.shape[TIME], reverse):
            _add_matmul_(act_steps[t], h, weight_t).sigmoid_()  # i, f, s_g, o
            i = i_steps[t]
            c = torch.mul(f_steps[t], c, out=cell_steps[t]).sub_(i).addcmul_(i, s_steps[t], value=2.0)
            h = torch.mul(o_steps[t], torch.tanh(c, out=tanh_steps[t]), out=out_steps[t])
        ctx.save_for_backward(acts, cells, tanh_cells, outputs, h0, c0, weight_hh)
        ctx.reverse, ctx.on_grad = reverse, on_grad
        ctx.set_materialize_grads(False)
        # The final state is returned as copies: an output may not be a view of another.
        return outputs, h.clone(), c.clone()

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last, grad_c_last):
        acts, cells, tanh_cells, outputs, h0, c0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        i, f, s_g, o = acts.chunk(4, dim=-1)  # each ([S,] T, B, H)
        g = s_g * 2.0 - 1.0  # tanh of the g pre-activation
        # Factors that do not depend on the recurrence, for all steps at once
        # (h_t = o tanh c_t is `outputs`; x (1 - x) is written x - x*x):
        #   dc_t += dh_t (o - h_t tanh c_t)
        #   d a_{i,f,g,o} = (dc, dc, dc, dh) * (g i(1-i), c_{t-1} f(1-f), i(1-g^2), h_t (1-o))
        dh_to_dc = torch.addcmul(o, outputs, tanh_cells, value=-1.0)  # ([S,] T, B, H)
        to_gates = torch.empty_like(acts)  # ([S,] T, B, 4H)
        i_part, f_part, g_part, o_part = to_gates.chunk(4, dim=-1)
        torch.mul(torch.addcmul(i, i, i, value=-1.0), g, out=i_part)
        torch.mul(torch.addcmul(f, f, f, value=-1.0), _previous(cells, c0, reverse), out=f_part)
        torch.addcmul(i, i * g, g, value=-1.0, out=g_part)
        torch.addcmul(outputs, outputs, o, value=-1.0, out=o_part)
        grad_gates = torch.empty_like(acts)  # ([S,] T, B, 4H)
        order = _order(cells.shape[TIME], not reverse)
        dh = _first_dh(grad_outputs, grad_h_last, order[0], h0)
        dc = torch.zeros_like(c0) if grad_c_last is None else grad_c_last
        incoming = _writable_steps(grad_outputs)
        to_c_steps, f_steps = dh_to_dc.unbind(TIME), f.unbind(TIME)
        to_gate_steps, grad_steps = to_gates.unbind(TIME), grad_gates.unbind(TIME)
        for k, t in enumerate(order):
            # dh is the total dL/dh_t here; dc becomes the total dL/dc_t.
            dc = torch.addcmul(dc, dh, to_c_steps[t])
            if on_grad is not None:
                on_grad(t, "h", dh)
                on_grad(t, "c", dc)
            # (dc, dc, dc, dh) * factors; cat and mul on contiguous rows beat
            # a broadcast multiply into a strided slice.
            torch.cat((dc, dc, dc, dh), dim=-1, out=grad_steps[t]).mul_(to_gate_steps[t])
            dh = _into_previous(grad_steps[t], weight_hh, incoming, order, k)  # into h_{t-1}
            dc = dc * f_steps[t]  # into c_{t-1}
        grad_weight = _weight_grad(grad_gates, _previous(outputs, h0, reverse))  # ([S,] 4H, H)
        return grad_gates, dh, dc, grad_weight, None, None


class _GRUFunction(torch.autograd.Function):
    """x_proj ([S,] T, B, 3H) incl. b_ih, h0 ([S,] B, H), W_hh ([S,] 3H, H), b_hh ([S,] 3H) -> outputs, h_T."""

    @staticmethod
    def forward(ctx, x_proj, h0, weight_hh, bias_hh, reverse, on_grad):
        hidden = weight_hh.shape[-1]
        weight_t = weight_hh.transpose(-1, -2)  # ([S,] H, 3H)
        bias = None if bias_hh is None else bias_hh.unsqueeze(-2)  # ([S,] 1, 3H)
        gates = torch.empty_like(x_proj)  # r, z, n
        hidden_ns = x_proj.new_empty(x_proj.shape[:-1] + (hidden,))  # W_hn h + b_hn, ([S,] T, B, H)
        outputs = torch.empty_like(hidden_ns)
        x_steps, gate_steps = x_proj.unbind(TIME), gates.unbind(TIME)
        hidden_n_steps, out_steps = hidden_ns.unbind(TIME), outputs.unbind(TIME)
        h = h0
        for t in _order(x_proj.shape[TIME], reverse):
            projected = _matmul(h, weight_t) if bias is None else _affine(bias, h, weight_t)  # ([S,] B, 3H)
            x_rz, x_n = x_steps[t].split((2 * hidden, hidden), dim=-1)
            h_rz, h_n = projected.split((2 * hidden, hidden), dim=-1)
            rz, n = gate_steps[t].split((2 * hidden, hidden), dim=-1)
            torch.add(x_rz, h_rz, out=rz).sigmoid_()
            r, z = rz.chunk(2, dim=-1)
            torch.addcmul(x_n, r, h_n, out=n).tanh_()
            hidden_n_steps[t].copy_(h_n)
            h = torch.addcmul(n, z, h - n, out=out_steps[t])  # (1 - z) n + z h
        ctx.save_for_backward(gates, hidden_ns, outputs, h0, weight_hh)
        ctx.reverse, ctx.on_grad, ctx.has_bias = reverse, on_grad, bias_hh is not None
        ctx.set_materialize_grads(False)
        return outputs, h.clone()

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last):
        gates, hidden_n, outputs, h0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        r, z, n = gates.chunk(3, dim=-1)  # each ([S,] T, B, H)
        h_prev = _previous(outputs, h0, reverse)
        # Per step, with dh the total dL/dh_t:
        #   d a_r = dh (1-z)(1-n^2) (W_hn h + b_hn) r (1-r)   d a_z = dh (h_{t-1} - n) z (1-z)
        #   d a_n = dh (1-z)(1-n^2)                           d(W_hn h + b_hn) = d a_n r
        dh_to_dn = (1 - z) * (1 - n * n)
        to_input = torch.cat([dh_to_dn * hidden_n * r * (1 - r), (h_prev - n) * z * (1 - z), dh_to_dn], dim=-1)
        to_hidden = torch.cat([to_input[..., : 2 * r.shape[-1]], dh_to_dn * r], dim=-1)  # ([S,] T, B, 3H)
        order = _order(outputs.shape[TIME], not reverse)
        dh = _first_dh(grad_outputs, grad_h_last, order[0], h0)
        incoming = None if grad_outputs is None else grad_outputs.unbind(TIME)
        totals = torch.empty_like(outputs)  # dL/dh_t per step
        total_steps, to_hidden_steps, z_steps = totals.unbind(TIME), to_hidden.unbind(TIME), z.unbind(TIME)
        for k, t in enumerate(order):
            if k > 0 and incoming is not None:
                dh = dh + incoming[t]
            total_steps[t].copy_(dh)  # total dL/dh_t
            if on_grad is not None:
                on_grad(t, "h", dh)
            step_grad = torch.cat((dh, dh, dh), dim=-1).mul_(to_hidden_steps[t])  # ([S,] B, 3H)
            dh = _affine(dh * z_steps[t], step_grad, weight_hh)  # into h_{t-1}
        totals = totals.repeat(*(1,) * (totals.dim() - 1), 3)  # ([S,] T, B, 3H)
        grad_hidden = totals * to_hidden
        grad_input = totals * to_input
        grad_weight = _weight_grad(grad_hidden, h_prev)  # ([S,] 3H, H)
        grad_bias = _bias_grad(grad_hidden) if ctx.has_bias else None
        return grad_input, dh, grad_weight, grad_bias, None, None


class _RNNFunction(torch.autograd.Function):
    """x_proj ([S,] T, B, H) incl. both biases, h0 ([S,] B, H), W_hh ([S,] H, H) -> outputs, h_T."""

    @staticmethod
    def forward(ctx, x_proj, h0, weight_hh, relu, reverse, on_grad):
        weight_t = weight_hh.transpose(-1, -2)
        outputs = x_proj.clone()  # ([S,] T, B, H): each step adds h W^T in place
        out_steps = outputs.unbind(TIME)
        h = h0
        for t in _order(x_proj.shape[TIME], reverse):
            h = _add_matmul_(out_steps[t], h, weight_t)
            h = h.relu_() if relu else h.tanh_()
        ctx.save_for_backward(outputs, h0, weight_hh)
        ctx.relu, ctx.reverse, ctx.on_grad = relu, reverse, on_grad
        ctx.set_materialize_grads(False)
        return outputs, h.clone()

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last):
        outputs, h0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        # The activation's derivative from its output: relu' = [h > 0], tanh' = 1 - h^2.
        slope = (outputs > 0).to(outputs.dtype) if ctx.relu else 1 - outputs * outputs  # ([S,] T, B, H)
        order = _order(outputs.shape[TIME], not reverse)
        dh = _first_dh(grad_outputs, grad_h_last, order[0], h0)
        incoming = _writable_steps(grad_outputs)
        grad_pre = torch.empty_like(outputs)
        slope_steps, grad_steps = slope.unbind(TIME), grad_pre.unbind(TIME)
        for k, t in enumerate(order):
            if on_grad is not None:
                on_grad(t, "h", dh)  # total dL/dh_t
            step_grad = torch.mul(dh, slope_steps[t], out=grad_steps[t])  # ([S,] B, H)
            dh = _into_previous(step_grad, weight_hh, incoming, order, k)
        grad_weight = _weight_grad(grad_pre, _previous(outputs, h0, reverse))
        return grad_pre, dh, grad_weight, None, None, None


def recurrence(
    kind: str,
    x_proj: Tensor,
    state: Tensor | tuple[Tensor, Tensor],
    weight_hh: Tensor,
    bias_hh: Tensor | None = None,
    *,
    reverse: bool = False,
    on_grad: GradCallback | None = None,
) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """One recurrent layer over a projected, time-major input, with a hand-written backward.

    Args:
        kind: one of :data:`KINDS`.
        x_proj: (T, B, G*H) input projections, or (S, T, B, G*H) for S members;
            they include ``b_ih``, and for LSTM and RNN also ``b_hh`` (which
            enters the pre-activation as a plain sum).
        state: the initial state (B, H) (or (S, B, H)); a pair (h, c) for LSTM.
        weight_hh: (G*H, H), or (S, G*H, H).
        bias_hh: GRU only: (G*H,) or (S, G*H), or None.
        reverse: read the sequence from t = T-1 down to 0.
        on_grad: called during backward as ``on_grad(t, "h" | "c", grad)`` with
            the total gradient of the loss with respect to that state (input
            time t; the tensor is reused afterwards, so read it, don't keep it).

    Returns:
        outputs ([S,] T, B, H) in input time order, and the final state.
    """
    if kind == "LSTM":
        outputs, h, c = _LSTMFunction.apply(x_proj, state[0], state[1], weight_hh, reverse, on_grad)
        return outputs, (h, c)
    if kind == "GRU":
        return _GRUFunction.apply(x_proj, state, weight_hh, bias_hh, reverse, on_grad)
    if kind in ("RNN_TANH", "RNN_RELU"):
        return _RNNFunction.apply(x_proj, state, weight_hh, kind == "RNN_RELU", reverse, on_grad)
    raise ValueError(f"no hand-written backward for kind {kind!r}; expected one of {list(KINDS)}")


def cell_kind(cell: RecurrentCell) -> str:
    """The :data:`KINDS` entry of ``cell``.

    Raises:
        ValueError: if ``cell`` has no hand-written backward.
    """
    if not has_handwritten_backward(cell):
        raise ValueError(f"no hand-written backward for {cell!r}; use gradlab.models.unroll_direction")
    if isinstance(cell, RNNCell):
        return f"RNN_{cell.nonlinearity.upper()}"
    return "LSTM" if isinstance(cell, LSTMCell) else "GRU"


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
        on_grad: see :func:`recurrence`.

    Returns:
        outputs (B, T, H) and the final state.
    """
    kind = cell_kind(cell)
    # LSTM and RNN: both biases enter the pre-activation as a sum, so fold b_hh
    # into the whole-sequence projection instead of adding it per step.
    bias = cell.bias_ih
    if kind != "GRU" and bias is not None:
        bias = cell.bias_ih + cell.bias_hh
    x_proj = F.linear(inputs.transpose(0, 1), cell.weight_ih, bias).contiguous()  # (T, B, G*H)
    outputs, final = recurrence(kind, x_proj, state, cell.weight_hh, cell.bias_hh, reverse=reverse, on_grad=on_grad)
    return outputs.transpose(0, 1), final
