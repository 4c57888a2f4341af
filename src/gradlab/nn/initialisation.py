"""Initialisation schemes for gradlab cells, selectable by name.

A scheme is a name from :data:`INIT_SCHEMES`, or several joined with ``+``
(for example ``"orthogonal+forget_bias"``), applied left to right after torch's
default uniform initialisation:

- ``default``: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)) (torch's default).
- ``orthogonal``: each gate's (H, H) block of ``weight_hh`` is a random
  orthogonal matrix (Saxe et al. 2014), so the recurrent map neither grows nor
  shrinks a state at initialisation.
- ``identity``: RNN only (IRNN, Le et al. 2015): ``weight_hh = I`` and zero
  biases, so a ReLU RNN starts by copying its state forward.
- ``forget_bias``: LSTM only: the forget gate's total bias is set to
  ``forget_bias`` (1.0 by default, Jozefowicz et al. 2015; Gers et al. 2000).
- ``chrono``: LSTM and GRU (Tallec & Ollivier 2018): the keep gate's bias
  ~ log U(1, T_max - 1) so that the characteristic forgetting times spread up
  to ``chrono_t_max``; for the LSTM the input gate's bias is its negative.
  The GRU's keep gate is its update gate ``z`` (``h' = (1 - z) n + z h``).

Where a bias is set, the whole value goes into ``bias_ih`` and the matching
rows of ``bias_hh`` are zeroed, so the sum the cell sees is exactly the value.
"""

from __future__ import annotations

import torch
from torch import nn

from gradlab.config import INIT_SCHEMES, parse_scheme  # noqa: F401 - re-exported
from gradlab.nn.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from gradlab.nn.modern import ElementwiseCell


def _set_bias(cell: RecurrentCell, gate: str, values: torch.Tensor | float, scheme: str) -> None:
    if cell.bias_ih is None:
        raise ValueError(f"init scheme {scheme!r} sets a gate bias, but the cell has bias=False")
    rows = cell.chunk(gate)
    cell.bias_ih[rows] = values
    cell.bias_hh[rows] = 0.0


def initialise_(
    cell: RecurrentCell,
    scheme: str = "default",
    *,
    forget_bias: float = 1.0,
    chrono_t_max: int | None = None,
    generator: torch.Generator | None = None,
) -> RecurrentCell:
    """Re-initialise ``cell``'s parameters in place with ``scheme``.

    Args:
        cell: an :class:`RNNCell`, :class:`LSTMCell` or :class:`GRUCell`.
        scheme: a name from :data:`INIT_SCHEMES`, or several joined with ``+``.
        forget_bias: the LSTM forget-gate bias for ``forget_bias``.
        chrono_t_max: the longest dependency expected, T_max >= 2, for ``chrono``
            (typically the sequence length).
        generator: source of randomness; the global one when ``None``.

    Returns:
        The same cell.

    Raises:
        ValueError: for an unknown scheme, or one that does not apply to the cell.
    """
    parts = parse_scheme(scheme)
    if isinstance(cell, ElementwiseCell) and any(part != "default" for part in parts):
        raise ValueError(
            f"init scheme {scheme!r} applies to RNN, LSTM and GRU cells, not {type(cell).__name__}; use 'default' "
            "(its init ranges are cell options: u_range, lambda_range, r_min/r_max/max_phase)"
        )
    cell.reset_parameters(generator)
    hidden = cell.hidden_size
    with torch.no_grad():
        for part in parts:
            if part == "orthogonal":
                for index in range(cell.num_chunks):
                    block = cell.weight_hh[index * hidden : (index + 1) * hidden]
                    block.copy_(nn.init.orthogonal_(torch.empty_like(block), generator=generator))
            elif part == "identity":
                if not isinstance(cell, RNNCell):
                    raise ValueError(
                        f"init scheme 'identity' (IRNN) applies to RNN cells, not {type(cell).__name__}; "
                        "use 'orthogonal' for gated cells"
                    )
                cell.weight_hh.copy_(torch.eye(hidden, dtype=cell.weight_hh.dtype))
                if cell.bias_ih is not None:
                    cell.bias_ih.zero_()
                    cell.bias_hh.zero_()
            elif part == "forget_bias":
                if not isinstance(cell, LSTMCell):
                    raise ValueError(
                        f"init scheme 'forget_bias' applies to LSTM cells, not {type(cell).__name__}"
                    )
                _set_bias(cell, "f", float(forget_bias), part)
            elif part == "chrono":
                if not isinstance(cell, (LSTMCell, GRUCell)):
                    raise ValueError(
                        f"init scheme 'chrono' applies to LSTM and GRU cells, not {type(cell).__name__}"
                    )
                if chrono_t_max is None or chrono_t_max < 2:
                    raise ValueError(
                        f"init scheme 'chrono' needs chrono_t_max >= 2 (the longest dependency, "
                        f"e.g. the sequence length), got {chrono_t_max!r}"
                    )
                uniform = torch.empty(hidden, dtype=cell.weight_hh.dtype)
                uniform.uniform_(1.0, float(chrono_t_max - 1), generator=generator)
                keep = torch.log(uniform)  # (H,)
                if isinstance(cell, LSTMCell):
                    _set_bias(cell, "f", keep, part)
                    _set_bias(cell, "i", -keep, part)
                else:
                    _set_bias(cell, "z", keep, part)
    return cell
