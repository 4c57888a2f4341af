"""Stacked, optionally bidirectional recurrent networks and a classifier on top.

:class:`RecurrentNet` unrolls gradlab cells over a sequence the way
``torch.nn.RNN``/``LSTM``/``GRU`` do (same initial/final state layout
``(num_layers * num_directions, B, H)``, same weights via
:func:`load_torch_weights`), with three bidirectional designs:

- ``none``: one direction, reading the sequence forwards.
- ``interleaved``: torch.nn's design; layer k of each direction reads both
  directions' layer k-1 outputs, concatenated (forward first).
- ``separate``: two independent L-layer stacks, one reading forwards and one
  backwards; each layer reads only its own direction's previous layer (the
  coursework's bidirectional architecture).

Where per-timestep states are exposed
-------------------------------------
Every state the unroll computes passes through one point,
:meth:`RecurrentNet.add_state_observer`. An observer is called as
``observer(key, tensor)`` with a :class:`StateKey` (layer, direction, state
``"h"`` or ``"c"``, timestep) and the very tensor the network goes on to use,
both for the next step and for the layer above or the readout; so a tensor
hook registered on it sees the *total* gradient dL/dh_t. Timesteps are input
time for both directions: the backward direction's state at ``timestep == t``
is the one computed after reading ``x_t``. With no observer attached, the
unroll does no extra work.

Gradients of those states are exposed at the same place:
:meth:`RecurrentNet.add_gradient_observer` calls ``observer(key, grad)``
during backward with the total gradient dL/dh_t (and dL/dc_t), whichever
unroll runs.

Two unrolls compute the same thing. :func:`unroll_direction` is plain
autograd over :meth:`step` of the cell; :func:`gradlab.bptt.bptt_unroll` is
one ``autograd.Function`` per layer and direction with a hand-written
backprop-through-time, used by default where it exists (LSTM, GRU, tanh and
relu RNNs) and while no *state* observer is attached (a state observer may
register its own tensor hooks, which need the autograd graph).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradlab.config import (  # noqa: F401 - the vocabulary is re-exported where models are built
    BASE_MODES,
    BIDIRECTIONAL_CHOICES,
    DIRECTIONS,
    READOUTS,
    ModelConfig,
    check_positive_int,
    normalise_mode,
    parse_mode,
)
from gradlab.cells import GRUCell, LSTMCell, RNNCell, RecurrentCell
from gradlab.bptt import bptt_unroll, has_handwritten_backward
from gradlab.initialisation import initialise_, parse_scheme


Direction = Literal["forward", "backward"]
State = Tensor | tuple[Tensor, Tensor]


@dataclass(frozen=True)
class StateKey:
    """Where a state sits in the unroll (see the module docstring)."""

    layer: int  # 0-based from the input
    direction: str  # "forward" or "backward"
    state: str  # "h", or "c" for the LSTM cell state
    timestep: int  # 0-based input time


StateObserver = Callable[[StateKey, Tensor], None]
GradientObserver = Callable[[StateKey, Tensor], None]


def make_cell(mode: str, input_size: int, hidden_size: int, bias: bool = True) -> RecurrentCell:
    """A fresh cell for ``mode`` (see :func:`parse_mode`)."""
    kind, activation = parse_mode(mode)
    if kind == "LSTM":
        return LSTMCell(input_size, hidden_size, bias)
    if kind == "GRU":
        return GRUCell(input_size, hidden_size, bias)
    return RNNCell(input_size, hidden_size, bias, nonlinearity=activation)


def unroll_direction(
    cell: RecurrentCell,
    inputs: Tensor,
    state: State,
    *,
    reverse: bool,
    expose: Callable[[int, State], None] | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over a whole sequence in one direction.

    The input projection of all timesteps is one matmul; only the recurrence
    runs per step.

    Args:
        cell: the cell of this layer and direction.
        inputs: (B, T, I) layer inputs, batch first, in input time order.
        state: the initial state, (B, H) or ((B, H), (B, H)) for LSTM.
        reverse: read the sequence from t = T-1 down to 0.
        expose: called as ``expose(t, state)`` after each step, with t in input time.

    Returns:
        outputs (B, T, H) in input time order (h_t at position t), and the final state.
    """
    # unbind, not x_proj[:, t]: the backward of an indexing view writes a
    # full-size zero tensor per step (quadratic in T); unbind's is one stack.
    x_steps = cell.project_input(inputs).unbind(1)  # T x (B, G*H)
    steps = len(x_steps)
    is_lstm = isinstance(cell, LSTMCell)
    outputs: list[Tensor] = [None] * steps  # type: ignore[list-item]
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        state = cell.step(x_steps[t], state)
        outputs[t] = state[0] if is_lstm else state  # (B, H)
        if expose is not None:
            expose(t, state)
    return torch.stack(outputs, dim=1), state  # (B, T, H)


class RecurrentNet(nn.Module):
    """A stack of recurrent layers, optionally bidirectional.

    Args:
        mode: ``RNN_TANH``, ``RNN_RELU``, ``LSTM``, ``GRU``, or ``RNN_<ACTIVATION>``
            for any activation of :data:`gradlab.cells.ACTIVATIONS`.
        input_size: features per timestep, F.
        hidden_size: state size per direction, H.
        num_layers: stacked layers per direction, >= 1.
        bias: whether cells have biases.
        bidirectional: ``none``, ``separate`` or ``interleaved`` (module docstring).
        handwritten_bptt: use the hand-written BPTT layer (gradlab.bptt) where it exists (see the module docstring);
            ``False`` forces the plain autograd unroll.

    Cells live in ``cells``, indexed ``layer * num_directions + direction``
    (torch's order for ``h_0``/``h_n``).

    Shapes: input (B, T, F), optional initial state (L*D, B, H) (a pair of them
    for LSTM) -> outputs (B, T, D*H) of the last layer, final state in the
    initial state's layout.
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        bidirectional: str = "none",
        handwritten_bptt: bool = True,
    ) -> None:
        super().__init__()
        self.mode = normalise_mode(mode)
        self.handwritten_bptt = handwritten_bptt
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
        if bidirectional not in BIDIRECTIONAL_CHOICES:
            raise ValueError(
                f"unknown bidirectional choice {bidirectional!r}; expected one of {list(BIDIRECTIONAL_CHOICES)}"
            )
        self.kind, self.activation = parse_mode(mode)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.bidirectional = bidirectional
        self.directions: tuple[str, ...] = DIRECTIONS if bidirectional != "none" else DIRECTIONS[:1]
        width = len(self.directions)
        self.cells = nn.ModuleList()
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * (width if bidirectional == "interleaved" else 1)
            for _ in self.directions:
                self.cells.append(make_cell(self.mode, layer_input, hidden_size, bias))
        # OrderedDict, not dict: RemovableHandle keeps a weak reference to it.
        self._state_observers: OrderedDict[int, StateObserver] = OrderedDict()
        self._gradient_observers: OrderedDict[int, GradientObserver] = OrderedDict()

    @property
    def num_directions(self) -> int:
        return len(self.directions)

    @property
    def output_size(self) -> int:
        """Features per timestep of the last layer's outputs, D*H."""
        return self.num_directions * self.hidden_size

    def cell(self, layer: int, direction: str = "forward") -> RecurrentCell:
        """The cell of ``layer`` and ``direction``."""
        return self.cells[layer * self.num_directions + self.directions.index(direction)]

    def add_state_observer(self, observer: StateObserver) -> RemovableHandle:
        """Call ``observer(key, tensor)`` for every state of every later forward pass.

        Returns:
            A handle whose ``remove()`` detaches the observer.
        """
        handle = RemovableHandle(self._state_observers)
        self._state_observers[handle.id] = observer
        return handle

    def add_gradient_observer(self, observer: GradientObserver) -> RemovableHandle:
        """Call ``observer(key, grad)`` with dL/d(state) for every state, during backward.

        ``grad`` is the total gradient of whatever is differentiated with
        respect to the state at ``key`` (through the recurrence and from
        above). The tensor may be reused once the call returns: read it (for
        example its norm), don't keep it.

        Returns:
            A handle whose ``remove()`` detaches the observer.
        """
        handle = RemovableHandle(self._gradient_observers)
        self._gradient_observers[handle.id] = observer
        return handle

    def _notify_gradient(self, key: StateKey, grad: Tensor) -> None:
        for observer in list(self._gradient_observers.values()):
            observer(key, grad)

    def _expose(self, layer: int, direction: str, t: int, state: State) -> None:
        states = (("h", state[0]), ("c", state[1])) if self.kind == "LSTM" else (("h", state),)
        for name, tensor in states:
            key = StateKey(layer, direction, name, t)
            for observer in list(self._state_observers.values()):
                observer(key, tensor)
            if self._gradient_observers and tensor.requires_grad:
                tensor.register_hook(lambda grad, key=key: self._notify_gradient(key, grad))

    def initialise_(self, scheme: str = "default", **kwargs) -> "RecurrentNet":
        """Apply an init scheme to every cell (see :func:`gradlab.initialisation.initialise_`)."""
        for cell in self.cells:
            initialise_(cell, scheme, **kwargs)
        return self

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 3:
            raise ValueError(
                f"expected input of shape (batch, time, features={self.input_size}), "
                f"got a {x.dim()}-d tensor of shape {tuple(x.shape)}"
            )
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"expected {self.input_size} features per timestep (input shape (batch, time, "
                f"{self.input_size})), got {x.shape[2]} (shape {tuple(x.shape)})"
            )
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"expected a non-empty batch and sequence, got shape {tuple(x.shape)}")

    def _initial_states(self, x: Tensor, hx: State | None) -> list[State]:
        batch = x.shape[0]
        count = self.num_layers * self.num_directions
        expected = (count, batch, self.hidden_size)
        if hx is None:
            zeros = x.new_zeros(batch, self.hidden_size)
            return [(zeros, zeros) if self.kind == "LSTM" else zeros] * count
        parts = hx if self.kind == "LSTM" else (hx,)
        if self.kind == "LSTM" and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ValueError("LSTM initial state must be a pair (h_0, c_0)")
        for part in parts:
            if not isinstance(part, Tensor) or tuple(part.shape) != expected:
                got = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise ValueError(f"expected initial state of shape {expected} (layers*directions, batch, hidden), got {got}")
        if self.kind == "LSTM":
            return list(zip(hx[0].unbind(0), hx[1].unbind(0)))
        return list(hx.unbind(0))

    def forward(self, x: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        """Unroll the stack over ``x`` (B, T, F); returns (outputs (B, T, D*H), final state)."""
        self._check_input(x)
        initial = self._initial_states(x, hx)
        handwritten = self.handwritten_bptt and not self._state_observers
        tapped = bool(self._gradient_observers)
        finals: list[State] = []
        layer_inputs = [x] * self.num_directions  # what each direction reads at this layer
        for layer in range(self.num_layers):
            outputs = []
            for d, direction in enumerate(self.directions):
                index = layer * self.num_directions + d
                cell = self.cells[index]
                if handwritten and has_handwritten_backward(cell):
                    on_grad = None
                    if tapped:
                        def on_grad(t: int, name: str, grad: Tensor, layer=layer, direction=direction) -> None:
                            self._notify_gradient(StateKey(layer, direction, name, t), grad)
                    out, final = bptt_unroll(cell, layer_inputs[d], initial[index], reverse=d == 1, on_grad=on_grad)
                else:
                    expose = None
                    if self._state_observers or tapped:
                        def expose(t: int, state: State, layer=layer, direction=direction) -> None:
                            self._expose(layer, direction, t, state)
                    out, final = unroll_direction(
                        cell, layer_inputs[d], initial[index], reverse=d == 1, expose=expose
                    )
                outputs.append(out)  # (B, T, H)
                finals.append(final)
            if self.bidirectional == "interleaved":
                layer_inputs = [torch.cat(outputs, dim=2)] * 2  # (B, T, 2H)
            else:
                layer_inputs = outputs
        last = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]  # (B, T, D*H)
        if self.kind == "LSTM":
            final_state = (torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals]))
        else:
            final_state = torch.stack(finals)  # (L*D, B, H)
        return last, final_state


def load_torch_weights(net: RecurrentNet, torch_modules: nn.RNNBase | list[nn.RNNBase]) -> None:
    """Copy weights from ``torch.nn.RNN``/``LSTM``/``GRU`` into ``net``.

    For ``none`` and ``interleaved`` pass one torch module (``bidirectional``
    False or True to match). For ``separate`` pass two unidirectional torch
    modules: the forward stack and the backward stack (which torch would read
    on the time-reversed input).
    """
    modules = torch_modules if isinstance(torch_modules, (list, tuple)) else [torch_modules]
    with torch.no_grad():
        for layer in range(net.num_layers):
            for d, direction in enumerate(net.directions):
                if net.bidirectional == "separate":
                    source, suffix = modules[d], ""
                else:
                    source, suffix = modules[0], "_reverse" if d == 1 else ""
                cell = net.cell(layer, direction)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    target = getattr(cell, name)
                    if target is not None:
                        target.copy_(getattr(source, f"{name}_l{layer}{suffix}"))


class RNNModel(nn.Module):
    """A recurrent classifier: :class:`RecurrentNet` then a linear head.

    The signature starts like the coursework's ``RNNModel(mode, input_size,
    hidden_size, num_layers, bias, output_size)``.

    Args:
        mode: see :class:`RecurrentNet`.
        input_size: features per timestep, F.
        hidden_size: state size per direction, H.
        num_layers: stacked layers per direction.
        bias: whether cells have biases (the head always has one).
        output_size: number of classes (or regression outputs).
        bidirectional: ``none``, ``separate`` or ``interleaved``.
        readout: ``last``: the last layer's final state of each direction
            (forward at t = T-1, backward at t = 0), concatenated; ``mean``: the
            last layer's outputs averaged over time, which gives every
            timestep a direct gradient path to the loss; ``sequence``: the
            last layer's output at every timestep, for per-step targets
            (copy memory), giving logits (B, T, output_size).
        init: an init scheme (:mod:`gradlab.initialisation`).
        forget_bias: for the ``forget_bias`` scheme.
        chrono_t_max: for the ``chrono`` scheme.
        generator: randomness for initialisation; the global generator if None.
        handwritten_bptt: see :class:`RecurrentNet`.

    Shapes: input (B, T, F) -> logits (B, output_size), or (B, T, output_size)
    with the ``sequence`` readout.
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        output_size: int = 3,
        *,
        bidirectional: str = "none",
        readout: str = "last",
        init: str = "default",
        forget_bias: float = 1.0,
        chrono_t_max: int | None = None,
        generator: torch.Generator | None = None,
        handwritten_bptt: bool = True,
    ) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; expected one of {list(READOUTS)}")
        parse_scheme(init)
        check_positive_int("output_size", output_size)
        self.rnn = RecurrentNet(mode, input_size, hidden_size, num_layers, bias, bidirectional, handwritten_bptt)
        self.readout = readout
        self.fc = nn.Linear(self.rnn.output_size, output_size)
        if generator is not None:
            bound = 1.0 / self.rnn.output_size ** 0.5  # nn.Linear's default, drawn from `generator`
            with torch.no_grad():
                for parameter in self.fc.parameters():
                    parameter.uniform_(-bound, bound, generator=generator)
        if init != "default" or generator is not None:
            self.rnn.initialise_(init, forget_bias=forget_bias, chrono_t_max=chrono_t_max, generator=generator)

    @classmethod
    def from_config(
        cls,
        config: ModelConfig,
        *,
        input_size: int,
        output_size: int,
        chrono_t_max: int | None = None,
        generator: torch.Generator | None = None,
        handwritten_bptt: bool = True,
    ) -> RNNModel:
        """The model a :class:`gradlab.config.ModelConfig` describes, for data of these sizes."""
        return cls(
            config.mode, input_size, config.hidden_size, config.num_layers, config.bias, output_size,
            bidirectional=config.bidirectional, readout=config.readout, init=config.init,
            forget_bias=config.forget_bias, chrono_t_max=chrono_t_max, generator=generator,
            handwritten_bptt=handwritten_bptt,
        )

    @property
    def mode(self) -> str:
        return self.rnn.mode

    def features(self, x: Tensor, hx: State | None = None) -> Tensor:
        """The head's input: (B, D*H), or (B, T, D*H) for the ``sequence`` readout."""
        outputs, final = self.rnn(x, hx)
        if self.readout == "sequence":
            return outputs  # (B, T, D*H)
        if self.readout == "mean":
            return outputs.mean(dim=1)  # (B, D*H)
        h_n = final[0] if self.rnn.kind == "LSTM" else final  # (L*D, B, H)
        last_layer = h_n[-self.rnn.num_directions :]  # (D, B, H): forward, then backward
        return torch.cat(list(last_layer), dim=1)  # (B, D*H)

    def forward(self, x: Tensor, hx: State | None = None) -> Tensor:
        """Logits (B, output_size) for input (B, T, F); (B, T, output_size) for the ``sequence`` readout."""
        return self.fc(self.features(x, hx))
