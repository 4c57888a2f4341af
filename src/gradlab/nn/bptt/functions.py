"""The hand-written BPTT layers as ``torch.autograd.Function`` s, one per cell kind.

Each takes the layer's inputs and parameters, runs the projection and the
recurrence without an autograd graph, and computes every gradient by hand;
see :mod:`gradlab.nn.bptt` for the contract.
"""

from __future__ import annotations

import torch

from gradlab.nn.bptt.steps import (
    TIME,
    LayerGrads,
    add_matmul_,
    affine,
    block_buffer,
    block_previous,
    first_dh,
    input_grads,
    into_previous,
    lstm_factors,
    lstm_grad_step,
    lstm_scale,
    lstm_step,
    matmul,
    member_major,
    previous_states,
    project,
    step_buffer,
    step_order,
    weight_grad,
    writable_steps,
)

#: Timesteps that the LSTM and GRU backward passes handle together: their factors,
#: their gradients and their share of the weight gradients. Computed for a
#: whole long sequence at once they no longer fit in the cache, and the
#: per-step loop then reads them back from memory: at T = 256, B = 100, H = 32
#: blocks of 32 steps made that work 2x (float32) to 5x (float64) faster, and
#: blocks of 8 took the whole step (forward and backward) 4% (LSTM) and 8% (GRU)
#: less time than blocks of 32 at T = 32, and no more at T = 256. Since the
#: weight gradients are summed per block too, no whole-sequence gradient buffer
#: is made (its fresh pages cost hundreds of page faults a step): blocks of
#: 4, 8, 16 and 32 steps then take the same time within 4%.
FACTOR_BLOCK = 8


class LSTMFunction(torch.autograd.Function):
    """inputs ([S,] T, B, I), W_ih, b_ih + b_hh, h0, c0 ([S,] B, H), W_hh ([S,] 4H, H) -> outputs, h_T, c_T."""

    @staticmethod
    def forward(ctx, inputs, weight_ih, bias, h0, c0, weight_hh, reverse, on_grad):
        hidden = weight_hh.shape[-1]
        # One sigmoid for all four gates: with the g rows of the pre-activation
        # doubled, s_g = sigmoid(2 a_g) and tanh(a_g) = 2 s_g - 1, so
        # c' = f c + i (2 s_g - 1) = f c - i + 2 i s_g. Per-step operator count,
        # not arithmetic, is what costs at these sizes. The doubling is exact,
        # and goes into the weights, so the projection lands ready to use.
        scale = lstm_scale(hidden, inputs)
        rows = scale.unsqueeze(1)  # (4H, 1)
        # Each step adds h W^T in place into the whole-sequence gate buffer
        # (addmm_ skips addmm's copy of its input), and writes its states into
        # whole-sequence buffers: no per-step tensors to stack.
        acts = project(inputs, weight_ih * rows, None if bias is None else bias * scale)  # i, f, s_g, o after the loop
        weight_t = (weight_hh * rows).transpose(-1, -2)  # ([S,] H, 4H)
        cells = acts.new_empty(acts.shape[:-1] + (hidden,))  # ([S,] T, B, H)
        tanh_cells, outputs = torch.empty_like(cells), torch.empty_like(cells)
        # Per-step views made once (unbind is one call; indexing per step is one each).
        act_steps, cell_steps = acts.unbind(TIME), cells.unbind(TIME)
        tanh_steps, out_steps = tanh_cells.unbind(TIME), outputs.unbind(TIME)
        gate_steps = list(zip(*(gate.unbind(TIME) for gate in acts.chunk(4, dim=-1))))  # i, f, s_g, o views
        h, c = h0, c0
        for t in step_order(acts.shape[TIME], reverse):
            gates = add_matmul_(act_steps[t], h, weight_t)
            h, c = lstm_step(gates, c, cell_steps[t], tanh_steps[t], out_steps[t], gate_steps[t])
        ctx.save_for_backward(inputs, weight_ih, acts, cells, tanh_cells, outputs, h0, c0, weight_hh)
        ctx.reverse, ctx.on_grad = reverse, on_grad
        ctx.set_materialize_grads(False)
        # The final state is returned as copies: an output may not be a view of another.
        return outputs, h.clone(), c.clone()

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last, grad_c_last):
        inputs, weight_ih, acts, cells, tanh_cells, outputs, h0, c0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        order = step_order(cells.shape[TIME], not reverse)
        f_steps = acts.chunk(4, dim=-1)[1].unbind(TIME)
        dh = first_dh(grad_outputs, grad_h_last, order[0], h0)
        dc = torch.zeros_like(c0) if grad_c_last is None else grad_c_last
        incoming = writable_steps(grad_outputs)
        grads = LayerGrads(ctx, inputs, weight_ih, outputs, h0, reverse)
        # Block by block of FACTOR_BLOCK steps (see there): the block's factors, which its steps turn into
        # dL/d(pre-activation) in place, and the weight gradients of the block, while all are in the cache.
        size = min(FACTOR_BLOCK, len(order))
        to_c_block, to_gate_block = block_buffer(cells, size), block_buffer(acts, size)
        spread = acts.new_empty(h0.shape[:-1] + acts.shape[-1:])  # ([S,] B, 4H): (dc, dc, dc, dh) of a step
        for first in range(0, len(order), size):
            times = order[first : first + size]
            start, count = min(times), len(times)
            block = lambda tensor: tensor.narrow(TIME, start, count)  # noqa: E731 - the block's steps
            c_prev = block_previous(cells, c0, start, count, reverse)
            to_c, to_gates = lstm_factors(block(acts), c_prev, block(outputs), block(tanh_cells),
                                          out=(block_start(to_c_block, count), block_start(to_gate_block, count)))
            to_c_steps, to_gate_steps = to_c.unbind(TIME), to_gates.unbind(TIME)
            for k, t in enumerate(times, first):
                step_grad, dc = lstm_grad_step(dh, dc, to_c_steps[t - start], to_gate_steps[t - start], spread,
                                               on_grad, t)
                dh = into_previous(step_grad, weight_hh, incoming, order, k)  # into h_{t-1}
                dc = dc * f_steps[t]  # into c_{t-1}
            grads.add(to_gates, start)  # now dL/d(pre-activation) of the block's steps
        return (*grads.input_side(), dh, dc, grads.grad_weight_hh, None, None)


def block_start(buffer: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` steps of a :func:`block_buffer` (a shorter last block uses part of it)."""
    return buffer if buffer.shape[TIME] == count else buffer.narrow(TIME, 0, count)


class GRUFunction(torch.autograd.Function):
    """inputs ([S,] T, B, I), W_ih, b_ih, h0 ([S,] B, H), W_hh ([S,] 3H, H), b_hh ([S,] 3H) -> outputs, h_T."""

    @staticmethod
    def forward(ctx, inputs, weight_ih, bias_ih, h0, weight_hh, bias_hh, reverse, on_grad):
        hidden = weight_hh.shape[-1]
        x_proj = project(inputs, weight_ih, bias_ih)  # ([S,] T, B, 3H)
        weight_t = weight_hh.transpose(-1, -2)  # ([S,] H, 3H)
        bias = None if bias_hh is None else bias_hh.unsqueeze(-2)  # ([S,] 1, 3H)
        gates = torch.empty_like(x_proj)  # r, z, n
        # W_hh h + b_hh of every step, written where it is computed (T, [S,] B, 3H): its n part is kept for
        # the backward.
        projections = step_buffer(x_proj.shape[TIME], x_proj.shape[:TIME] + x_proj.shape[TIME + 1 :], x_proj)
        outputs = x_proj.new_empty(x_proj.shape[:-1] + (hidden,))  # ([S,] T, B, H)
        # Per-step views of the r,z and n parts made once, not split per step (view calls cost like small ops).
        x_rz_steps, x_n_steps = (part.unbind(TIME) for part in x_proj.split((2 * hidden, hidden), dim=-1))
        rz_steps, n_steps = (part.unbind(TIME) for part in gates.split((2 * hidden, hidden), dim=-1))
        r_steps, z_steps = (part.unbind(TIME) for part in gates.chunk(3, dim=-1)[:2])  # views within rz
        h_rz_steps, h_n_steps = (part.unbind(0) for part in projections.split((2 * hidden, hidden), dim=-1))
        out_steps = outputs.unbind(TIME)
        h = h0
        for t in step_order(x_proj.shape[TIME], reverse):
            if bias is None:
                matmul(h, weight_t, out=projections[t])  # ([S,] B, 3H)
            else:
                affine(bias, h, weight_t, out=projections[t])
            x_rz, x_n, rz, n = x_rz_steps[t], x_n_steps[t], rz_steps[t], n_steps[t]
            torch.add(x_rz, h_rz_steps[t], out=rz).sigmoid_()
            r, z = r_steps[t], z_steps[t]
            torch.addcmul(x_n, r, h_n_steps[t], out=n).tanh_()
            h = torch.addcmul(n, z, h - n, out=out_steps[t])  # (1 - z) n + z h
        hidden_ns = member_major(projections)[..., 2 * hidden :]  # W_hn h + b_hn, ([S,] T, B, H)
        ctx.save_for_backward(inputs, weight_ih, gates, hidden_ns, outputs, h0, weight_hh)
        ctx.reverse, ctx.on_grad, ctx.has_bias = reverse, on_grad, bias_hh is not None
        ctx.set_materialize_grads(False)
        return outputs, h.clone()

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last):
        inputs, weight_ih, gates, hidden_n, outputs, h0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        hidden = h0.shape[-1]
        order = step_order(outputs.shape[TIME], not reverse)
        dh = first_dh(grad_outputs, grad_h_last, order[0], h0)
        incoming = None if grad_outputs is None else grad_outputs.unbind(TIME)
        grads = LayerGrads(ctx, inputs, weight_ih, outputs, h0, reverse, hidden_bias_index=5 if ctx.has_bias else None)
        # Block by block of FACTOR_BLOCK steps (see there): the block's factors, its steps' gradients and
        # its share of the weight gradients, while all are in the cache. Per step the loop writes
        # dL/d(W_hh h + b_hh) into hidden_block and dL/d a_n (the input term's n part, without the factor r)
        # into input_block; the input term's r and z parts are the hidden term's.
        size = min(FACTOR_BLOCK, len(order))
        hidden_block, input_block = block_buffer(gates, size), block_buffer(gates, size)
        to_hidden_block, to_n_block = block_buffer(gates, size), block_buffer(outputs, size)
        for first in range(0, len(order), size):
            times = order[first : first + size]
            start, count = min(times), len(times)
            block = lambda tensor: tensor.narrow(TIME, start, count)  # noqa: E731 - the block's steps
            h_prev = block_previous(outputs, h0, start, count, reverse)
            to_hidden, dh_to_dn = gru_factors(block(gates), block(hidden_n), h_prev,
                                              out=(block_start(to_hidden_block, count), block_start(to_n_block, count)))
            grad_hidden, grad_input = block_start(hidden_block, count), block_start(input_block, count)
            to_hidden_steps, to_n_steps = to_hidden.unbind(TIME), dh_to_dn.unbind(TIME)
            z_steps = block(gates).chunk(3, dim=-1)[1].unbind(TIME)
            hidden_steps, grad_n_steps = grad_hidden.unbind(TIME), grad_input[..., 2 * hidden :].unbind(TIME)
            for k, t in enumerate(times, first):
                if k > 0 and incoming is not None:
                    dh = dh + incoming[t]  # total dL/dh_t
                if on_grad is not None:
                    on_grad(t, "h", dh)
                i = t - start
                torch.mul(dh, to_n_steps[i], out=grad_n_steps[i])
                step_grad = torch.cat((dh, dh, dh), dim=-1, out=hidden_steps[i]).mul_(to_hidden_steps[i])
                dh = affine(dh * z_steps[i], step_grad, weight_hh)  # into h_{t-1}
            grad_input[..., : 2 * hidden].copy_(grad_hidden[..., : 2 * hidden])
            grads.add(grad_input, start, grad_hidden)
        return (*grads.input_side(), dh, grads.grad_weight_hh, grads.grad_hidden_bias, None, None)


def gru_factors(gates: torch.Tensor, hidden_n: torch.Tensor, h_prev: torch.Tensor,
                out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """What the GRU backward multiplies the total dL/dh_t by: into W_hh h + b_hh ([S,] T, B, 3H), and into a_n.

    ``out``: where to write the two (else new tensors).

    Per step, with dh the total dL/dh_t:
      d a_r = dh (1-z)(1-n^2) (W_hn h + b_hn) r (1-r)   d a_z = dh (h_{t-1} - n) z (1-z)
      d a_n = dh (1-z)(1-n^2)                           d(W_hn h + b_hn) = d a_n r
    The input term's r and z parts are those of W_hh h + b_hh; r (1-r) and z (1-z), written x - x*x, are
    formed in one pass, and each part is written into its place in the result (half the time of forming
    each product apart and joining them).
    """
    hidden = hidden_n.shape[-1]
    r, z, n = gates.chunk(3, dim=-1)  # each ([S,] T, B, H)
    rz = gates.narrow(-1, 0, 2 * hidden)
    slope_r, slope_z = torch.addcmul(rz, rz, rz, value=-1.0).chunk(2, dim=-1)  # r (1-r), z (1-z)
    keep = 1 - z
    to_hidden, dh_to_dn = (torch.empty_like(gates), None) if out is None else out
    dh_to_dn = torch.addcmul(keep, keep, n * n, value=-1.0, out=dh_to_dn)  # (1-z)(1-n^2)
    to_r, to_z, to_n = to_hidden.chunk(3, dim=-1)
    torch.mul(dh_to_dn, hidden_n, out=to_r).mul_(slope_r)
    torch.sub(h_prev, n, out=to_z).mul_(slope_z)
    torch.mul(dh_to_dn, r, out=to_n)
    return to_hidden, dh_to_dn


class RNNFunction(torch.autograd.Function):
    """inputs ([S,] T, B, I), W_ih, b_ih + b_hh, h0 ([S,] B, H), W_hh ([S,] H, H) -> outputs, h_T."""

    @staticmethod
    def forward(ctx, inputs, weight_ih, bias, h0, weight_hh, relu, reverse, on_grad):
        weight_t = weight_hh.transpose(-1, -2)
        outputs = project(inputs, weight_ih, bias)  # ([S,] T, B, H): each step adds h W^T in place
        out_steps = outputs.unbind(TIME)
        h = h0
        for t in step_order(outputs.shape[TIME], reverse):
            h = add_matmul_(out_steps[t], h, weight_t)
            h = h.relu_() if relu else h.tanh_()
        ctx.save_for_backward(inputs, weight_ih, outputs, h0, weight_hh)
        ctx.relu, ctx.reverse, ctx.on_grad = relu, reverse, on_grad
        ctx.set_materialize_grads(False)
        return outputs, h.clone()

    @staticmethod
    def backward(ctx, grad_outputs, grad_h_last):
        inputs, weight_ih, outputs, h0, weight_hh = ctx.saved_tensors
        reverse, on_grad = ctx.reverse, ctx.on_grad
        # The activation's derivative from its output: relu' = [h > 0], tanh' = 1 - h^2.
        slope = (outputs > 0).to(outputs.dtype) if ctx.relu else 1 - outputs * outputs  # ([S,] T, B, H)
        order = step_order(outputs.shape[TIME], not reverse)
        dh = first_dh(grad_outputs, grad_h_last, order[0], h0)
        incoming = writable_steps(grad_outputs)
        grad_pre = step_buffer(len(order), h0.shape, outputs)  # (T, [S,] B, H)
        slope_steps = slope.unbind(TIME)
        for k, t in enumerate(order):
            if on_grad is not None:
                on_grad(t, "h", dh)  # total dL/dh_t
            step_grad = torch.mul(dh, slope_steps[t], out=grad_pre[t])  # ([S,] B, H)
            dh = into_previous(step_grad, weight_hh, incoming, order, k)
        grad_pre = member_major(grad_pre)
        grad_weight = weight_grad(grad_pre, previous_states(outputs, h0, reverse))
        return (*input_grads(ctx, grad_pre, inputs, weight_ih), dh, grad_weight, None, None, None)
