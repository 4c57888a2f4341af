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
