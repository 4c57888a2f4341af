"""A run's table rows survive its epoch checkpoint bit for bit, each chunk encoded once."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from train_helpers import InterruptAfterEpoch

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.store import schema
from gradlab.training import train_run
from gradlab.training.table_rows import TableRows, decode_frame, encode_frame


def _history(rows: int, start: int = 0) -> pd.DataFrame:
    steps = np.arange(start, start + rows)
    return schema.conform(pd.DataFrame({
        "run_id": ["run"] * (rows - 1) + [None], "cell": "GRU", "activation": "tanh", "seed": 3,
        "step": steps, "epoch": steps // 2, "split": np.where(steps % 2, "train", "validation"), "metric": "loss",
        "value": np.linspace(-1, 1, rows) ** 3 / 7, "wall_time": np.sqrt(steps + 0.5), "note": steps % 3 == 0,
    }), "history")


def _through_checkpoint(value):
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # as EpochCheckpoint reads it


def test_a_frame_comes_back_with_every_value_and_dtype():
    frame = _history(5)
    frame.loc[1, "value"], frame.loc[2, "value"], frame.loc[3, "value"] = np.nan, -0.0, 5e-324
    back = decode_frame(_through_checkpoint(encode_frame(frame)), "history")
    pd.testing.assert_frame_equal(back, frame)
    assert back["value"].to_numpy().tobytes() == frame["value"].to_numpy().tobytes()  # -0.0, NaN, subnormal
    assert back["run_id"].isna().tolist() == [False] * 4 + [True]


def test_rows_resume_in_their_chunks_and_encode_each_chunk_once(monkeypatch):
    rows = TableRows("history")
    rows.add(_history(4))
    rows.add(schema.empty("history"))  # empty chunks are not kept
    first = rows.state_dict()
    rows.add(_history(3, start=4))
    calls = []
    monkeypatch.setattr("gradlab.training.table_rows.encode_frame",
                        lambda frame: calls.append(len(frame)) or encode_frame(frame))
    second = rows.state_dict()
    assert calls == [3] and second[0] is first[0]  # the first chunk's encoding is reused
    resumed = TableRows("history")
    resumed.load_state_dict(_through_checkpoint(second))
    expected = pd.concat([_history(4), _history(3, start=4)], ignore_index=True)
    pd.testing.assert_frame_equal(resumed.frame(), expected)
    assert len(TableRows("gates").frame()) == 0 and list(TableRows("gates").frame()) == list(schema.GATES)


def test_columns_a_checkpoint_cannot_hold_are_refused():
    frame = pd.DataFrame({"probabilities": [np.zeros(2), np.ones(2)]})
    with pytest.raises(TypeError, match="column 'probabilities' holds ndarray values"):
        encode_frame(frame)
    with pytest.raises(ValueError, match="unknown table 'nonsense'"):
        TableRows("nonsense")


def _tiny_run() -> RunConfig:
    return RunConfig(model=ModelConfig("LSTM", hidden_size=6, num_layers=2),
                     data=DataConfig("distance", seq_len=10, n_train=32, n_validation=16, n_test=16),
                     train=TrainConfig(epochs=3, batch_size=16, lr=1e-2, record_every=2, val_every=3,
                                       diagnostics_batch=4, jacobian_batch=2, jacobian_every=1,
                                       lyapunov_every=2, lyapunov_k=2),
                     run_id="LSTM-s0")


def _tables(folder) -> dict[str, pd.DataFrame]:
    return {kind: pd.read_parquet(folder / schema.RUN_FILES[kind]).drop(columns=["wall_time"], errors="ignore")
            for kind in ("history", "gradients", "gates", "jacobian", "lyapunov", "predictions")}


def test_an_interrupted_run_has_no_tables_and_resumes_exactly_from_either_checkpoint_format(tmp_path):
    config = _tiny_run()
    whole = tmp_path / "whole"
    train_run(config, run_dir=whole)
    for name in ("format3", "format2"):
        with pytest.raises(KeyboardInterrupt):
            train_run(config, run_dir=tmp_path / name, callbacks=[InterruptAfterEpoch(1)])
        assert sorted(path.name for path in (tmp_path / name).iterdir()) == ["checkpoint.pt", "config.json"]
    # A format-2 checkpoint kept no rows: they were in the tables, rewritten at every epoch end (so possibly
    # newer than the checkpoint: the whole run's tables stand in, and only rows the checkpoint covers count).
    path = tmp_path / "format2" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["format"] == 3 and checkpoint["epochs_done"] == 2
    checkpoint["format"] = 2
    for state in checkpoint["callbacks"].values():
        state.pop("rows", None)
    torch.save(checkpoint, path)
    for kind in ("history", "gradients", "gates", "jacobian", "lyapunov"):
        (tmp_path / "format2" / schema.RUN_FILES[kind]).write_bytes((whole / schema.RUN_FILES[kind]).read_bytes())
    expected = _tables(whole)
    for name in ("format3", "format2"):
        train_run(config, run_dir=tmp_path / name)
        for kind, frame in _tables(tmp_path / name).items():
            pd.testing.assert_frame_equal(frame, expected[kind], obj=f"{name} {kind}")
