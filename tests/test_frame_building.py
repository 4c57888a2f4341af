"""String columns typed at the array level give the very table a DataFrame-level cast gives."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab.instruments.recorder import typed_strings, with_run_columns
from gradlab.store import schema


def test_typed_string_columns_equal_the_cast_and_leave_conform_nothing_to_cast(monkeypatch):
    rows = 7
    columns = {
        "epoch": np.arange(rows, dtype=np.int64), "step": np.arange(rows, dtype=np.int64) * 3,
        "layer": np.arange(rows, dtype=np.int64) % 2,
        "direction": np.array(["forward", "backward", None, "forward", "forward", np.nan, "backward"], dtype=object),
        "timestep": np.arange(rows, dtype=np.int64), "gate": np.array(list("iifgooc"), dtype=object),
        "stat": np.full(rows, "mean", dtype=object), "value": np.linspace(-1, 1, rows),
    }
    columns = with_run_columns(columns, {"run_id": "LSTM-s0", "seed": 3, "cell": "LSTM", "activation": "tanh",
                                         "note": "kept as it is"}, rows)
    expected = schema.conform(pd.DataFrame(columns), "gates")  # the DataFrame-level cast
    typed = typed_strings(columns, "gates")
    assert typed["note"] is columns["note"]  # not in the schema: not typed (conform keeps such columns as they are)
    casts = []
    original = pd.DataFrame.astype
    monkeypatch.setattr(pd.DataFrame, "astype", lambda frame, dtype, **options: casts.append(dtype) or original(
        frame, dtype, **options))
    frame = schema.conform(typed, "gates")
    assert casts == []
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert frame["direction"].isna().tolist() == [False, False, True, False, False, True, False]
    assert [repr(frame[name].dtype) for name in ("run_id", "direction", "gate")] == [repr(expected["gate"].dtype)] * 3


def test_gate_chunks_built_once_equal_one_table_per_measurement():
    """A run keeps each epoch's gate statistics as columns and builds one table: the rows of per-call tables."""
    import torch

    from gradlab.instruments.diagnostics import gate_columns, gate_statistics
    from gradlab.instruments.frames import columns_frame, measurement_columns
    from gradlab.nn.models import RNNModel

    run = {"run_id": "LSTM-s4", "seed": 4}
    torch.manual_seed(0)
    model = RNNModel("LSTM", 3, 5, 2)
    x = torch.randn(4, 6, 3)
    chunks, tables = [], []
    for step, epoch in ((0, 0), (6, 0), (12, 1)):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))  # other weights, other statistics
        chunks.append(measurement_columns(gate_columns(model, x), model, run_info=run, step=step, epoch=epoch))
        tables.append(gate_statistics(model, x, run_info=run, step=step, epoch=epoch))
    expected = schema.conform(pd.concat(tables, ignore_index=True), "gates")
    built = columns_frame(chunks, "gates")
    pd.testing.assert_frame_equal(built, expected, check_exact=True)
    assert built["step"].unique().tolist() == [0, 6, 12] and (built["run_id"] == "LSTM-s4").all()
