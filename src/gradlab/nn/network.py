"""Stacked, optionally bidirectional recurrent networks.

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
``observer(key, tensor)`` with a :class:`~gradlab.nn.unroll.StateKey` (layer,
direction, state ``"h"`` or ``"c"``, timestep) and the very tensor the
network goes on to use, both for the next step and for the layer above or the
readout; so a tensor hook registered on it sees the *total* gradient dL/dh_t.
Timesteps are input time for both directions. With no observer attached, the
unroll does no extra work.

Gradients of those states are exposed at the same place:
:meth:`RecurrentNet.add_gradient_observer` calls ``observer(key, grad)``
during backward with the total gradient dL/dh_t (and dL/dc_t), whichever
unroll runs.

Cells with ``scans = True`` (DIAGONAL, MINGRU, MINLSTM, LRU; :mod:`gradlab.nn.modern`)
compute a layer's states all at once (:func:`gradlab.nn.unroll.scan_direction`)
whose backward runs the adjoint recurrence and hands every total dL/dh_t to
the gradient observers; while a *state* observer is attached they run their
``step`` loop instead, so the observer's tensor hooks see the total gradient.
For the LRU the exposed state is the complex h_t packed as [Re, Im] (B, 2H).

Two unrolls compute the same thing. :func:`gradlab.nn.unroll.unroll_direction`
is plain autograd over the cell's ``step``; :func:`gradlab.nn.bptt.bptt_unroll`
is one ``autograd.Function`` per layer and direction with a hand-written
backprop-through-time, used by default where it exists (LSTM, GRU, tanh and
relu RNNs) and while no *state* observer is attached (a state observer may
register its own tensor hooks, which need the autograd graph).

:meth:`RecurrentNet.trajectories` hands every layer and direction's cell,
input sequence and states to whoever analyses them (:mod:`gradlab.instruments.diagnostics`),
so nothing outside this module repeats the wiring.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradlab.config import BIDIRECTIONAL_CHOICES, DIRECTIONS, check_positive_int, normalise_mode, parse_mode
from gradlab.nn.bptt import bptt_unroll, has_handwritten_backward
from gradlab.nn.cells import RecurrentCell, make_cell
from gradlab.nn.initialisation import initialise_
from gradlab.nn.unroll import (
    GradientObserver,
    LayerTrajectory,
    State,
    StateKey,
    StateObserver,
    scan_direction,
    unroll_direction,
)

#: unroll(layer, direction, cell, inputs (B, T, I), initial state) -> (outputs (B, T, H), final state)
LayerUnroll = Callable[[int, str, RecurrentCell, Tensor, State], tuple[Tensor, State]]


class RecurrentNet(nn.Module):
    """A stack of recurrent layers, optionally bidirectional.

    Args:
        mode: ``RNN_TANH``, ``RNN_RELU``, ``LSTM``, ``GRU``, or ``RNN_<ACTIVATION>``
            for any activation of :data:`gradlab.nn.cells.ACTIVATIONS`, or ``INDRNN``, ``MINGRU``,
            ``MINLSTM``, ``LRU``, ``DIAGONAL`` (:mod:`gradlab.nn.modern`, :mod:`gradlab.nn.lru`).
        input_size: features per timestep, F.
        hidden_size: state size per direction, H.
        num_layers: stacked layers per direction, >= 1.
        bias: whether cells have biases.
        bidirectional: ``none``, ``separate`` or ``interleaved`` (module docstring).
        handwritten_bptt: use the hand-written BPTT layer (gradlab.nn.bptt) where it exists (see the module docstring);
            ``False`` forces the plain autograd unroll.
        cell_options: keyword arguments for every cell (the modern cells' init ranges, see
            :func:`gradlab.nn.cells.make_cell`).

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
        cell_options: dict | None = None,
    ) -> None:
        super().__init__()
        self.mode = normalise_mode(mode)
        self.handwritten_bptt = handwritten_bptt
        check_positive_int("num_layers", num_layers)
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
                self.cells.append(make_cell(self.mode, layer_input, hidden_size, bias, **(cell_options or {})))
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
        """Apply an init scheme to every cell (see :func:`gradlab.nn.initialisation.initialise_`)."""
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
        width = self.hidden_size if self.kind == "LSTM" else self.cells[0].state_size  # 2H: the LRU's packed state
        expected = (count, batch, width)
        if hx is None:
            zeros = x.new_zeros(batch, width)
            return [(zeros, zeros) if self.kind == "LSTM" else zeros] * count
        parts = hx if self.kind == "LSTM" else (hx,)
        if self.kind == "LSTM" and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ValueError("LSTM initial state must be a pair (h_0, c_0)")
        for part in parts:
            if not isinstance(part, Tensor) or tuple(part.shape) != expected:
                got = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise ValueError(
                    f"expected initial state of shape {expected} (layers*directions, batch, hidden), got {got}"
                )
        if self.kind == "LSTM":
            return list(zip(hx[0].unbind(0), hx[1].unbind(0)))
        return list(hx.unbind(0))

    def _layers(self, x: Tensor, initial: list[State], unroll: LayerUnroll) -> tuple[list[Tensor], list[State]]:
        """The wiring: run ``unroll`` on each layer and direction with what it reads.

        Returns:
            The last layer's outputs per direction, each (B, T, H), and the
            final states in ``cells`` order.
        """
        finals: list[State] = []
        layer_inputs = [x] * self.num_directions  # what each direction reads at this layer
        for layer in range(self.num_layers):
            outputs = []
            for d, direction in enumerate(self.directions):
                index = layer * self.num_directions + d
                out, final = unroll(layer, direction, self.cells[index], layer_inputs[d], initial[index])
                outputs.append(out)  # (B, T, H)
                finals.append(final)
            if self.bidirectional == "interleaved":
                layer_inputs = [torch.cat(outputs, dim=2)] * 2  # (B, T, 2H)
            else:
                layer_inputs = outputs
        return outputs, finals

    def forward(self, x: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        """Unroll the stack over ``x`` (B, T, F); returns (outputs (B, T, D*H), final state)."""
        self._check_input(x)
        handwritten = self.handwritten_bptt and not self._state_observers
        tapped = bool(self._gradient_observers)

        def unroll(layer: int, direction: str, cell: RecurrentCell, inputs: Tensor, state: State):
            reverse = direction == "backward"
            if getattr(cell, "scans", False) and not self._state_observers:
                on_scan_grad = None
                if tapped:
                    def on_scan_grad(t: int, grad: Tensor) -> None:
                        self._notify_gradient(StateKey(layer, direction, "h", t), grad)
                states, out = scan_direction(cell, inputs, state, reverse=reverse, on_grad=on_scan_grad)
                return out, states[:, 0 if reverse else -1]
            if handwritten and has_handwritten_backward(cell):
                on_grad = None
                if tapped:
                    def on_grad(t: int, name: str, grad: Tensor) -> None:
                        self._notify_gradient(StateKey(layer, direction, name, t), grad)
                return bptt_unroll(cell, inputs, state, reverse=reverse, on_grad=on_grad)
            expose = None
            if self._state_observers or tapped:
                def expose(t: int, state: State) -> None:
                    self._expose(layer, direction, t, state)
            return unroll_direction(cell, inputs, state, reverse=reverse, expose=expose)

        outputs, finals = self._layers(x, self._initial_states(x, hx), unroll)
        last = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]  # (B, T, D*H)
        if self.kind == "LSTM":
            final_state = (torch.stack([f[0] for f in finals]), torch.stack([f[1] for f in finals]))
        else:
            final_state = torch.stack(finals)  # (L*D, B, H)
        return last, final_state

    @classmethod
    def from_torch(cls, module: nn.RNNBase, *, handwritten_bptt: bool = True) -> "RecurrentNet":
        """The network equal to ``torch.nn.RNN``/``LSTM``/``GRU`` ``module``, with a copy of its weights.

        Every layer, both directions (torch's ``interleaved`` design), the RNN's
        nonlinearity and ``bias`` carry over, on the module's device and dtype.
        The network always reads batch-first input (B, T, F): transpose a
        time-major input when ``module.batch_first`` is False. The weights are
        copied (:func:`load_torch_weights`), so training one does not move the other.

        Raises:
            TypeError: if ``module`` is not a ``torch.nn.RNN``, ``LSTM`` or ``GRU``.
            ValueError: if it has a projection (``proj_size > 0``), which gradlab's LSTM lacks.
        """
        if not isinstance(module, nn.RNNBase):
            raise TypeError(f"expected a torch.nn.RNN, LSTM or GRU, got {type(module).__name__}")
        if getattr(module, "proj_size", 0):
            raise ValueError(
                f"cannot convert an nn.LSTM with proj_size={module.proj_size}: gradlab's LSTM has no output "
                "projection; build the nn.LSTM with proj_size=0"
            )
        if module.mode not in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU"):
            raise ValueError(f"cannot convert a torch module of mode {module.mode!r}; expected RNN, LSTM or GRU")
        # The fresh cells' random weights are overwritten at once; drawing them
        # must not move the caller's global random stream.
        with torch.random.fork_rng(devices=[]):
            net = cls(
                module.mode, module.input_size, module.hidden_size, module.num_layers, module.bias,
                "interleaved" if module.bidirectional else "none", handwritten_bptt,
            )
        reference = next(module.parameters())
        net.to(device=reference.device, dtype=reference.dtype)
        load_torch_weights(net, module)
        return net

    def trajectories(self, x: Tensor, hx: State | None = None) -> dict[tuple[int, str], LayerTrajectory]:
        """Every layer and direction's cell, input sequence and states on ``x`` (B, T, F).

        Runs the plain autograd unroll in the current grad mode (wrap it in
        ``torch.no_grad()`` for measurements; leave gradients on to
        differentiate through the trajectory). Observers are not called.

        Returns:
            ``{(layer, direction): LayerTrajectory}`` in ``cells`` order.
        """
        self._check_input(x)
        found: dict[tuple[int, str], LayerTrajectory] = {}

        def unroll(layer: int, direction: str, cell: RecurrentCell, inputs: Tensor, state: State):
            reverse = direction == "backward"
            if getattr(cell, "scans", False):
                states, out = scan_direction(cell, inputs, state, reverse=reverse)
                found[(layer, direction)] = LayerTrajectory(cell, inputs, states, None, state, reverse)
                return out, states[:, 0 if reverse else -1]
            cell_states: list[Tensor] = [None] * x.shape[1]  # type: ignore[list-item]

            def keep(t: int, new: State) -> None:
                cell_states[t] = new[1] if self.kind == "LSTM" else None

            out, final = unroll_direction(cell, inputs, state, reverse=direction == "backward", expose=keep)
            c = torch.stack(cell_states, dim=1) if self.kind == "LSTM" else None  # (B, T, H)
            found[(layer, direction)] = LayerTrajectory(cell, inputs, out, c, state, direction == "backward")
            return out, final

        self._layers(x, self._initial_states(x, hx), unroll)
        return found


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

