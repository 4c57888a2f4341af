"""The modern cells' initialisation ranges as config fields: which mode each applies to, their checks, and the
keyword arguments :func:`gradlab.nn.cells.make_cell` takes for them.

A field left at None keeps the cell's own default (:data:`CELL_DEFAULTS`, the constructors' defaults in
:mod:`gradlab.nn.modern` and :mod:`gradlab.nn.lru`; a test keeps the two equal). Torch-free.
"""

from __future__ import annotations

import math
from typing import Any

from gradlab.config.vocabulary import check_number

#: ModelConfig field -> the mode it applies to.
CELL_OPTIONS: dict[str, str] = {
    "diagonal_lambda_min": "DIAGONAL",
    "diagonal_lambda_max": "DIAGONAL",
    "lru_r_min": "LRU",
    "lru_r_max": "LRU",
    "lru_max_phase": "LRU",
    "indrnn_u_max": "INDRNN",
}
#: The value a field left at None stands for (the cell constructors' defaults).
CELL_DEFAULTS: dict[str, float] = {
    "diagonal_lambda_min": 0.0,
    "diagonal_lambda_max": 0.99,
    "lru_r_min": 0.0,
    "lru_r_max": 1.0,
    "lru_max_phase": 2 * math.pi,
    "indrnn_u_max": 1.0,
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value(values: dict[str, Any], name: str) -> float:
    return CELL_DEFAULTS[name] if values.get(name) is None else float(values[name])


def check_cell_options(mode: str, values: dict[str, Any]) -> None:
    """Raise ``ValueError`` when a cell option is given for a mode it does not apply to, or is out of range.

    ``mode`` is normalised; ``values`` maps the :data:`CELL_OPTIONS` fields to a number or None.
    """
    for name, applies in CELL_OPTIONS.items():
        value = values.get(name)
        if value is None:
            continue
        check_number(f"ModelConfig.{name}", value, positive=None)
        if mode != applies:
            raise ValueError(f"{_flag(name)} ({name}) sets the {applies} cell's initialisation, not {mode}'s; "
                             f"drop it, or run {applies} in a separate sweep")
    if mode == "DIAGONAL":
        low, high = _value(values, "diagonal_lambda_min"), _value(values, "diagonal_lambda_max")
        if low > high:
            raise ValueError(f"DIAGONAL draws lambda from U(min, max): --diagonal-lambda-min {low} must be <= "
                             f"--diagonal-lambda-max {high}")
    if mode == "LRU":
        low, high = _value(values, "lru_r_min"), _value(values, "lru_r_max")
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"the LRU ring needs 0 <= --lru-r-min <= --lru-r-max <= 1, got {low} and {high}")
        if _value(values, "lru_max_phase") <= 0:
            raise ValueError(f"--lru-max-phase must be > 0, got {values['lru_max_phase']}")
    if mode == "INDRNN" and _value(values, "indrnn_u_max") < 0:
        raise ValueError(f"IndRNN draws u from U(0, u_max): --indrnn-u-max must be >= 0, got {values['indrnn_u_max']}")


def cell_init_options(mode: str, values: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``mode``'s cell for the fields set in ``values`` (empty when none is set)."""
    given = {name for name, applies in CELL_OPTIONS.items() if applies == mode and values.get(name) is not None}
    if not given:
        return {}
    if mode == "DIAGONAL":
        return {"lambda_range": (_value(values, "diagonal_lambda_min"), _value(values, "diagonal_lambda_max"))}
    if mode == "INDRNN":
        return {"u_range": (0.0, _value(values, "indrnn_u_max"))}
    return {key: _value(values, f"lru_{key}") for key in ("r_min", "r_max", "max_phase")}
