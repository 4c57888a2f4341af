"""Whole-sequence recurrent layers with a hand-written backprop-through-time.

:func:`bptt_unroll` computes exactly what :func:`gradlab.nn.models.unroll_direction`
computes, for the cells whose derivative it knows (LSTM, GRU, and RNNs with
tanh or relu), as one ``torch.autograd.Function`` per layer and direction:

- the forward pass runs the input projection and the recurrence without
  building an autograd graph, writing the gate activations it needs straight
  into whole-sequence buffers;
- the backward pass walks t = T-1 .. 0 once, computing dL/dh_t (and dL/dc_t)
  — the total gradient through time and from above — with a handful of
  tensor operations per step; every factor that does not depend on the
  recurrence is computed for a block of steps at once, and each weight
  gradient is a few matmuls over all steps (one per block for the LSTM and
  GRU, one in all for the RNN).

Because the backward loop holds dL/dh_t anyway, it hands each one to an
optional ``on_grad(t, name, grad)`` callback: that is how gradient
recording costs almost nothing on this path.

:func:`recurrence` is the layer itself, on time-major inputs. It also runs an
ensemble of S independent layers at once: give every tensor a leading
member dimension (inputs (S, T, B, I), states (S, B, H), weights
(S, G*H, H)) and each matmul becomes a batched one (``bmm``/``baddbmm``);
the elementwise maths is the same code (:mod:`gradlab.nn.bptt.steps`).
:mod:`gradlab.training.ensemble` builds on that.

Everything is time-major inside ((T, B, ...), so that step t of a member is a
contiguous block); :func:`bptt_unroll` takes and returns batch-first tensors
like ``unroll_direction``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from gradlab.nn.bptt.functions import GRUFunction, LSTMFunction, RNNFunction
from gradlab.nn.bptt.steps import TIME
from gradlab.nn.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell

__all__ = ["KINDS", "TIME", "GradCallback", "bptt_unroll", "cell_kind", "has_handwritten_backward", "recurrence"]

GradCallback = Callable[[int, str, Tensor], None]

#: The cells :func:`recurrence` runs, by mode name.
KINDS: tuple[str, ...] = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")



def has_handwritten_backward(cell: RecurrentCell) -> bool:
    """Whether :func:`bptt_unroll` has a hand-written backward for ``cell``."""
    if isinstance(cell, RNNCell):
        return cell.nonlinearity in ("tanh", "relu")
    return isinstance(cell, (LSTMCell, GRUCell))


def recurrence(
    kind: str,
    inputs: Tensor,
    weight_ih: Tensor,
    bias_ih: Tensor | None,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    state: Tensor | tuple[Tensor, Tensor],
    *,
    reverse: bool = False,
    on_grad: GradCallback | None = None,
) -> tuple[Tensor, Tensor | tuple[Tensor, Tensor]]:
    """One recurrent layer over a time-major input, with a hand-written backward.

    Args:
        kind: one of :data:`KINDS`.
        inputs: (T, B, I) layer inputs, or (S, T, B, I) for S members.
        weight_ih, bias_ih, weight_hh, bias_hh: the cell's parameters
            ((G*H, I), (G*H,), (G*H, H), (G*H,)), each with a leading S for
            members; biases may be None.
        state: the initial state (B, H) (or (S, B, H)); a pair (h, c) for LSTM.
        reverse: read the sequence from t = T-1 down to 0.
        on_grad: called during backward as ``on_grad(t, "h" | "c", grad)`` with
            the total gradient of the loss with respect to that state (input
            time t; the tensor is reused afterwards, so read it, don't keep it).

    Returns:
        outputs ([S,] T, B, H) in input time order, and the final state.
    """
    if kind not in KINDS:
        raise ValueError(f"no hand-written backward for kind {kind!r}; expected one of {list(KINDS)}")
    if kind == "GRU":
        return GRUFunction.apply(inputs, weight_ih, bias_ih, state, weight_hh, bias_hh, reverse, on_grad)
    # LSTM and RNN: both biases enter the pre-activation as a sum, so fold b_hh
    # into the whole-sequence projection instead of adding it per step.
    bias = bias_ih if bias_ih is None else bias_ih + bias_hh
    if kind == "LSTM":
        outputs, h, c = LSTMFunction.apply(inputs, weight_ih, bias, state[0], state[1], weight_hh, reverse, on_grad)
        return outputs, (h, c)
    return RNNFunction.apply(inputs, weight_ih, bias, state, weight_hh, kind == "RNN_RELU", reverse, on_grad)


def cell_kind(cell: RecurrentCell) -> str:
    """The :data:`KINDS` entry of ``cell``.

    Raises:
        ValueError: if ``cell`` has no hand-written backward.
    """
    if not has_handwritten_backward(cell):
        raise ValueError(f"no hand-written backward for {cell!r}; use gradlab.nn.models.unroll_direction")
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
    """Same contract as :func:`gradlab.nn.models.unroll_direction`, with a hand-written backward.

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
    outputs, final = recurrence(
        kind, inputs.transpose(0, 1), cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh, state,
        reverse=reverse, on_grad=on_grad,
    )  # (T, B, H)
    return outputs.transpose(0, 1), final
