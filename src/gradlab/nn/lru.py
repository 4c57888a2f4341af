r"""The linear recurrent unit (Orvieto et al., ICML 2023), as a gradlab recurrent layer.

.. math::
    \lambda &= \exp(-e^{\nu} + i\, e^{\theta}) \quad (\text{complex, diagonal}, |\lambda| = e^{-e^\nu} < 1) \\
    h_t &= \lambda \odot h_{t-1} + \gamma \odot (B x_t), \quad \gamma = e^{\gamma_{\log}} \\
    y_t &= \mathrm{Re}(C h_t) + D x_t

``nu_log``, ``theta_log`` and ``gamma_log`` are (H,) real parameters;
``B_re``/``B_im`` (H, I) and ``C_re``/``C_im`` (H, H) the real and imaginary
parts of B and C; ``D`` (H, I). Ring initialisation (the paper's section 3.3):
|lambda|^2 ~ U(r_min^2, r_max^2), arg lambda ~ U(0, max_phase), and gamma_log
= log sqrt(1 - |lambda|^2) at that draw; gamma stays its own parameter
afterwards, as in the paper. The state size N is ``hidden_size`` and so is the
output size.

Choices, where the paper's layer sits inside a block:

- This is the recurrent layer alone, no MLP/GLU after it: gradlab stacks
  layers with :class:`gradlab.nn.network.RecurrentNet` and compares
  recurrences, so every layer is one recurrence plus its readout y_t.
- D is a dense (H, I) matrix rather than the paper's diagonal (H,): the
  first layer's input size I is the data's, not H.
- ``bias`` has no effect: the paper's layer has none.

State representation: the complex state h_t (B, H) is packed as the real
(B, 2H) tensor [Re h_t, Im h_t] wherever it leaves the cell (``step``,
``scan``, the network's states and gradient observers). So the recorded
|dL/dh_t| is the L2 norm over the real and imaginary parts together
(torch's complex gradient of a real loss is dL/dRe h + i dL/dIm h, the same
numbers). The layer's output, what the next layer and the readout read, is
y_t (:meth:`LRUCell.readout`), not h_t.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gradlab.config import check_number
from gradlab.nn.modern import ElementwiseCell
from gradlab.nn.scan import ScanGradCallback, linear_scan


class LRUCell(ElementwiseCell):
    """Linear recurrent unit; see the module docstring.

    Args:
        input_size: features per timestep, I.
        hidden_size: state (and output) size, H.
        bias: ignored (the LRU has no bias).
        r_min, r_max: the ring |lambda| in [r_min, r_max] of the initialisation, 0 <= r_min <= r_max <= 1.
        max_phase: arg lambda ~ U(0, max_phase) at initialisation (default 2 pi).

    Shapes: project_input (..., I) -> (..., 2H) (gamma B x, packed); step (B, 2H), (B, 2H) -> (B, 2H);
    scan (B, T, 2H), (B, 2H) -> (B, T, 2H); readout (B, T, 2H), (B, T, I) -> (B, T, H).
    """

    scans = True

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, r_min: float = 0.0,
                 r_max: float = 1.0, max_phase: float = 2 * math.pi) -> None:
        for name, value in (("r_min", r_min), ("r_max", r_max), ("max_phase", max_phase)):
            check_number(name, value, positive=name == "max_phase")
        if not 0.0 <= r_min <= r_max <= 1.0:
            raise ValueError(f"the LRU ring needs 0 <= r_min <= r_max <= 1, got r_min={r_min}, r_max={r_max}")
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)
        super().__init__(input_size, hidden_size, bias)

    def add_recurrent_parameters(self) -> None:
        hidden, inputs = self.hidden_size, self.input_size
        del self.weight_ih  # B is complex: B_re and B_im instead
        self.register_parameter("bias_ih", None)
        self.nu_log = nn.Parameter(torch.empty(hidden))
        self.theta_log = nn.Parameter(torch.empty(hidden))
        self.gamma_log = nn.Parameter(torch.empty(hidden))
        self.B_re = nn.Parameter(torch.empty(hidden, inputs))
        self.B_im = nn.Parameter(torch.empty(hidden, inputs))
        self.C_re = nn.Parameter(torch.empty(hidden, hidden))
        self.C_im = nn.Parameter(torch.empty(hidden, hidden))
        self.D = nn.Parameter(torch.empty(hidden, inputs))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, r_min={self.r_min}, r_max={self.r_max}"

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Ring initialisation (module docstring); B ~ N(0, 1/(2I)) per part, C ~ N(0, 1/H) per part, D ~ N(0, 1/I)."""
        hidden, inputs = self.hidden_size, self.input_size
        with torch.no_grad():
            u1 = torch.rand(hidden, generator=generator, dtype=torch.float64)
            u2 = torch.rand(hidden, generator=generator, dtype=torch.float64)
            # |lambda|^2 = u1 (r_max^2 - r_min^2) + r_min^2 and |lambda| = exp(-exp(nu)).
            modulus_squared = u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2
            modulus_squared = modulus_squared.clamp(torch.finfo(torch.float64).tiny, 1 - 1e-12)
            self.nu_log.copy_(torch.log(-0.5 * torch.log(modulus_squared)))
            self.theta_log.copy_(torch.log(self.max_phase * u2.clamp_min(1e-12)))
            self.gamma_log.copy_(0.5 * torch.log1p(-modulus_squared))
            for part, std in ((self.B_re, (2 * inputs) ** -0.5), (self.B_im, (2 * inputs) ** -0.5),
                              (self.C_re, hidden ** -0.5), (self.C_im, hidden ** -0.5), (self.D, inputs ** -0.5)):
                part.normal_(0.0, std, generator=generator)

    @property
    def state_size(self) -> int:
        """2H: the complex state as [real, imaginary]."""
        return 2 * self.hidden_size

    def zero_state(self, batch_size: int, like: Tensor) -> Tensor:
        return like.new_zeros(batch_size, self.state_size)

    def _check_state(self, state: Tensor, batch_size: int) -> None:
        if tuple(state.shape) != (batch_size, self.state_size):
            raise ValueError(f"LRUCell expects a packed state (batch, 2 * hidden) = ({batch_size}, "
                             f"{self.state_size}), got {tuple(state.shape)}")

    def eigenvalues(self) -> Tensor:
        """lambda (H,), complex."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def to_complex(self, packed: Tensor) -> Tensor:
        """[Re, Im] (..., 2H) -> complex (..., H)."""
        return torch.complex(*packed.split(self.hidden_size, dim=-1))

    @staticmethod
    def to_packed(value: Tensor) -> Tensor:
        """complex (..., H) -> [Re, Im] (..., 2H)."""
        return torch.cat([value.real, value.imag], dim=-1)

    def project_input(self, x: Tensor) -> Tensor:
        """gamma * (B x), packed: (..., I) -> (..., 2H)."""
        gamma = torch.exp(self.gamma_log)  # (H,)
        return torch.cat([x.matmul(self.B_re.t()) * gamma, x.matmul(self.B_im.t()) * gamma], dim=-1)

    def preactivations(self, x_proj: Tensor, h: Tensor) -> dict[str, Tensor]:
        return {}

    def step(self, x_proj: Tensor, h: Tensor) -> Tensor:
        return self.to_packed(self.eigenvalues() * self.to_complex(h) + self.to_complex(x_proj))  # (B, 2H)

    def scan(self, x_proj: Tensor, h0: Tensor, on_grad: ScanGradCallback | None = None) -> Tensor:
        packed_grad = None if on_grad is None else (lambda grad: on_grad(self.to_packed(grad)))
        states = linear_scan(self.eigenvalues(), self.to_complex(x_proj), self.to_complex(h0), packed_grad)
        return self.to_packed(states)  # (B, T, 2H)

    def readout(self, states: Tensor, inputs: Tensor) -> Tensor:
        """y_t = Re(C h_t) + D x_t: packed states (B, T, 2H) and the layer's inputs (B, T, I) -> (B, T, H)."""
        real, imaginary = states.split(self.hidden_size, dim=-1)
        return real.matmul(self.C_re.t()) - imaginary.matmul(self.C_im.t()) + inputs.matmul(self.D.t())

    def jacobian_diagonal(self, x_proj: Tensor, previous: Tensor) -> Tensor:
        """lambda, complex (..., H): the step is h -> lambda h in each unit's complex coordinate."""
        return self.eigenvalues().expand(previous.shape[:-1] + (self.hidden_size,))
