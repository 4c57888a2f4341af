"""Building blocks of the hand-written BPTT layers: per-step and whole-sequence helpers.

Every sequence tensor is time-major per member: (T, B, ...) for one layer, or
(S, T, B, ...) for S members (time is dimension :data:`TIME` either way), and
every helper here works on both, switching matmuls to their batched form when
a member dimension is present. :mod:`gradlab.nn.bptt` and
:mod:`gradlab.training.ensemble.streaming` are made of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: The time dimension of every sequence tensor inside: (T, B, ...) for one
#: layer, (S, T, B, ...) for S members.
TIME = -3


def step_order(steps: int, reverse: bool) -> list[int]:
    """The timesteps in the order a loop visits them."""
    return list(range(steps - 1, -1, -1)) if reverse else list(range(steps))


def previous_states(states: Tensor, initial: Tensor, reverse: bool) -> Tensor:
    """The state each step read: ([S,] T, B, H) of h_{t-1} (h_{t+1} when reversed)."""
    steps = states.shape[TIME]
    if reverse:
        return torch.cat([states.narrow(TIME, 1, steps - 1), initial.unsqueeze(TIME)], dim=TIME)
    return torch.cat([initial.unsqueeze(TIME), states.narrow(TIME, 0, steps - 1)], dim=TIME)


def block_previous(states: Tensor, initial: Tensor, start: int, count: int, reverse: bool) -> Tensor:
    """The states that steps ``start .. start + count - 1`` read (:func:`previous_states` of those steps alone).

    A view of ``states``, except for the block that reads ``initial``: a copy of its steps then.
    """
    first = start + 1 if reverse else start - 1
    if 0 <= first and first + count <= states.shape[TIME]:
        return states.narrow(TIME, first, count)
    if reverse:
        return torch.cat([states.narrow(TIME, first, count - 1), initial.unsqueeze(TIME)], dim=TIME)
    return torch.cat([initial.unsqueeze(TIME), states.narrow(TIME, 0, count - 1)], dim=TIME)


def block_buffer(like: Tensor, steps: int) -> Tensor:
    """([S,] steps, B, G): room for a block of ``steps`` steps of a ([S,] T, B, G) sequence tensor."""
    return like.new_empty(like.shape[:TIME] + (steps,) + like.shape[TIME + 1 :])


class LayerGrads:
    """A layer's weight, bias and input gradients, summed block of steps by block as the backward loop goes.

    Each block's dL/d(pre-activation) ([S,] n, B, G) is used while it is still in the cache, and no
    whole-sequence buffer of them is made: fresh memory is slow to touch, and at these sizes each first
    touch of a page costs a fault.

    Args:
        ctx: the Function's context: which gradients are wanted (inputs, W_ih, input-term bias first, and
            ``hidden_bias_index``'s for a separate hidden-term bias).
        inputs, weight_ih: the layer's inputs ([S,] T, B, I) and input weights ([S,] G, I).
        outputs, initial: the states h_t ([S,] T, B, H) and h_0, which W_hh multiplied.
        reverse: the direction the layer ran in.
        hidden_bias_index: where ``ctx`` has the hidden-term bias b_hh (a GRU's), if the layer has one.
    """

    def __init__(self, ctx, inputs: Tensor, weight_ih: Tensor, outputs: Tensor, initial: Tensor,
                 reverse: bool, hidden_bias_index: int | None = None) -> None:
        self.wants_inputs, self.wants_weight, self.wants_bias = ctx.needs_input_grad[:3]
        self.wants_hidden_bias = hidden_bias_index is not None and ctx.needs_input_grad[hidden_bias_index]
        self.inputs = inputs.contiguous() if self.wants_weight else inputs
        self.weight_ih, self.outputs, self.initial, self.reverse = weight_ih, outputs, initial, reverse
        self.grad_inputs = inputs.new_empty(inputs.shape) if self.wants_inputs else None  # contiguous
        self.grad_weight_ih: Tensor | None = None
        self.grad_bias: Tensor | None = None
        self.grad_weight_hh: Tensor | None = None
        self.grad_hidden_bias: Tensor | None = None

    def add(self, grad_input_term: Tensor, start: int, grad_hidden_term: Tensor | None = None) -> None:
        """Add the block of steps ``start .. start + n - 1``.

        ``grad_input_term``: dL/d(W_ih x + b_ih) of those steps ([S,] n, B, G); ``grad_hidden_term``:
        dL/d(W_hh h + b_hh) where it differs (a GRU's), else the same.
        """
        count = grad_input_term.shape[TIME]
        hidden = grad_input_term if grad_hidden_term is None else grad_hidden_term
        previous = block_previous(self.outputs, self.initial, start, count, self.reverse)
        self.grad_weight_hh = add_weight_grad(self.grad_weight_hh, hidden, previous)
        if self.wants_hidden_bias:
            self.grad_hidden_bias = _add(self.grad_hidden_bias, bias_grad(hidden))
        if self.wants_weight:
            inputs = self.inputs.narrow(TIME, start, count)
            self.grad_weight_ih = add_weight_grad(self.grad_weight_ih, grad_input_term, inputs)
        if self.wants_bias:
            self.grad_bias = _add(self.grad_bias, bias_grad(grad_input_term))
        if self.grad_inputs is not None:
            input_grad(grad_input_term, self.weight_ih, out=self.grad_inputs.narrow(TIME, start, count))

    def input_side(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The gradients of the inputs, W_ih and the input-term bias (None where not wanted)."""
        return self.grad_inputs, self.grad_weight_ih, self.grad_bias


def _add(total: Tensor | None, part: Tensor) -> Tensor:
    return part if total is None else total.add_(part)


def add_weight_grad(total: Tensor | None, grad_pre: Tensor, previous: Tensor) -> Tensor:
    """``total`` + :func:`weight_grad` of a block, summed in place (a new tensor for the first block)."""
    if total is None:
        return weight_grad(grad_pre, previous)
    flat_grad, flat_previous = grad_pre.flatten(-3, -2), previous.flatten(-3, -2)
    if grad_pre.dim() == 3:
        return total.addmm_(flat_grad.t(), flat_previous)
    total.transpose(1, 2).baddbmm_(flat_previous.transpose(1, 2), flat_grad)  # as weight_grad's batched form
    return total


def step_buffer(steps: int, step_shape: torch.Size, like: Tensor) -> Tensor:
    """(T, [S,] B, G): one contiguous block per step, to write each step's result into.

    Writing into a buffer made once beats a fresh tensor per step: with
    members a step's tensor is large enough that fresh memory is slow to touch.
    """
    return like.new_empty((steps, *step_shape))


def member_major(buffer: Tensor) -> Tensor:
    """A :func:`step_buffer` in the layout of the sequence tensors: ([S,] T, B, G)."""
    return buffer if buffer.dim() == 3 else buffer.transpose(0, 1).contiguous()


def affine(bias: Tensor, a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """``bias + a @ b``, per member when the operands carry a member dimension (into ``out`` if given)."""
    return torch.addmm(bias, a, b, out=out) if a.dim() == 2 else torch.baddbmm(bias, a, b, out=out)


def matmul(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """``a @ b``, per member when the operands carry a member dimension (into ``out`` if given)."""
    return torch.mm(a, b, out=out) if a.dim() == 2 else torch.bmm(a, b, out=out)


def weight_grad(grad_pre: Tensor, previous: Tensor) -> Tensor:
    """sum over t and b of grad_pre^T h_prev: ([S,] T, B, G) x ([S,] T, B, H) -> ([S,] G, H)."""
    flat_grad, flat_previous = grad_pre.flatten(-3, -2), previous.flatten(-3, -2)  # ([S,] T*B, ...)
    if grad_pre.dim() == 3:
        return flat_grad.t().mm(flat_previous)
    # Batched, (h_prev^T grad)^T is faster than grad^T h_prev: the wide operand stays untransposed.
    return flat_previous.transpose(1, 2).bmm(flat_grad).transpose(1, 2)


def bias_grad(grad_pre: Tensor) -> Tensor:
    """sum over t and b: ([S,] T, B, G) -> ([S,] G)."""
    return grad_pre.flatten(-3, -2).sum(-2)


def first_dh(incoming: Tensor | None, grad_last: Tensor | None, t: int, like: Tensor) -> Tensor:
    """dL/dh at the loop's first step: from above (if anything) plus from the final state."""
    dh = torch.zeros_like(like) if grad_last is None else grad_last
    return dh if incoming is None else dh + incoming.select(TIME, t)


def add_matmul_(target: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``target += a @ b`` in place, per member when the operands carry a member dimension."""
    return target.addmm_(a, b) if a.dim() == 2 else target.baddbmm_(a, b)


def writable_steps(grad_outputs: Tensor | None) -> tuple[Tensor, ...] | None:
    """Per-step views of a private copy of the gradient from above, to accumulate into in place."""
    return None if grad_outputs is None else grad_outputs.clone().unbind(TIME)


def into_previous(step_grad: Tensor, weight: Tensor, incoming: tuple[Tensor, ...] | None, order: list[int], k: int) -> Tensor:
    """dL/dh of the state read at loop step k: through W_hh, plus from above at that state's own step.

    ``incoming`` is from :func:`writable_steps`: the sum is formed in place there.
    """
    if k + 1 < len(order) and incoming is not None:
        return add_matmul_(incoming[order[k + 1]], step_grad, weight)
    return matmul(step_grad, weight)


def project(inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The input term of every step at once: ([S,] T, B, I) -> ([S,] T, B, G*H)."""
    if weight.dim() == 2:
        return F.linear(inputs, weight, bias).contiguous()
    flat = inputs.reshape(inputs.shape[0], -1, inputs.shape[-1])  # (S, T*B, I)
    if bias is not None:
        # The bias as one more input column of ones: a broadcast bias in
        # baddbmm (or a broadcast add) costs three times the matmul here.
        flat = torch.cat([flat, flat.new_ones(flat.shape[:-1] + (1,))], dim=-1)  # (S, T*B, I+1)
        weight = torch.cat([weight, bias.unsqueeze(-1)], dim=-1)  # (S, G*H, I+1)
    return flat.bmm(weight.transpose(1, 2)).view(*inputs.shape[:-1], -1)


def input_grads(ctx, grad_pre: Tensor, inputs: Tensor, weight_ih: Tensor) -> tuple[Tensor | None, ...]:
    """Gradients of inputs, W_ih and the input-term bias from dL/d(pre-activation input term)."""
    wants_inputs, wants_weight, wants_bias = ctx.needs_input_grad[:3]
    grad_inputs = input_grad(grad_pre, weight_ih) if wants_inputs else None
    grad_weight = weight_grad(grad_pre, inputs) if wants_weight else None
    grad_bias = bias_grad(grad_pre) if wants_bias else None
    return grad_inputs, grad_weight, grad_bias


def input_grad(grad_pre: Tensor, weight_ih: Tensor, out: Tensor | None = None) -> Tensor:
    """dL/d(inputs) ([S,] n, B, I) from dL/d(input term) ([S,] n, B, G) (into ``out``, a contiguous block, if given)."""
    flat = grad_pre.flatten(-3, -2)  # ([S,] n*B, G)
    flat_shape = flat.shape[:-1] + weight_ih.shape[-1:]
    grad = matmul(flat, weight_ih, out=None if out is None else out.view(flat_shape))
    return grad.view(grad_pre.shape[:-1] + weight_ih.shape[-1:])


def lstm_factors(gates: Tensor, c_prev: Tensor, h: Tensor, tanh_c: Tensor,
                 out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """What the LSTM backward multiplies dh and dc by, for one step or several (into ``out`` if given).

    ``gates`` holds i, f, s_g, o side by side (..., 4H), with s_g = sigmoid(2 a_g) and g = 2 s_g - 1
    (see :func:`lstm_step`); ``h`` = o tanh c, ``tanh_c`` = tanh c. Every gate x is a sigmoid, so
    x (1 - x), written x - x*x, is formed for all four at once:
      dc_t += dh_t (o - h tanh c)                                                     (returned first)
      d a_{i,f,g,o} = (dc, dc, dc, dh) * (i(1-i) g, f(1-f) c_{t-1}, 4 s_g(1-s_g) i, o(1-o) tanh c)   (second)
    (1 - g^2 = 4 s_g (1 - s_g)). One pass over the contiguous block, then one product per gate in place,
    beats forming each gate's factor into a strided slice of the result (2.8x in float32).
    """
    i, _, s_g, o = gates.chunk(4, dim=-1)
    out_c, out_gates = (None, None) if out is None else out
    dh_to_dc = torch.addcmul(o, h, tanh_c, value=-1.0, out=out_c)
    to_gates = torch.addcmul(gates, gates, gates, value=-1.0, out=out_gates)  # x (1 - x) of every gate
    i_part, f_part, g_part, o_part = to_gates.chunk(4, dim=-1)
    i_part.mul_(s_g * 2.0 - 1.0)
    f_part.mul_(c_prev)
    g_part.mul_(i).mul_(4.0)
    o_part.mul_(tanh_c)
    return dh_to_dc, to_gates


def lstm_scale(hidden: int, like: Tensor) -> Tensor:
    """(4H,): 2 on the g rows, 1 elsewhere (see :class:`_LSTMFunction`)."""
    scale = like.new_ones(4 * hidden)
    scale[2 * hidden : 3 * hidden] = 2.0
    return scale


def lstm_step(gates: Tensor, c: Tensor, cell_out: Tensor, tanh_out: Tensor, h_out: Tensor,
              views: tuple[Tensor, ...] | None = None) -> tuple[Tensor, Tensor]:
    """Finish one LSTM step in place: ``gates`` holds a (g doubled) and becomes i, f, s_g, o.

    ``views``: i, f, s_g, o as views of ``gates`` made beforehand (a loop makes
    them for all steps in one call each), else chunked here.
    """
    gates.sigmoid_()
    i, f, s_g, o = views if views is not None else gates.chunk(4, dim=-1)
    c = torch.mul(f, c, out=cell_out).sub_(i).addcmul_(i, s_g, value=2.0)
    h = torch.mul(o, torch.tanh(c, out=tanh_out), out=h_out)
    return h, c


def lstm_grad_step(dh: Tensor, dc: Tensor, to_c: Tensor, to_gate: Tensor, spread: Tensor, on_grad,
                   t: int) -> tuple[Tensor, Tensor]:
    """dL/d(pre-activation) of step t, formed in place in its factors ``to_gate``, and dL/dc_t.

    ``dh`` is the total dL/dh_t; ``spread`` a ([S,] B, 4H) buffer the step may overwrite.
    """
    dc = torch.addcmul(dc, dh, to_c)  # total dL/dc_t
    if on_grad is not None:
        on_grad(t, "h", dh)
        on_grad(t, "c", dc)
    # (dc, dc, dc, dh) * factors; cat into a contiguous block and one multiply beat
    # a broadcast multiply into each strided slice.
    return to_gate.mul_(torch.cat((dc, dc, dc, dh), dim=-1, out=spread)), dc
