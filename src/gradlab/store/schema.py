"""The documented schema of every table gradlab writes.

All measurements are long-format ("tidy") pandas DataFrames: one observation per
row, one variable per column. Tables of the same kind from many runs combine
with ``pd.concat``. This module imports only pandas so that analysis code can
depend on it without torch.

Conventions shared by every table:

- ``run_id`` identifies one training run inside a sweep (its folder name).
- ``cell`` is the normalised model mode: ``RNN_TANH``, ``RNN_RELU``,
  ``RNN_<ACTIVATION>`` for any other RNN activation, ``LSTM``, ``GRU``, or a
  modern mode (``INDRNN``, ``MINGRU``, ``MINLSTM``, ``LRU``, ``DIAGONAL``).
- ``activation`` is the RNN nonlinearity (``tanh``, ``relu``, ...); LSTM and
  GRU report ``tanh``, the activation of their state candidate.
- ``step`` counts optimiser updates; ``step == 0`` is the model at
  initialisation, before the first update. ``epoch`` is the epoch the step
  belongs to (0-based; the step-0 recording has epoch 0).
- ``layer`` is 0-based from the input; ``direction`` is ``forward`` or
  ``backward``. ``timestep`` is always 0-based *input* time, for both
  directions: the backward direction's state at ``timestep == t`` is the one
  computed after reading input ``x_t`` (so it is that direction's last state
  at ``t == 0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import pandas as pd
from pandas.api.types import pandas_dtype

_RUN_KEYS: dict[str, str] = {
    "run_id": "string",
    "cell": "string",
    "activation": "string",
    "seed": "int64",
}

#: Per-timestep gradient norms recorded through backprop-through-time.
#: ``grad_norm`` is the L2 norm of dL/dh_t over the whole (batch, hidden)
#: tensor, where L is the *mean-reduced* training loss, so it includes the 1/B
#: factor of the mean. ``grad_norm_per_sample`` is the mean over samples of each
#: sample's own L2 norm, multiplied by B: the norm of the gradient of that
#: sample's own loss (independent of batch size). ``ratio_to_last`` is
#: ``grad_norm`` divided by the same layer/direction/state's norm at the step
#: where the loss attaches last (timestep T-1 forward, 0 backward), the
#: quantity of Pascanu et al. (2013).
GRADIENTS: dict[str, str] = {
    **_RUN_KEYS,
    "epoch": "int64",
    "step": "int64",
    "layer": "int64",
    "direction": "string",
    "state": "string",  # "h", or "c" for the LSTM cell state
    "timestep": "int64",
    "grad_norm": "float64",
    "grad_norm_per_sample": "float64",
    "ratio_to_last": "float64",
}

#: Gate statistics per timestep. ``gate`` is one of i, f, g, o and c (the tanh
#: of the LSTM cell state), r, z, n (GRU) or h (an RNN's activation). ``stat`` is ``mean`` (mean activation over
#: batch and units) or ``saturated`` (fraction of units whose pre-activation
#: lies beyond the documented saturation threshold); an RNN's ``h`` also has
#: ``slope`` (mean derivative f'(a)) and ``slope_rms`` (its root mean square).
GATES: dict[str, str] = {
    **_RUN_KEYS,
    "epoch": "int64",
    "step": "int64",
    "layer": "int64",
    "direction": "string",
    "timestep": "int64",
    "gate": "string",
    "stat": "string",
    "value": "float64",
}

#: Spectral norm of the state-to-state Jacobian product d h_{last} / d h_t,
#: estimated by power iteration; ``distance`` is how many steps separate t from
#: the last state of that direction.
JACOBIAN: dict[str, str] = {
    **_RUN_KEYS,
    "epoch": "int64",
    "step": "int64",
    "layer": "int64",
    "direction": "string",
    "timestep": "int64",
    "distance": "int64",
    "spectral_norm": "float64",
}

#: Training history. ``split`` is ``train`` or ``validation``; ``metric`` is
#: ``loss``, ``accuracy`` (a fraction in [0, 1]), ``grad_norm`` (global norm
#: of all parameter gradients before clipping) or ``lr``. ``wall_time`` is
#: seconds since the run started.
HISTORY: dict[str, str] = {
    **_RUN_KEYS,
    "step": "int64",
    "epoch": "int64",
    "split": "string",
    "metric": "string",
    "value": "float64",
    "wall_time": "float64",
}

#: One row per run. Accuracies are fractions in [0, 1]. ``test_accuracy`` is
#: the validation-selected checkpoint's accuracy on the test split;
#: ``final_test_accuracy`` is the last epoch's. ``status`` is ``finished``,
#: ``diverged`` (``diverged_step`` then holds the step) or ``running``.
SUMMARY: dict[str, str] = {
    **_RUN_KEYS,
    "dataset": "string",
    "bidirectional": "string",
    "readout": "string",
    "normalise": "boolean",
    "hidden_size": "int64",
    "num_layers": "int64",
    "seq_len": "int64",
    "status": "string",
    "diverged_step": "Int64",
    "best_val_accuracy": "float64",
    "best_epoch": "Int64",
    "test_accuracy": "float64",
    "final_test_accuracy": "float64",
    "n_params": "int64",
    "time_per_epoch": "float64",
}

#: Per-example predictions of the validation-selected checkpoint on the
#: validation and test splits (classification tasks). ``example`` is the
#: example's index in its split (the same across runs on the same data);
#: ``probabilities`` holds the softmax over classes in label order.
PREDICTIONS: dict[str, str] = {
    **_RUN_KEYS,
    "split": "string",
    "example": "int64",
    "label": "int64",
    "predicted": "int64",
    "correct": "bool",
    "label_probability": "float64",
    "probabilities": "object",
}

TABLES: dict[str, dict[str, str]] = {
    "gradients": GRADIENTS,
    "gates": GATES,
    "jacobian": JACOBIAN,
    "history": HISTORY,
    "summary": SUMMARY,
    "predictions": PREDICTIONS,
}


def columns(kind: str) -> dict[str, str]:
    """Return the column -> dtype mapping of table ``kind``.

    Raises:
        ValueError: if ``kind`` is not one of :data:`TABLES`.
    """
    try:
        return TABLES[kind]
    except KeyError:
        raise ValueError(f"unknown table {kind!r}; expected one of {sorted(TABLES)}") from None


def empty(kind: str) -> pd.DataFrame:
    """An empty DataFrame with the columns and dtypes of table ``kind``."""
    return _empty(kind).copy()


@lru_cache(maxsize=None)
def _empty(kind: str) -> pd.DataFrame:
    # Built once per kind (casting empty columns costs milliseconds, and runs ask often); callers get copies.
    return conform(pd.DataFrame({name: [] for name in columns(kind)}), kind)


def conform(frame: pd.DataFrame | Mapping[str, object], kind: str) -> pd.DataFrame:
    """Cast ``frame`` to table ``kind``'s dtypes, in its column order.

    Extra columns are kept after the documented ones (runs may carry more
    configuration); missing documented columns raise ``ValueError``.
    """
    frame = pd.DataFrame(frame)
    spec = columns(kind)
    missing = [name for name in spec if name not in frame.columns]
    if missing:
        raise ValueError(f"{kind} table is missing columns {missing}; it has {list(frame.columns)}")
    extra = [name for name in frame.columns if name not in spec]
    frame = frame[list(spec) + extra]
    # Only the columns that lack their dtype: casting a column to the dtype it has
    # (a string column especially) cost as much as the cast, and most frames arrive conformed.
    casts = {name: dtype for name, dtype in spec.items() if not _has_dtype(frame[name], dtype)}
    return frame.astype(casts) if casts else frame


def _has_dtype(column: pd.Series, dtype: str) -> bool:
    """Whether ``column`` already has exactly ``dtype`` (string storage and missing-value marker included)."""
    target, text = _dtype(dtype)
    return column.dtype == target and repr(column.dtype) == text


@lru_cache(maxsize=None)
def _dtype(name: str) -> tuple[object, str]:
    """The pandas dtype a schema names, and its repr (which tells string storages apart)."""
    target = pandas_dtype(name)
    return target, repr(target)


#: Layout of a runs directory: ``<sweep>/<run_id>/<file>`` for each run, plus
#: sweep-level files at ``<sweep>/``. Tables are Parquet files of the kinds above.
RUN_FILES: dict[str, str] = {
    "config": "config.json",  # the run's configuration (dataclasses.asdict) and command line
    "history": "history.parquet",
    "gradients": "gradients.parquet",
    "gates": "gates.parquet",
    "jacobian": "jacobian.parquet",
    "predictions": "predictions.parquet",
    "lyapunov": "lyapunov.parquet",  # only with TrainConfig.lyapunov_every
    "parameter_gradients": "parameter_gradients.parquet",  # only with TrainConfig.record_parameters
    "metrics": "metrics.json",  # the run's SUMMARY row as JSON, written when it ends
    "checkpoint": "checkpoint.pt",  # state_dicts + config + optimiser + RNG states
}
SWEEP_FILES: dict[str, str] = {
    "sweep": "sweep.json",  # the sweep's configuration and command line
    "summary": "summary.parquet",  # SUMMARY rows of every run
    "executor": "executor.json",  # cluster jobs a detached sweep left running (while any may run)
    "logs": "logs",  # a folder: one log per cluster task
}

#: Lyapunov exponents of each layer's recurrence (natural log per step), along
#: the trajectories a batch drives from the zero state, by the QR method.
#: ``index`` 0 is the largest; ``exponent`` is the mean over samples and
#: ``exponent_std`` the per-sample standard deviation (NaN for one sample);
#: ``warmup`` steps aligned the basis and the next ``timesteps`` were averaged.
#: The LSTM's state is (h, c), so it has 2H exponents. ``run_id``, ``seed``,
#: ``epoch`` and ``step`` are present where the caller gave them.
LYAPUNOV: dict[str, str] = {
    **_RUN_KEYS,
    "epoch": "int64",
    "step": "int64",
    "layer": "int64",
    "direction": "string",
    "index": "int64",
    "exponent": "float64",
    "exponent_std": "float64",
    "warmup": "int64",
    "timesteps": "int64",
}

#: Top singular values of d h_{last} / d h_t (c_t held fixed for the LSTM), by
#: randomised subspace iteration; ``distance`` is how many steps separate t
#: from the last state of that direction, ``index`` 0 is the largest, and
#: ``singular_value`` / ``singular_value_std`` are the mean and per-sample
#: standard deviation over the batch. Run columns as in :data:`LYAPUNOV`.
JACOBIAN_SINGULAR_VALUES: dict[str, str] = {
    **{name: dtype for name, dtype in JACOBIAN.items() if name != "spectral_norm"},
    "index": "int64",
    "singular_value": "float64",
    "singular_value_std": "float64",
}

TABLES["lyapunov"] = LYAPUNOV

#: Per-unit gradients of the recurrent parameters, beside dL/dh_t (``GradientRecorder(parameters=True)``;
#: :mod:`gradlab.instruments.parameters`). ``parameter`` names what sets unit ``unit``'s memory: ``weight_hh``
#: (lambda for DIAGONAL, u for INDRNN, the unit's rows of every gate for the classic cells), ``nu_log`` and
#: ``theta_log`` (the LRU's eigenvalue), or a gate (``z``; ``f``, ``i``) whose input weights and bias set the
#: minGRU/minLSTM coefficient. ``grad_norm`` is the L2 norm of dL/d(those entries). ``memory`` is the unit's
#: memory when recorded: |lambda_i| (DIAGONAL, LRU), |u_i| (INDRNN), the mean retention 1 - z or f' over the
#: recorded batch (MINGRU, MINLSTM), NaN for the classic cells (:func:`gradlab.instruments.parameters.unit_memory`).
PARAMETER_GRADIENTS: dict[str, str] = {
    **_RUN_KEYS,
    "epoch": "int64",
    "step": "int64",
    "layer": "int64",
    "direction": "string",
    "parameter": "string",
    "unit": "int64",
    "grad_norm": "float64",
    "memory": "float64",
}
TABLES["parameter_gradients"] = PARAMETER_GRADIENTS
TABLES["jacobian_singular_values"] = JACOBIAN_SINGULAR_VALUES
