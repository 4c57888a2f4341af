"""The recurrent layers of large ensembles, step by step (:func:`streaming_recurrence`)."""

from __future__ import annotations

import torch
from torch import Tensor

from gradlab.nn.bptt import KINDS
from gradlab.nn.bptt.functions import GRUFunction, RNNFunction
from gradlab.nn.bptt.steps import (
    affine,
    first_dh,
    input_grads,
    lstm_factors,
    lstm_grad_step,
    lstm_scale,
    lstm_step,
    step_order,
)

#: Above this many elements in an (S, T, B, H) tensor, an ensemble's layers
#: work step by step (:func:`streaming_recurrence`) instead of in
#: whole-sequence passes (:func:`gradlab.nn.bptt.recurrence`) that stream
#: through memory.
WHOLE_SEQUENCE_LIMIT = 2**18


class StreamingLSTMFunction(torch.autograd.Function):
    """:class:`LSTMFunction` for many members: every sequence tensor time-major, (T, S, B, ...).

    With members, whole-sequence tensors outgrow the caches, and a pass over
    one costs more than the per-step work it saves. So this variant does all
    its work step by step on (S, B, ...) blocks: the input projection, the
    backward factors (:func:`lstm_factors` on one step), and the gradients of
    the inputs and weights (accumulated with one batched matmul each per
    step). The bias rides along as a column of ones on the inputs.
    Same arguments and results as :class:`LSTMFunction` with members.
    """

    @staticmethod
    def forward(ctx, inputs, weight_ih, bias, h0, c0, weight_hh, reverse, on_grad):
        hidden = weight_hh.shape[-1]
        scale = lstm_scale(hidden, inputs)
        rows = scale.unsqueeze(1)
        steps_first = inputs.transpose(0, 1)  # (T, S, B, I)
        if bias is not None:
            steps_first = torch.cat([steps_first, steps_first.new_ones(steps_first.shape[:-1] + (1,))], dim=-1)
            weight_ih = torch.cat([weight_ih, bias.unsqueeze(-1)], dim=-1)  # (S, 4H, I+1)
        steps_first = steps_first.contiguous()
        weight_in_t = (weight_ih * rows).transpose(1, 2)  # (S, I(+1), 4H)
        weight_t = (weight_hh * rows).transpose(1, 2)  # (S, H, 4H)
        acts = h0.new_empty((steps_first.shape[0], *h0.shape[:-1], 4 * hidden))  # (T, S, B, 4H)
        cells, tanh_cells, outputs = (h0.new_empty((steps_first.shape[0], *h0.shape)) for _ in range(3))
        h, c = h0, c0
        for t in step_order(acts.shape[0], reverse):
            gates = torch.bmm(steps_first[t], weight_in_t, out=acts[t]).baddbmm_(h, weight_t)
            h, c = lstm_step(gates, c, cells[t], tanh_cells[t], outputs[t])
        ctx.save_for_backward(steps_first, weight_ih, acts, cells, tanh_cells, outputs, h0, c0, weight_hh)
        ctx.reverse, ctx.on_grad, ctx.has_bias = reverse, on_grad, bias is not None
        ctx.set_materialize_grads(False)
        return outputs.transpose(0, 1), h.clone(), c.clone()

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last, grad_c_last):
        steps_first, weight_in, acts, cells, tanh_cells, outputs, h0, c0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        order = step_order(acts.shape[0], not reverse)
        incoming = None if grad_outputs is None else grad_outputs.transpose(0, 1).contiguous().unbind(0)
        dh = torch.zeros_like(h0) if grad_h_last is None else grad_h_last
        dh = dh if incoming is None else dh + incoming[order[0]]
        dc = torch.zeros_like(c0) if grad_c_last is None else grad_c_last
        grad_weight_hh, grad_weight_in = torch.zeros_like(weight_hh), torch.zeros_like(weight_in)
        grad_steps = torch.empty_like(steps_first)  # (T, S, B, I(+1))
        spread = acts.new_empty(acts.shape[1:])  # (S, B, 4H): (dc, dc, dc, dh), reused every step
        for k, t in enumerate(order):
            previous = order[k + 1] if k + 1 < len(order) else None
            c_prev, h_prev = (c0, h0) if previous is None else (cells[previous], outputs[previous])
            to_c, to_gate = lstm_factors(acts[t], c_prev, outputs[t], tanh_cells[t])
            step_grad, dc = lstm_grad_step(dh, dc, to_c, to_gate, spread, on_grad, t)
            transposed = step_grad.transpose(1, 2)  # (S, 4H, B)
            grad_weight_hh.baddbmm_(transposed, h_prev)
            grad_weight_in.baddbmm_(transposed, steps_first[t])
            torch.bmm(step_grad, weight_in, out=grad_steps[t])
            dh = step_grad.bmm(weight_hh)  # into h_{t-1}
            if previous is not None and incoming is not None:
                dh += incoming[previous]
            dc = dc * acts[t].chunk(4, dim=-1)[1]  # into c_{t-1}, through f
        inputs_size = grad_steps.shape[-1] - ctx.has_bias
        grad_inputs = grad_steps[..., :inputs_size].transpose(0, 1)  # (S, T, B, I)
        grad_bias = grad_weight_in[..., -1] if ctx.has_bias else None
        return grad_inputs, grad_weight_in[..., :inputs_size], grad_bias, dh, dc, grad_weight_hh, None, None


class StreamingGRUFunction(GRUFunction):
    """:class:`GRUFunction` for many members, with a backward that works step by step.

    The forward is :class:`GRUFunction`'s. Its backward forms each factor of
    the chain rule for all steps at once, in whole-sequence passes over
    (S, T, B, 3H) tensors that outgrow the caches with members; here each
    step computes its own factors on (S, B, ...) blocks and accumulates the
    hidden-side weight and bias gradients with one batched matmul and one
    sum per step. Only dL/d(input term) is kept per step, for the input-side
    gradients at the end (one batched matmul each, as before).
    """

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last):
        inputs, weight_ih, gates, hidden_ns, outputs, h0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        hidden = h0.shape[-1]
        order = step_order(outputs.shape[1], not reverse)
        dh = first_dh(grad_outputs, grad_h_last, order[0], h0)
        grad_input = torch.empty_like(gates)  # (S, T, B, 3H): dL/d a_r, a_z, a_n (the input terms)
        step_grad = gates.new_empty(h0.shape[:-1] + (3 * hidden,))  # (S, B, 3H): of the hidden terms, reused
        grad_weight = torch.zeros_like(weight_hh)
        grad_bias = weight_hh.new_zeros(weight_hh.shape[:-1]) if ctx.has_bias else None  # (S, 3H)
        for k, t in enumerate(order):
            previous = order[k + 1] if k + 1 < len(order) else None
            h_prev = h0 if previous is None else outputs[:, previous]  # (S, B, H)
            if on_grad is not None:
                on_grad(t, "h", dh)  # total dL/dh_t
            r, z, n = gates[:, t].chunk(3, dim=-1)
            grad_r, grad_z, grad_n = grad_input[:, t].chunk(3, dim=-1)
            # d a_n = dh (1-z)(1-n^2)   d a_r = d a_n (W_hn h + b_hn) r(1-r)   d a_z = dh (h_{t-1} - n) z(1-z)
            torch.mul(dh, 1 - z, out=grad_n).mul_(1 - n * n)
            torch.mul(grad_n, hidden_ns[:, t], out=grad_r).mul_(r - r * r)
            torch.sub(h_prev, n, out=grad_z).mul_(dh).mul_(z - z * z)
            rz_part, n_part = step_grad.split((2 * hidden, hidden), dim=-1)
            rz_part.copy_(grad_input[:, t, :, : 2 * hidden])
            torch.mul(grad_n, r, out=n_part)  # d(W_hn h + b_hn)
            grad_weight.baddbmm_(step_grad.transpose(1, 2), h_prev)
            if grad_bias is not None:
                grad_bias += step_grad.sum(1)
            dh = affine(dh * z, step_grad, weight_hh)  # into h_{t-1}
            if previous is not None and grad_outputs is not None:
                dh += grad_outputs[:, previous]
        return (*input_grads(ctx, grad_input, inputs, weight_ih), dh, grad_weight, grad_bias, None, None)


class StreamingRNNFunction(RNNFunction):
    """:class:`RNNFunction` for many members, with a backward that works step by step.

    The forward is :class:`RNNFunction`'s. Its backward builds the
    activation's slope, a private copy of the gradient from above, the
    states each step read and a time-major gradient buffer as whole-sequence
    (S, T, B, H) tensors; with members each is megabytes of fresh memory per
    step of training. Here each step forms its slope on an (S, B, H) block,
    writes dL/d(pre-activation) into the one buffer the input-side gradients
    need, and accumulates the W_hh gradient with one batched matmul.
    """

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last):
        inputs, weight_ih, outputs, h0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        order = step_order(outputs.shape[1], not reverse)
        dh = first_dh(grad_outputs, grad_h_last, order[0], h0)
        grad_pre = torch.empty_like(outputs)  # (S, T, B, H)
        grad_weight = torch.zeros_like(weight_hh)
        for k, t in enumerate(order):
            previous = order[k + 1] if k + 1 < len(order) else None
            h_prev = h0 if previous is None else outputs[:, previous]  # (S, B, H)
            if on_grad is not None:
                on_grad(t, "h", dh)  # total dL/dh_t
            h = outputs[:, t]
            # The activation's derivative from its output: relu' = [h > 0], tanh' = 1 - h^2.
            slope = h > 0 if ctx.relu else 1 - h * h
            step_grad = torch.mul(dh, slope, out=grad_pre[:, t])  # (S, B, H)
            grad_weight.baddbmm_(step_grad.transpose(1, 2), h_prev)
            dh = step_grad.bmm(weight_hh)  # into h_{t-1}
            if previous is not None and grad_outputs is not None:
                dh += grad_outputs[:, previous]
        return (*input_grads(ctx, grad_pre, inputs, weight_ih), dh, grad_weight, None, None, None)


def use_streaming(inputs: Tensor, hidden_size: int) -> bool:
    """Whether an ensemble layer on ``inputs`` (S, T, B, I) should run step by step."""
    members, steps, batch = inputs.shape[:3]
    return members * steps * batch * hidden_size > WHOLE_SEQUENCE_LIMIT


def streaming_recurrence(
    kind: str,
    inputs: Tensor,
    weight_ih: Tensor,
    bias_ih: Tensor | None,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    state: Tensor | tuple[Tensor, Tensor],
    *,
    on_grad=None,
) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """:func:`gradlab.nn.bptt.recurrence` for an ensemble's layer, step by step (forward direction only).

    Raises:
        ValueError: if ``kind`` is not one of :data:`gradlab.nn.bptt.KINDS`.
    """
    if kind not in KINDS:
        raise ValueError(f"no step-by-step layer for kind {kind!r}; expected one of {list(KINDS)}")
    if kind == "GRU":
        return StreamingGRUFunction.apply(inputs, weight_ih, bias_ih, state, weight_hh, bias_hh, False, on_grad)
    bias = bias_ih if bias_ih is None else bias_ih + bias_hh  # both enter as a sum, as in recurrence
    if kind == "LSTM":
        outputs, h, c = StreamingLSTMFunction.apply(inputs, weight_ih, bias, state[0], state[1], weight_hh, False, on_grad)
        return outputs, (h, c)
    return StreamingRNNFunction.apply(inputs, weight_ih, bias, state, weight_hh, kind == "RNN_RELU", False, on_grad)
