"""Recurrent cells written from scratch, numerically identical to ``torch.nn``.

Each cell keeps torch's parameter names, shapes and gate order
(``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), ``bias_ih`` (G*H),
``bias_hh`` (G*H)), so a ``torch.nn.RNNCell``/``LSTMCell``/``GRUCell``
``state_dict`` loads 1:1.

A cell splits its update into two parts so that a layer can run the input
projection for all timesteps as one matmul and only the recurrence per step:

- :meth:`project_input` maps inputs ``(..., I)`` to ``(..., G*H)``:
  ``x W_ih^T + b_ih``;
- :meth:`step` takes one timestep's projected input ``(B, G*H)`` and the
  previous state and returns the new state.

``forward(input, hx)`` composes the two and behaves like the torch cell.
:meth:`~RecurrentCell.preactivations` is the one place each cell's gate
arithmetic is written; ``step`` applies the nonlinearities to it. The
recurrent state packs into one (B, n) tensor (:meth:`~RecurrentCell.pack_state`;
n = H, or 2H for the LSTM's (h, c)) for whoever differentiates a step with
respect to it (:mod:`gradlab.instruments.lyapunov`).

A *mode* names a cell: ``RNN_TANH``, ``RNN_<ACTIVATION>``, ``LSTM`` or
``GRU`` (:func:`parse_mode`, :func:`make_cell`), or one of the elementwise
recurrences of :mod:`gradlab.nn.modern` and :mod:`gradlab.nn.lru` (``INDRNN``,
``MINGRU``, ``MINLSTM``, ``LRU``, ``DIAGONAL``). Cells know nothing about
recording: instrumentation attaches to the states a layer exposes (see
:mod:`gradlab.nn.network`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradlab.config import (  # noqa: F401 - the mode vocabulary is re-exported with the cells
    BASE_MODES,
    MODERN_MODES,
    check_positive_int,
    normalise_mode,
    parse_mode,
)

#: RNN activations by name. ``leaky_relu`` uses torch's default slope 0.01.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": F.leaky_relu,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "elu": F.elu,
    "softplus": F.softplus,
    "identity": lambda x: x,
}

#: Pre-activation magnitude beyond which a unit counts as saturated, per
#: activation: |a| > 2.65 puts sigmoid below 0.066 or above 0.934, and tanh
#: (which is sigmoid(2a) rescaled) past |a| > 1.325 at the same slope fraction
#: (derivative below a quarter of its peak).
SATURATION_THRESHOLD: dict[str, float] = {"sigmoid": 2.65, "tanh": 1.325}

LSTMState = tuple[Tensor, Tensor]


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    """Return the RNN activation called ``name``.

    Raises:
        ValueError: if ``name`` is not a key of :data:`ACTIVATIONS`.
    """
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None


class RecurrentCell(nn.Module):
    """Shared parameters and checks of the gated and plain cells."""

    num_chunks: int = 1  # G: how many (H,)-blocks the weights stack
    chunk_names: tuple[str, ...] = ("h",)
    state_names: tuple[str, ...] = ("h",)  # the parts of the recurrent state, in packed order

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        rows = self.num_chunks * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))  # (G*H, I)
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))  # (G*H, H)
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(rows))  # (G*H,)
            self.bias_hh = nn.Parameter(torch.empty(rows))  # (G*H,)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """torch's default: every parameter ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.uniform_(-bound, bound, generator=generator)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"

    def chunk(self, name: str) -> slice:
        """Rows of the stacked weights that belong to gate ``name``."""
        index = self.chunk_names.index(name)
        return slice(index * self.hidden_size, (index + 1) * self.hidden_size)

    def project_input(self, x: Tensor) -> Tensor:
        """``x W_ih^T + b_ih`` for any leading shape: (..., I) -> (..., G*H)."""
        return F.linear(x, self.weight_ih, self.bias_ih)

    def project_hidden(self, h: Tensor) -> Tensor:
        """``h W_hh^T + b_hh``: (B, H) -> (B, G*H)."""
        if self.bias_hh is None:
            return h.matmul(self.weight_hh.t())
        return torch.addmm(self.bias_hh, h, self.weight_hh.t())

    def zero_state(self, batch_size: int, like: Tensor):
        """The all-zero initial state for a batch, on ``like``'s device and dtype."""
        return like.new_zeros(batch_size, self.hidden_size)

    @property
    def state_size(self) -> int:
        """Entries of the packed state: H, or 2H for the LSTM's (h, c)."""
        return len(self.state_names) * self.hidden_size

    def pack_state(self, state) -> Tensor:
        """The state as one (..., state_size) tensor (the LSTM's h then c)."""
        return state

    def unpack_state(self, packed: Tensor):
        """Inverse of :meth:`pack_state`."""
        return packed

    def _check_input(self, input: Tensor) -> None:
        if input.dim() != 2 or input.shape[1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (batch, {self.input_size}), "
                f"got {tuple(input.shape)}"
            )

    def forward(self, input: Tensor, hx=None):
        """Like the torch cell: input (B, I) and an optional state -> the new state."""
        self._check_input(input)
        if hx is None:
            hx = self.zero_state(input.shape[0], input)
        self._check_state(hx, input.shape[0])
        return self.step(self.project_input(input), hx)

    def _check_state(self, state: Tensor, batch_size: int) -> None:
        self._check_hidden(state, batch_size)

    def _check_hidden(self, h: Tensor, batch_size: int, what: str = "hx") -> None:
        if tuple(h.shape) != (batch_size, self.hidden_size):
            raise ValueError(
                f"{type(self).__name__} expects {what} of shape ({batch_size}, {self.hidden_size}), "
                f"got {tuple(h.shape)}"
            )


class RNNCell(RecurrentCell):
    r"""Elman RNN cell with a named activation.

    .. math:: h' = \phi(W_{ih} x + b_{ih} + W_{hh} h + b_{hh})

    Same parameters as ``torch.nn.RNNCell`` (which offers only tanh and relu).

    Args:
        input_size: features per timestep, I.
        hidden_size: state size, H.
        bias: whether to use ``bias_ih`` and ``bias_hh``.
        nonlinearity: a key of :data:`ACTIVATIONS`.

    Shapes: input (B, I), hx (B, H) -> h (B, H).
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh"
    ) -> None:
        self.activation = get_activation(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"

    def step(self, x_proj: Tensor, h: Tensor) -> Tensor:
        """One timestep from a projected input (B, H) and the previous h (B, H)."""
        return self.activation(self.preactivations(x_proj, h)["h"])  # (B, H)

    def preactivations(self, x_proj: Tensor, h: Tensor) -> dict[str, Tensor]:
        """The argument of the activation, keyed ``h``: {"h": (B, H)}."""
        return {"h": x_proj + self.project_hidden(h)}


class LSTMCell(RecurrentCell):
    r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997), torch's form.

    .. math::
        i, f, g, o &= \sigma(a_i), \sigma(a_f), \tanh(a_g), \sigma(a_o),
            \quad a = W_{ih} x + b_{ih} + W_{hh} h + b_{hh} \\
        c' &= f \odot c + i \odot g \\
        h' &= o \odot \tanh(c')

    Gate order i, f, g, o as in ``torch.nn.LSTMCell``.

    Shapes: input (B, I), hx ((B, H), (B, H)) -> (h (B, H), c (B, H)).
    """

    num_chunks = 4
    chunk_names = ("i", "f", "g", "o")
    state_names = ("h", "c")

    def zero_state(self, batch_size: int, like: Tensor) -> LSTMState:
        zeros = like.new_zeros(batch_size, self.hidden_size)
        return zeros, zeros

    def pack_state(self, state: LSTMState) -> Tensor:
        return torch.cat(state, dim=-1)  # (..., 2H)

    def unpack_state(self, packed: Tensor) -> LSTMState:
        h, c = packed.split(self.hidden_size, dim=-1)
        return h.contiguous(), c.contiguous()

    def step(self, x_proj: Tensor, state: LSTMState) -> LSTMState:
        """One timestep from a projected input (B, 4H) and the previous (h, c)."""
        pre = self.preactivations(x_proj, state)  # each (B, H)
        c_next = torch.sigmoid(pre["f"]) * state[1] + torch.sigmoid(pre["i"]) * torch.tanh(pre["g"])  # (B, H)
        h_next = torch.sigmoid(pre["o"]) * torch.tanh(c_next)  # (B, H)
        return h_next, c_next

    def preactivations(self, x_proj: Tensor, state: LSTMState) -> dict[str, Tensor]:
        """Gate pre-activations {"i", "f", "g", "o"}, each (B, H)."""
        gates = x_proj + self.project_hidden(state[0])  # (B, 4H)
        return dict(zip(self.chunk_names, gates.chunk(4, dim=1)))

    def _check_state(self, state: LSTMState, batch_size: int) -> None:
        self._check_hidden(state[0], batch_size, "h")
        self._check_hidden(state[1], batch_size, "c")


class GRUCell(RecurrentCell):
    r"""Gated recurrent unit (Cho et al. 2014), torch's form.

    .. math::
        r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' &= (1 - z) \odot n + z \odot h

    Gate order r, z, n as in ``torch.nn.GRUCell``; note that the reset gate
    multiplies ``W_hn h + b_hn``, bias included.

    Shapes: input (B, I), hx (B, H) -> h (B, H).
    """

    num_chunks = 3
    chunk_names = ("r", "z", "n")

    def step(self, x_proj: Tensor, h: Tensor) -> Tensor:
        """One timestep from a projected input (B, 3H) and the previous h (B, H)."""
        pre = self.preactivations(x_proj, h)  # each (B, H)
        z = torch.sigmoid(pre["z"])
        n = torch.tanh(pre["n"])
        return n + z * (h - n)  # (B, H) == (1 - z) n + z h

    def preactivations(self, x_proj: Tensor, h: Tensor) -> dict[str, Tensor]:
        """Gate pre-activations {"r", "z", "n"}, each (B, H)."""
        x_r, x_z, x_n = x_proj.chunk(3, dim=1)  # each (B, H)
        h_r, h_z, h_n = self.project_hidden(h).chunk(3, dim=1)  # each (B, H)
        reset = x_r + h_r
        return {"r": reset, "z": x_z + h_z, "n": x_n + torch.sigmoid(reset) * h_n}


def make_cell(mode: str, input_size: int, hidden_size: int, bias: bool = True, **options) -> RecurrentCell:
    """A fresh cell for ``mode`` (see :func:`parse_mode`).

    ``options`` go to the modern cells' constructors (``u_range`` for INDRNN, ``lambda_range`` for
    DIAGONAL, ``r_min``/``r_max``/``max_phase`` for LRU); the classic cells take none.
    """
    kind, activation = parse_mode(mode)
    if kind in MODERN_MODES:
        # Imported here: the modern cells build on RecurrentCell from this module.
        from gradlab.nn.lru import LRUCell
        from gradlab.nn.modern import DiagonalCell, IndRNNCell, MinGRUCell, MinLSTMCell

        classes = {"INDRNN": IndRNNCell, "DIAGONAL": DiagonalCell, "MINGRU": MinGRUCell, "MINLSTM": MinLSTMCell,
                   "LRU": LRUCell}
        return classes[kind](input_size, hidden_size, bias, **options)
    if options:
        raise ValueError(f"cell options {sorted(options)} apply to the modern cells ({', '.join(MODERN_MODES)}), "
                         f"not {mode}")
    if kind == "LSTM":
        return LSTMCell(input_size, hidden_size, bias)
    if kind == "GRU":
        return GRUCell(input_size, hidden_size, bias)
    return RNNCell(input_size, hidden_size, bias, nonlinearity=activation)
