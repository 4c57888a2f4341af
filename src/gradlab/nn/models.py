"""A recurrent classifier, and the package's model vocabulary in one import.

:class:`RNNModel` is a :class:`~gradlab.nn.network.RecurrentNet` followed by a
linear head. The pieces it is built from live by concept:

- :mod:`gradlab.nn.cells`: the cells, modes (:func:`normalise_mode`) and :func:`make_cell`;
- :mod:`gradlab.nn.unroll`: one layer and direction unrolled over time
  (:func:`unroll_direction`, :class:`StateKey`, :class:`LayerTrajectory`);
- :mod:`gradlab.nn.network`: the stacked, optionally bidirectional
  :class:`RecurrentNet` and :func:`load_torch_weights`.

All of them are importable from here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradlab.config import (
    BASE_MODES,
    BIDIRECTIONAL_CHOICES,
    DIRECTIONS,
    READOUTS,
    ModelConfig,
    check_positive_int,
    normalise_mode,
    parse_mode,
    parse_scheme,
)
from gradlab.nn.cells import make_cell
from gradlab.nn.network import RecurrentNet, load_torch_weights
from gradlab.nn.unroll import GradientObserver, LayerTrajectory, State, StateKey, StateObserver, unroll_direction

__all__ = [
    "BASE_MODES", "BIDIRECTIONAL_CHOICES", "DIRECTIONS", "READOUTS", "GradientObserver", "LayerTrajectory",
    "RNNModel", "RecurrentNet", "State", "StateKey", "StateObserver", "load_torch_weights", "make_cell",
    "normalise_mode", "parse_mode", "unroll_direction",
]


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
        init: an init scheme (:mod:`gradlab.nn.initialisation`).
        forget_bias: for the ``forget_bias`` scheme.
        chrono_t_max: for the ``chrono`` scheme.
        generator: randomness for initialisation; the global generator if None.
        handwritten_bptt: see :class:`RecurrentNet`.
        batch_first: input (B, T, F) when True (the default), time-major
            (T, B, F) when False, as in ``torch.nn.LSTM``.
        cell_options: see :class:`RecurrentNet` (init ranges of INDRNN, DIAGONAL and LRU).

    Shapes: input (B, T, F) -> logits (B, output_size), or (B, T, output_size)
    with the ``sequence`` readout; with ``batch_first=False`` input (T, B, F)
    -> logits (B, output_size), or (T, B, output_size) with ``sequence``.
    The input must be 3-d with ``input_size`` features (a clear ``ValueError``
    otherwise). A time-major (T, B, F) input given to a batch-first model has a
    valid shape and would be read as T sequences of B steps: build the model
    with ``batch_first=False`` for time-major data.
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
        batch_first: bool = True,
        cell_options: dict | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(batch_first, bool):
            raise ValueError(f"batch_first must be True or False, got {batch_first!r}")
        self.batch_first = batch_first
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; expected one of {list(READOUTS)}")
        parse_scheme(init)
        check_positive_int("output_size", output_size)
        self.rnn = RecurrentNet(mode, input_size, hidden_size, num_layers, bias, bidirectional, handwritten_bptt,
                                cell_options)
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
            handwritten_bptt=handwritten_bptt, cell_options=config.cell_options() or None,
        )

    @property
    def mode(self) -> str:
        return self.rnn.mode

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` naming the expected layout unless ``x`` is 3-d with ``input_size`` features."""
        size = self.rnn.input_size
        layout = f"(batch, time, features={size})" if self.batch_first else f"(time, batch, features={size})"
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a tensor of shape {layout}, got {type(x).__name__}")
        other = "batch_first=False for time-major" if self.batch_first else "batch_first=True for batch-major"
        if x.dim() != 3:
            raise ValueError(
                f"expected input of shape {layout}, got a {x.dim()}-d tensor of shape {tuple(x.shape)}; "
                "give a single sequence a batch dimension"
            )
        if x.shape[2] != size:
            raise ValueError(
                f"expected {size} features per timestep (input shape {layout}, batch_first={self.batch_first}), "
                f"got {x.shape[2]} (shape {tuple(x.shape)}); build the model with the data's input_size, "
                f"or with {other} input"
            )

    def features(self, x: Tensor, hx: State | None = None) -> Tensor:
        """The head's input: (B, D*H), or the ``sequence`` readout's per-step (B, T, D*H) ((T, B, D*H) time-major)."""
        self.check_input(x)
        if not self.batch_first:
            x = x.transpose(0, 1)  # (B, T, F)
        outputs, final = self.rnn(x, hx)
        if self.readout == "sequence":
            return outputs if self.batch_first else outputs.transpose(0, 1)  # in the input's layout
        if self.readout == "mean":
            return outputs.mean(dim=1)  # (B, D*H)
        if self.rnn.kind == "LRU":  # its layer output y_t is not its state: read y at each direction's last step
            hidden = self.rnn.hidden_size
            ends = [outputs[:, -1, :hidden]] + ([outputs[:, 0, hidden:]] if self.rnn.num_directions == 2 else [])
            return torch.cat(ends, dim=1)  # (B, D*H)
        h_n = final[0] if self.rnn.kind == "LSTM" else final  # (L*D, B, H)
        last_layer = h_n[-self.rnn.num_directions :]  # (D, B, H): forward, then backward
        return torch.cat(list(last_layer), dim=1)  # (B, D*H)

    def forward(self, x: Tensor, hx: State | None = None) -> Tensor:
        """Logits (B, output_size); for the ``sequence`` readout (B, T, output_size), time-major (T, B, ...)."""
        return self.fc(self.features(x, hx))
