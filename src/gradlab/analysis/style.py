"""Colours, ordering and labels shared by every gradlab figure.

A cell keeps its colour in every figure, whichever other cells are present, so
colours come from a fixed table rather than from the order cells are plotted.
The known cells use the Okabe-Ito palette (Okabe & Ito 2008, "Color Universal
Design"); any other RNN activation gets a colour-blind-safe colour from Paul
Tol's palettes, chosen by a stable hash of its name.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

#: The Okabe-Ito palette by name.
OKABE_ITO: dict[str, str] = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}

#: Fixed colours of the cells gradlab knows by name.
CELL_COLOURS: dict[str, str] = {
    "RNN_TANH": OKABE_ITO["vermillion"],
    "RNN_SIGMOID": OKABE_ITO["reddish_purple"],
    "RNN_RELU": OKABE_ITO["blue"],
    "RNN_LEAKY_RELU": OKABE_ITO["sky_blue"],
    "LSTM": OKABE_ITO["bluish_green"],
    "GRU": OKABE_ITO["orange"],
}

# Colours left for other activations: the unused Okabe-Ito black plus Paul
# Tol's "muted" colours, all distinguishable under the common colour-vision
# deficiencies. Yellow is left out because it vanishes on white paper.
_OTHER_COLOURS: tuple[str, ...] = (
    OKABE_ITO["black"],
    "#882255",
    "#44AA99",
    "#999933",
    "#332288",
    "#AA4499",
    "#DDCC77",
    "#117733",
)

# Plotting order: saturating RNN activations, non-saturating ones, other RNN
# activations (alphabetically), then the gated cells.
_KNOWN_ORDER: tuple[str, ...] = ("RNN_TANH", "RNN_SIGMOID", "RNN_RELU", "RNN_LEAKY_RELU")
_GATED_ORDER: tuple[str, ...] = ("LSTM", "GRU")

#: Activations whose derivative goes to zero at both ends (they saturate).
SATURATING_ACTIVATIONS: frozenset[str] = frozenset({"tanh", "sigmoid", "hardtanh", "softsign", "hardsigmoid"})

#: Training stages in plotting order, and their titles.
STAGES: tuple[str, ...] = ("init", "early", "late")
STAGE_TITLES: dict[str, str] = {"init": "at initialisation", "early": "early in training", "late": "late in training"}

#: Line styles that tell apart the states of one cell (LSTM's c_t is dashed).
STATE_LINESTYLES: dict[str, str] = {"h": "-", "c": "--"}


def cell_colour(cell: str) -> str:
    """The fixed colour of ``cell`` (a normalised mode such as ``RNN_TANH``)."""
    if cell in CELL_COLOURS:
        return CELL_COLOURS[cell]
    # crc32, unlike hash(), does not change between interpreter runs.
    return _OTHER_COLOURS[zlib.crc32(cell.encode()) % len(_OTHER_COLOURS)]


def cell_order(cells: Iterable[str]) -> list[str]:
    """Sort cell names into gradlab's plotting order, dropping duplicates."""

    def key(cell: str) -> tuple[int, int, str]:
        if cell in _KNOWN_ORDER:
            return (0, _KNOWN_ORDER.index(cell), cell)
        if cell in _GATED_ORDER:
            return (2, _GATED_ORDER.index(cell), cell)
        return (1, 0, cell)

    return sorted(set(cells), key=key)


def cell_label(cell: str) -> str:
    """Human-readable cell name for legends: ``RNN_LEAKY_RELU`` -> ``RNN leaky_relu``."""
    if cell.startswith("RNN_"):
        return f"RNN {cell[4:].lower()}"
    return cell


def state_label(cell: str, state: str) -> str:
    """Legend entry of one cell's state: the LSTM's cell state reads ``LSTM c_t``."""
    return f"{cell_label(cell)} c_t" if state == "c" else cell_label(cell)
