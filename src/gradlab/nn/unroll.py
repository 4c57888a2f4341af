"""One layer and direction of a recurrent network, unrolled over a sequence.

:func:`unroll_direction` is the plain-autograd unroll of a cell's
:meth:`~gradlab.nn.cells.RecurrentCell.step` (:func:`gradlab.nn.bptt.bptt_unroll`
computes the same with a hand-written backward). :class:`LayerTrajectory` is
what one layer and direction read and computed, as
:meth:`gradlab.nn.network.RecurrentNet.trajectories` returns it for the
diagnostics.

Timesteps are input time for both directions: the backward direction reads
``x_{T-1}`` first, and its state at ``timestep == t`` is the one computed
after reading ``x_t``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gradlab.nn.cells import LSTMCell, RecurrentCell

State = Tensor | tuple[Tensor, Tensor]


@dataclass(frozen=True)
class StateKey:
    """Where a state sits in the unroll (see :mod:`gradlab.nn.network`)."""

    layer: int  # 0-based from the input
    direction: str  # "forward" or "backward"
    state: str  # "h", or "c" for the LSTM cell state
    timestep: int  # 0-based input time


StateObserver = Callable[[StateKey, Tensor], None]
GradientObserver = Callable[[StateKey, Tensor], None]


def reading_order(steps: int, reverse: bool) -> range:
    """The timesteps in the order a direction reads them."""
    return range(steps - 1, -1, -1) if reverse else range(steps)


def previous_states(states: Tensor, initial: Tensor, *, reverse: bool, dim: int = 1) -> Tensor:
    """The state each step read: h_{t-1} at t (h_{t+1} when reversed), ``initial`` first.

    Args:
        states: the states in input time along ``dim`` (batch-first (B, T, H) by default).
        initial: the state read by the first step, shaped like one timestep of ``states``.
        reverse: whether the direction reads the sequence backwards.
        dim: the time dimension of ``states``.

    Returns:
        A tensor shaped like ``states``.
    """
    first = initial.unsqueeze(dim)
    steps = states.shape[dim]
    if reverse:
        return torch.cat([states.narrow(dim, 1, steps - 1), first], dim=dim)
    return torch.cat([first, states.narrow(dim, 0, steps - 1)], dim=dim)


def unroll_direction(
    cell: RecurrentCell,
    inputs: Tensor,
    state: State,
    *,
    reverse: bool,
    expose: Callable[[int, State], None] | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over ``inputs`` (B, T, I) in one direction, with plain autograd.

    Args:
        cell: the layer's cell.
        inputs: the layer's input sequence (B, T, I), in input time.
        state: the initial state, (B, H) or an LSTM pair.
        reverse: read the sequence from t = T-1 down to 0.
        expose: called as ``expose(t, state)`` after every step.

    Returns:
        The outputs (B, T, H) in input time order (h_t at position t), and the final state.
    """
    # unbind, not x_proj[:, t]: the backward of an indexing view writes a
    # full-size zero tensor per step (quadratic in T); unbind's is one stack.
    x_steps = cell.project_input(inputs).unbind(1)  # T x (B, G*H)
    steps = len(x_steps)
    is_lstm = isinstance(cell, LSTMCell)
    outputs: list[Tensor] = [None] * steps  # type: ignore[list-item]
    for t in reading_order(steps, reverse):
        state = cell.step(x_steps[t], state)
        outputs[t] = state[0] if is_lstm else state  # (B, H)
        if expose is not None:
            expose(t, state)
    return layer_outputs(cell, torch.stack(outputs, dim=1), inputs), state  # (B, T, H)


def layer_outputs(cell: RecurrentCell, states: Tensor, inputs: Tensor) -> Tensor:
    """What a layer passes on: the states (B, T, H), or the cell's ``readout`` of them and its inputs (the LRU)."""
    readout = getattr(cell, "readout", None)
    return states if readout is None else readout(states, inputs)


def scan_direction(
    cell: RecurrentCell,
    inputs: Tensor,
    state: Tensor,
    *,
    reverse: bool,
    on_grad: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Run a scanning cell (``cell.scans``, :mod:`gradlab.nn.modern`) over ``inputs`` (B, T, I): all states at once.

    The backward direction scans the time-reversed sequence. ``on_grad(t, grad)`` is called during backward with
    the total gradient dL/dh_t (B, n) of every state (input time t), as the step loop's tensor hooks would see it.

    Returns:
        The states (B, T, n) and the layer's outputs (B, T, H) (:func:`layer_outputs`), both in input time.
    """
    x_proj = cell.project_input(inputs)  # (B, T, G*H)
    if reverse:
        x_proj = x_proj.flip(1)
    steps = x_proj.shape[1]
    hand_over = None
    if on_grad is not None:
        def hand_over(grad: Tensor) -> None:  # grad (B, T, n) in reading order
            for position in range(steps):
                on_grad(steps - 1 - position if reverse else position, grad[:, position])
    states = cell.scan(x_proj, state, hand_over)  # (B, T, n)
    if reverse:
        states = states.flip(1)
    return states, layer_outputs(cell, states, inputs)


@dataclass(frozen=True)
class LayerTrajectory:
    """What one layer and direction read and computed, all in input time.

    ``inputs`` (B, T, I) is the layer's input sequence, ``h`` (B, T, H) its
    states (the LRU's packed [Re, Im] states (B, T, 2H), which differ from
    its outputs), ``c`` (B, T, H) the LSTM cell states (None otherwise), and
    ``initial`` the state its first step read.
    """

    cell: RecurrentCell
    inputs: Tensor
    h: Tensor
    c: Tensor | None
    initial: State
    reverse: bool

    @property
    def states(self) -> Tensor:
        """The packed states (B, T, state_size): h, or h then c for the LSTM."""
        return self.h if self.c is None else torch.cat([self.h, self.c], dim=2)

    def previous(self) -> Tensor:
        """The packed state each step read, (B, T, state_size)."""
        return previous_states(self.states, self.cell.pack_state(self.initial), reverse=self.reverse)

    def positions(self) -> range:
        """Timesteps in reading order."""
        return reading_order(self.h.shape[1], self.reverse)
