"""A run's table rows survive its epoch checkpoint bit for bit, each chunk encoded once."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from train_helpers import InterruptAfterEpoch

from gradlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gradlab.store import schema
from gradlab.store.atomic import write_atomic
from gradlab.store.io import RunFolderError
from gradlab.training import train_run
from gradlab.training.checkpoint_rows import ROWS_FOLDER, RowsFiles
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


def _format3(path) -> None:
    """Rewrite the format-4 checkpoint at ``path`` as format 3 wrote it: every chunk inline, no rows files."""
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["format"] == 4 and checkpoint["epochs_done"] == 2
    checkpoint["callbacks"] = RowsFiles(path.parent).internalise(checkpoint["callbacks"], checkpoint.pop("rows"), path)
    checkpoint["format"] = 3
    torch.save(checkpoint, path)
    shutil.rmtree(path.parent / ROWS_FOLDER)


def test_an_interrupted_run_has_no_tables_and_resumes_exactly_from_each_checkpoint_format(tmp_path):
    config = _tiny_run()
    whole = tmp_path / "whole"
    train_run(config, run_dir=whole)
    names = ("format4", "format3", "format2")
    for name in names:
        with pytest.raises(KeyboardInterrupt):
            train_run(config, run_dir=tmp_path / name, callbacks=[InterruptAfterEpoch(1)], checkpoint_every=0)
        assert sorted(path.name for path in (tmp_path / name).iterdir()) == [
            ROWS_FOLDER, "checkpoint.pt", "config.json"]
        # one rows file an epoch, each holding that epoch's chunks only
        assert sorted(path.name[:11] for path in (tmp_path / name / ROWS_FOLDER).iterdir()) == [
            "epoch-00001", "epoch-00002"]
    _format3(tmp_path / "format3" / "checkpoint.pt")
    # A format-2 checkpoint kept no rows: they were in the tables, rewritten at every epoch end (so possibly
    # newer than the checkpoint: the whole run's tables stand in, and only rows the checkpoint covers count).
    path = tmp_path / "format2" / "checkpoint.pt"
    _format3(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["format"] = 2
    for state in checkpoint["callbacks"].values():
        state.pop("rows", None)
    torch.save(checkpoint, path)
    for kind in ("history", "gradients", "gates", "jacobian", "lyapunov"):
        (tmp_path / "format2" / schema.RUN_FILES[kind]).write_bytes((whole / schema.RUN_FILES[kind]).read_bytes())
    expected = _tables(whole)
    for name in names:
        train_run(config, run_dir=tmp_path / name)
        for kind, frame in _tables(tmp_path / name).items():
            pd.testing.assert_frame_equal(frame, expected[kind], obj=f"{name} {kind}")


def test_rows_files_of_an_epoch_without_its_checkpoint_are_ignored_and_missing_ones_named(tmp_path, monkeypatch):
    config = _tiny_run()
    whole, run = tmp_path / "whole", tmp_path / "run"
    train_run(config, run_dir=whole)
    checkpoints = []

    def stop_at_second_checkpoint(path, write, **options):  # as a run killed between rows file and checkpoint
        if path.name == "checkpoint.pt":
            checkpoints.append(path)
            if len(checkpoints) == 2:
                raise KeyboardInterrupt
        return write_atomic(path, write, **options)

    with monkeypatch.context() as patch:
        patch.setattr("gradlab.training.epoch_checkpoint.write_atomic", stop_at_second_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            train_run(config, run_dir=run, checkpoint_every=0)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epochs_done"] == 1
    orphan = next((run / ROWS_FOLDER).glob("epoch-00002-*.pt"))
    orphan.write_bytes(b"not a rows file")  # no checkpoint references it: resume never reads it
    stale = run / ROWS_FOLDER / "epoch-00009-0123456789ab.pt"  # an older attempt's file: deleted
    stale.write_bytes(b"stale")
    saved = {path: path.read_bytes() for path in (run / "checkpoint.pt", *(run / ROWS_FOLDER).iterdir())}
    train_run(config, run_dir=run, checkpoint_every=0)
    expected = _tables(whole)
    for kind, frame in _tables(run).items():
        pd.testing.assert_frame_equal(frame, expected[kind], obj=kind)
    assert not stale.exists() and orphan.read_bytes() != b"not a rows file"

    # the checkpoint of epoch 1 again, without the rows file it references, then with that file damaged
    (run / "metrics.json").unlink()
    for path, content in saved.items():
        path.write_bytes(content)
    referenced = next((run / ROWS_FOLDER).glob("epoch-00001-*.pt"))
    referenced.unlink()
    with pytest.raises(RunFolderError, match=r"epoch-00001-.*\.pt is missing.*delete .*checkpoint-rows.*--overwrite"):
        train_run(config, run_dir=run)
    referenced.write_bytes(saved[referenced][:100])
    with pytest.raises(RunFolderError, match=r"epoch-00001-.*\.pt is damaged.*--overwrite"):
        train_run(config, run_dir=run)


def test_rows_added_as_columns_become_the_same_table_in_order_and_survive_a_checkpoint():
    first, second, third = _history(4), _history(3, start=4), _history(2, start=7)
    as_columns = [{name: frame[name].to_numpy(dtype=object if frame[name].dtype == "string" else None)
                   for name in frame.columns} for frame in (first, third)]
    rows = TableRows("history")
    rows.add_columns(as_columns[0])
    rows.add(second)  # a table after pending columns: the columns' rows stay first
    rows.add_columns(as_columns[1])
    rows.add_columns({name: values[:0] for name, values in as_columns[1].items()})  # empty: nothing
    saved = _through_checkpoint(rows.state_dict())
    expected = schema.conform(pd.concat([first, second, third], ignore_index=True), "history")
    pd.testing.assert_frame_equal(rows.frame(), expected, check_exact=True)
    resumed = TableRows("history")
    resumed.load_state_dict(saved)
    pd.testing.assert_frame_equal(resumed.frame(), expected, check_exact=True)
