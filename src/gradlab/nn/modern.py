r"""Elementwise recurrences: IndRNN, minGRU, minLSTM and a real diagonal linear recurrence.

Every cell here has a *diagonal* recurrence: unit i of h_t depends on unit i
of h_{t-1} only, so the step Jacobian d h_t / d h_{t-1} is diagonal and
:meth:`ElementwiseCell.jacobian_diagonal` returns it (the Lyapunov instrument
uses it: :mod:`gradlab.instruments.lyapunov`). They keep
:class:`~gradlab.nn.cells.RecurrentCell`'s interface (``project_input``,
``step``, ``preactivations``, packed states) but have no (G*H, H) ``weight_hh``:

- :class:`IndRNNCell` (``INDRNN``; Li et al., CVPR 2018):
  :math:`h_t = \mathrm{relu}(W x_t + b + u \odot h_{t-1})`, ``weight_hh`` = u (H,).
  A step-loop cell (the ReLU makes the recurrence nonlinear).
- :class:`DiagonalCell` (``DIAGONAL``): :math:`h_t = \lambda \odot h_{t-1} + B x_t (+ b)`,
  ``weight_hh`` = lambda (H,), set directly, so a test or an experiment can put
  it exactly where it wants it.
- :class:`MinGRUCell` (``MINGRU``) and :class:`MinLSTMCell` (``MINLSTM``;
  Feng et al. 2024, "Were RNNs All We Needed?"): gates from x_t only,

  .. math::
      \text{minGRU: } & z_t = \sigma(k^z_t),\ h_t = (1 - z_t) h_{t-1} + z_t\, g(k^h_t) \\
      \text{minLSTM: } & f'_t = \frac{\sigma(k^f_t)}{\sigma(k^f_t) + \sigma(k^i_t)},\
          i'_t = 1 - f'_t,\ h_t = f'_t h_{t-1} + i'_t\, g(k^h_t)

  with k = W x_t + b (chunks z, h and f, i, h) and the paper's positive
  activation g(x) = x + 1/2 for x >= 0, sigmoid(x) otherwise.

The three linear ones (DIAGONAL, MINGRU, MINLSTM) have ``scans = True``: their
:meth:`scan` computes all states at once (:mod:`gradlab.nn.scan`; the
log-space form for minGRU/minLSTM, as in the paper) and is what
:class:`gradlab.nn.network.RecurrentNet` runs; ``step`` is the same
recurrence one step at a time, used by the instruments and as the reference
the scans are tested against.

Shapes: project_input (..., I) -> (..., G*H); step (B, G*H), (B, H) -> (B, H);
scan (B, T, G*H), (B, H) -> (B, T, H).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradlab.config import check_number, check_positive_int
from gradlab.nn.cells import RecurrentCell
from gradlab.nn.scan import ScanGradCallback, linear_scan, log_space_scan


def positive_activation(x: Tensor) -> Tensor:
    """Feng et al.'s g: x + 1/2 for x >= 0, sigmoid(x) below (positive, continuous, g(0) = 1/2)."""
    return torch.where(x >= 0, x.clamp_min(0) + 0.5, torch.sigmoid(x.clamp_max(0)))


def log_positive_activation(x: Tensor) -> Tensor:
    """log g(x), computed without forming g: log(x + 1/2) for x >= 0, -softplus(-x) below."""
    return torch.where(x >= 0, torch.log(x.clamp_min(0) + 0.5), -F.softplus(-x.clamp_max(0)))


def _check_range(name: str, low: float, high: float) -> None:
    check_number(f"{name} low end", low, positive=None)
    check_number(f"{name} high end", high, positive=None)
    if low > high:
        raise ValueError(f"{name} must have low <= high, got ({low}, {high})")


class ElementwiseCell(RecurrentCell):
    """A cell whose recurrence is elementwise: input projection ``weight_ih``/``bias_ih``, no (G*H, H) matrix."""

    scans: bool = False  # True: scan() computes all states at once and RecurrentNet uses it
    gate_activations: dict[str, str] = {}  # gate -> activation, for gradlab.instruments.diagnostics

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        nn.Module.__init__(self)
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        rows = self.num_chunks * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))  # (G*H, I)
        if self.bias:
            self.bias_ih = nn.Parameter(torch.empty(rows))  # (G*H,)
        else:
            self.register_parameter("bias_ih", None)
        self.register_parameter("bias_hh", None)
        self.add_recurrent_parameters()
        self.reset_parameters()

    def add_recurrent_parameters(self) -> None:
        """Create the recurrence's own parameters (called before the first ``reset_parameters``)."""

    def reset_input_projection(self, generator: torch.Generator | None) -> None:
        """torch's default for the input projection: U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            self.weight_ih.uniform_(-bound, bound, generator=generator)
            if self.bias_ih is not None:
                self.bias_ih.uniform_(-bound, bound, generator=generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        self.reset_input_projection(generator)

    def project_hidden(self, h: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} has an elementwise recurrence and no weight_hh matrix")

    def preactivations(self, x_proj: Tensor, h: Tensor) -> dict[str, Tensor]:
        """The projected input's chunks by name, each (B, H) (the gates read x_t only)."""
        return dict(zip(self.chunk_names, x_proj.chunk(self.num_chunks, dim=-1)))

    def jacobian_diagonal(self, x_proj: Tensor, previous: Tensor) -> Tensor:
        """The diagonal of d h_t / d h_{t-1} at a projected input (..., G*H) and previous state (..., H)."""
        raise NotImplementedError

    def scan(self, x_proj: Tensor, h0: Tensor, on_grad: ScanGradCallback | None = None) -> Tensor:
        """All states (B, T, H) from projected inputs (B, T, G*H) and h0 (B, H), in reading order."""
        raise TypeError(f"{type(self).__name__} runs as a step loop; it has no scan")


class IndRNNCell(ElementwiseCell):
    r"""Independently recurrent cell (Li et al., CVPR 2018): :math:`h' = \mathrm{relu}(W x + b + u \odot h)`.

    Args:
        input_size, hidden_size, bias: as for the other cells.
        u_range: the recurrent weights u are drawn from U(u_range). The paper
            bounds |u| so that |u|^T stays in a range over T steps; the
            default (0, 1) keeps every unit's recurrent gain <= 1 for any T.
            :func:`indrnn_u_max` gives the bound for a gain of at most
            ``gain`` over ``steps`` steps.

    ``weight_hh`` is u, shape (H,).
    """

    nonlinearity = "relu"
    gate_activations = {"h": "relu"}

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 u_range: tuple[float, float] = (0.0, 1.0)) -> None:
        _check_range("u_range", *u_range)
        self.u_range = (float(u_range[0]), float(u_range[1]))
        self.activation = torch.relu
        super().__init__(input_size, hidden_size, bias)

    def add_recurrent_parameters(self) -> None:
        self.weight_hh = nn.Parameter(torch.empty(self.hidden_size))  # u, (H,)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        self.reset_input_projection(generator)
        with torch.no_grad():
            self.weight_hh.uniform_(*self.u_range, generator=generator)

    def preactivations(self, x_proj: Tensor, h: Tensor) -> dict[str, Tensor]:
        """The ReLU's argument {"h": x_proj + u * h}, (B, H)."""
        return {"h": x_proj + self.weight_hh * h}

    def step(self, x_proj: Tensor, h: Tensor) -> Tensor:
        return torch.relu(self.preactivations(x_proj, h)["h"])  # (B, H)

    def jacobian_diagonal(self, x_proj: Tensor, previous: Tensor) -> Tensor:
        """u * relu'(x_proj + u * h_{t-1}) (relu'(0) = 0, as autograd has it)."""
        return self.weight_hh * (self.preactivations(x_proj, previous)["h"] > 0).to(previous.dtype)


def indrnn_u_max(steps: int, gain: float = 2.0) -> float:
    """The bound on |u| that keeps a unit's recurrent gain |u|^steps <= ``gain`` (Li et al. 2018, section 3.1)."""
    check_positive_int("steps", steps)
    check_number("gain", gain, positive=True)
    return gain ** (1.0 / steps)


class DiagonalCell(ElementwiseCell):
    r"""Real diagonal linear recurrence :math:`h' = \lambda \odot h + B x (+ b)`: the analysable baseline.

    Args:
        input_size, hidden_size, bias: as for the other cells (``weight_ih`` is B).
        lambda_range: lambda is drawn from U(lambda_range) (default (0, 0.99));
            set ``weight_hh`` directly for exact values.

    ``weight_hh`` is lambda, shape (H,); d h_t / d h_{t-1} = diag(lambda).
    """

    scans = True

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 lambda_range: tuple[float, float] = (0.0, 0.99)) -> None:
        _check_range("lambda_range", *lambda_range)
        self.lambda_range = (float(lambda_range[0]), float(lambda_range[1]))
        super().__init__(input_size, hidden_size, bias)

    def add_recurrent_parameters(self) -> None:
        self.weight_hh = nn.Parameter(torch.empty(self.hidden_size))  # lambda, (H,)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        self.reset_input_projection(generator)
        with torch.no_grad():
            self.weight_hh.uniform_(*self.lambda_range, generator=generator)

    def step(self, x_proj: Tensor, h: Tensor) -> Tensor:
        return self.weight_hh * h + x_proj  # (B, H)

    def scan(self, x_proj: Tensor, h0: Tensor, on_grad: ScanGradCallback | None = None) -> Tensor:
        return linear_scan(self.weight_hh, x_proj, h0, on_grad)  # (B, T, H)

    def jacobian_diagonal(self, x_proj: Tensor, previous: Tensor) -> Tensor:
        return self.weight_hh.expand_as(previous)


class MinGRUCell(ElementwiseCell):
    """minGRU (Feng et al. 2024): chunks z, h of ``weight_ih``; see the module docstring."""

    num_chunks = 2
    chunk_names = ("z", "h")
    scans = True
    gate_activations = {"z": "sigmoid"}

    def step(self, x_proj: Tensor, h: Tensor) -> Tensor:
        k_z, k_h = x_proj.chunk(2, dim=-1)  # each (B, H)
        z = torch.sigmoid(k_z)
        return (1 - z) * h + z * positive_activation(k_h)  # (B, H)

    def log_coefficients(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        """log(1 - z_t) and log(z_t g(k^h_t)), each (..., H), by softplus (no log of a rounded 1 - z)."""
        k_z, k_h = x_proj.chunk(2, dim=-1)
        return -F.softplus(k_z), -F.softplus(-k_z) + log_positive_activation(k_h)

    def scan(self, x_proj: Tensor, h0: Tensor, on_grad: ScanGradCallback | None = None) -> Tensor:
        return log_space_scan(*self.log_coefficients(x_proj), h0, on_grad)  # (B, T, H)

    def jacobian_diagonal(self, x_proj: Tensor, previous: Tensor) -> Tensor:
        """1 - z_t."""
        return (1 - torch.sigmoid(x_proj.chunk(2, dim=-1)[0])).expand_as(previous)


class MinLSTMCell(ElementwiseCell):
    """minLSTM (Feng et al. 2024) with the normalised gates f', i': chunks f, i, h; see the module docstring."""

    num_chunks = 3
    chunk_names = ("f", "i", "h")
    scans = True
    gate_activations = {"f": "sigmoid", "i": "sigmoid"}

    def log_gates(self, x_proj: Tensor) -> tuple[Tensor, Tensor]:
        """log f'_t and log i'_t, each (..., H): log f' = -softplus(softplus(-k^f) - softplus(-k^i))."""
        k_f, k_i, _ = x_proj.chunk(3, dim=-1)
        difference = F.softplus(-k_f) - F.softplus(-k_i)  # log i - log f
        return -F.softplus(difference), -F.softplus(-difference)

    def step(self, x_proj: Tensor, h: Tensor) -> Tensor:
        k_f, k_i, k_h = x_proj.chunk(3, dim=-1)
        forget, keep_in = torch.sigmoid(k_f), torch.sigmoid(k_i)
        total = forget + keep_in
        return forget / total * h + keep_in / total * positive_activation(k_h)  # (B, H)

    def scan(self, x_proj: Tensor, h0: Tensor, on_grad: ScanGradCallback | None = None) -> Tensor:
        log_forget, log_input = self.log_gates(x_proj)
        k_h = x_proj.chunk(3, dim=-1)[2]
        return log_space_scan(log_forget, log_input + log_positive_activation(k_h), h0, on_grad)  # (B, T, H)

    def jacobian_diagonal(self, x_proj: Tensor, previous: Tensor) -> Tensor:
        """f'_t."""
        return torch.exp(self.log_gates(x_proj)[0]).expand_as(previous)
