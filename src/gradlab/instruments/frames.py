"""Tidy tables of the diagnostics: per-layer measurements become schema rows.

Every diagnostic collects one dict of equal-length numpy columns per layer and
direction, then :func:`concat_columns` joins them and :func:`measurement_frame`
adds the run's identifying columns and casts to the table's schema
(:mod:`gradlab.store.schema`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from torch import nn

from gradlab.instruments.recorder import recurrent_net, resolve_run_info, typed_strings, with_run_columns
from gradlab.store import schema


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join per-layer column dicts (all with the same keys) into one."""
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def measurement_frame(
    columns: dict[str, np.ndarray],
    model: nn.Module,
    kind: str,
    *,
    run_info: Mapping[str, object] | None,
    step: int | None,
    epoch: int | None,
) -> pd.DataFrame:
    """Table ``kind`` from measured ``columns``, with the run's columns in front.

    With ``run_info`` (``run_id`` and ``seed``), ``step`` and ``epoch`` all
    given, the result is the full schema table. Any of them may be left out
    for interactive use: the table then has ``cell`` and ``activation`` (from
    the model) and only the identifying columns that were given.

    Raises:
        ValueError: if ``run_info`` lacks ``run_id``/``seed`` or contradicts the model.
    """
    if run_info is not None and step is not None and epoch is not None:
        return columns_frame([measurement_columns(columns, model, run_info=run_info, step=step, epoch=epoch)], kind)
    rows = len(next(iter(columns.values())))
    counters = {name: np.full(rows, value, dtype=np.int64)
                for name, value in (("epoch", epoch), ("step", step)) if value is not None}
    columns = {**counters, **columns}
    net = recurrent_net(model)
    info = {"cell": net.mode, "activation": net.activation}
    if run_info is not None:
        info = resolve_run_info(model, run_info)
    frame = pd.DataFrame(with_run_columns(columns, info, rows))
    spec = schema.columns(kind)
    documented = [name for name in spec if name in frame.columns]
    extra = [name for name in frame.columns if name not in spec]
    return frame[documented + extra].astype({name: spec[name] for name in documented})


def measurement_columns(
    columns: dict[str, np.ndarray],
    model: nn.Module,
    *,
    run_info: Mapping[str, object],
    step: int,
    epoch: int,
) -> dict[str, np.ndarray]:
    """Every column of a full schema table from measured ``columns``, as numpy arrays (no table built yet).

    A run that measures many times keeps these and builds its table once
    (:func:`columns_frame`): building and casting a pandas table per
    measurement cost more than an LSTM's gate statistics themselves.

    Raises:
        ValueError: if ``run_info`` lacks ``run_id``/``seed`` or contradicts the model.
    """
    rows = len(next(iter(columns.values())))
    counters = {"epoch": np.full(rows, epoch, dtype=np.int64), "step": np.full(rows, step, dtype=np.int64)}
    return with_run_columns({**counters, **columns}, resolve_run_info(model, run_info), rows)


def columns_frame(chunks: list[dict[str, np.ndarray]], kind: str) -> pd.DataFrame:
    """Table ``kind`` from :func:`measurement_columns` chunks (all with the same columns), cast once."""
    return schema.conform(typed_strings(concat_columns(chunks), kind), kind)
