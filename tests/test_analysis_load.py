"""load_runs: which tables and columns it reads, categoricals, run settings, and the missing-sweep message."""

import json
import warnings

import pandas as pd
import pytest

from analysis_helpers import write_sweep
from gradlab.analysis.commands import REPORT_COLUMNS, REPORT_TABLES
from gradlab.analysis.load import (
    ALL_TABLES,
    CATEGORICAL_COLUMNS,
    RunData,
    RunsDirError,
    TableNotLoadedError,
    load_runs,
)
from gradlab.analysis.report import build_findings, with_classes
from gradlab.store import schema
from gradlab.store.io import RUN_TABLES


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return write_sweep(root, "main", cells=("RNN_TANH", "LSTM", "GRU"), seeds=(0, 1, 2))


def _old_load(sweep_dir) -> dict[str, pd.DataFrame]:
    """Every table read the way gradlab read it before: pandas per file, conformed, concatenated, string columns."""
    tables = {}
    for kind in RUN_TABLES:
        files = sorted(sweep_dir.glob(f"*/{schema.RUN_FILES[kind]}"))
        frames = [schema.conform(pd.read_parquet(path), kind).assign(sweep=sweep_dir.name) for path in files]
        tables[kind] = (schema.conform(pd.concat(frames, ignore_index=True), kind) if frames
                        else schema.empty(kind).assign(sweep=pd.Series([], dtype="string")))
        tables[kind]["sweep"] = tables[kind]["sweep"].astype("string")
    summary = schema.conform(pd.read_parquet(sweep_dir / "summary.parquet"), "summary")
    tables["summary"] = summary.assign(sweep=pd.array([sweep_dir.name] * len(summary), dtype="string"))
    return tables


def test_default_reads_summary_and_gradients_only(sweep):
    # A damaged gate file does not matter when gates are not read.
    (sweep / "gru-s0" / "gates.parquet").write_bytes(b"not parquet")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            data = load_runs(sweep)
        assert data.loaded == ("summary", "gradients")
        assert len(data.summary) == 9 and data.gradients["run_id"].nunique() == 9
        with pytest.raises(TableNotLoadedError, match=r"tables=.*'gates'"):
            data.gates
        with pytest.raises(TableNotLoadedError, match="tables="):
            data.table("history")
        with pytest.warns(UserWarning, match="gru-s0/gates.parquet is damaged"):
            load_runs(sweep, ("gates",))
    finally:
        (sweep / "gru-s0" / "gates.parquet").unlink()


def test_unknown_table_names_the_allowed_ones(sweep):
    with pytest.raises(ValueError, match="unknown tables.*'gate'.*tables="):
        load_runs(sweep, ("summary", "gate"))
    with pytest.raises(ValueError, match="columns= names tables.*add them to tables="):
        load_runs(sweep, ("summary",), columns={"gates": ["value"]})


def test_tables_equal_the_plain_pandas_read(sweep):
    old = _old_load(sweep)
    data = load_runs(sweep, "all")
    assert data.loaded == ALL_TABLES
    for kind in ("summary", *RUN_TABLES):
        new = data.table(kind)
        for column in CATEGORICAL_COLUMNS:
            if kind != "summary" and column in new.columns:
                assert isinstance(new[column].dtype, pd.CategoricalDtype), (kind, column)
                assert list(new[column].cat.categories) == sorted(new[column].cat.categories)
        restored = new.astype({column: "string" for column in new.columns
                               if isinstance(new[column].dtype, pd.CategoricalDtype)})
        if kind == "predictions":  # lists of probabilities compare element-wise
            assert [list(p) for p in restored.pop("probabilities")] == [list(p) for p in old[kind]["probabilities"]]
            old[kind] = old[kind].drop(columns="probabilities")
        pd.testing.assert_frame_equal(restored, old[kind], check_like=False)


def test_columns_keep_the_run_keys(sweep):
    data = load_runs(sweep, ("gates",), columns={"gates": ["value", "gate"]})
    assert list(data.gates.columns) == ["run_id", "cell", "activation", "seed", "gate", "value", "sweep"]
    assert data.loaded == ("gates",) and len(data.gates) == len(_old_load(sweep)["gates"])


def test_report_is_the_same_from_the_pruned_categorical_tables(sweep):
    """The report reads fewer columns as categoricals; its text must equal the one made from plain string tables."""
    old = _old_load(sweep)
    plain = RunData(**old, sweeps={"main": sweep})
    pruned = load_runs(sweep, REPORT_TABLES, columns=REPORT_COLUMNS)
    assert pruned.gates.memory_usage(deep=True).sum() < old["gates"].memory_usage(deep=True).sum() / 2
    before = build_findings(with_classes(plain), n_resamples=50)
    after = build_findings(with_classes(pruned), n_resamples=50)
    assert after.main() == before.main()
    assert after.appendix() == before.appendix()


def _set_config(sweep, run_id, **parts):
    path = sweep / run_id / "config.json"
    config = json.loads(path.read_text())
    config.update(parts)
    path.write_text(json.dumps(config))


def test_with_config_joins_run_settings(tmp_path):
    sweep = write_sweep(tmp_path, "grid", cells=("RNN_TANH", "GRU"), seeds=(0, 1), tables=("gradients", "history"))
    settings = {}
    for number, run_id in enumerate(["rnn_tanh-s0", "rnn_tanh-s1", "gru-s0", "gru-s1"]):
        settings[run_id] = {"lr": 0.001 * (number + 1), "init": ["default", "orthogonal"][number % 2]}
        _set_config(sweep, run_id, train={"lr": settings[run_id]["lr"], "dropout": 0.0},
                    model={"init": settings[run_id]["init"], "dropout": 0.1},
                    data={"test_speaker": f"s{number}"} if number else {})
    data = load_runs(sweep, ("summary", "gradients", "history"))
    joined = data.gradients_with("lr", "init")
    assert len(joined) == len(data.gradients) and list(joined.columns)[:-2] == list(data.gradients.columns)
    for run_id, rows in joined.groupby("run_id", observed=True):
        assert set(rows["lr"]) == {settings[run_id]["lr"]} and set(rows["init"]) == {settings[run_id]["init"]}
    history = data.with_config("history", "train.lr", "test_speaker")
    by_run = history.drop_duplicates("run_id").set_index("run_id")
    assert by_run.loc["gru-s1", "train.lr"] == settings["gru-s1"]["lr"]
    assert by_run.loc["gru-s1", "test_speaker"] == "s3" and pd.isna(by_run.loc["rnn_tanh-s0", "test_speaker"])
    summary = data.with_config("summary", "init")
    assert dict(zip(summary["run_id"], summary["init"])) == {key: value["init"] for key, value in settings.items()}
    with pytest.raises(ValueError, match="no run has a setting 'learning_rate'.*train.lr"):
        data.gradients_with("learning_rate")
    with pytest.raises(ValueError, match="ambiguous.*model.dropout.*train.dropout"):
        data.gradients_with("dropout")
    with pytest.raises(ValueError, match="already has columns \\['seed'\\]"):
        data.gradients_with("seed")
    # Selecting runs keeps their settings.
    part = data.select(data.summary[data.summary["cell"] == "GRU"])
    assert set(part.gradients_with("lr")["lr"]) == {settings["gru-s0"]["lr"], settings["gru-s1"]["lr"]}


def test_missing_sweep_lists_the_sweeps_beside_it(tmp_path, monkeypatch):
    write_sweep(tmp_path / "runs", "coursework", cells=("GRU",), seeds=(0,), tables=("gradients",))
    write_sweep(tmp_path / "runs", "lengths", cells=("GRU",), seeds=(0,), tables=("gradients",))
    (tmp_path / "runs" / "notes").mkdir()  # a folder without runs is not a sweep
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunsDirError) as error:
        load_runs("runs/fsdd-normalised")
    message = str(error.value)
    assert "'runs/fsdd-normalised' does not exist" in message
    assert "sweeps in 'runs': runs/coursework, runs/lengths;" in message and "notes" not in message
    # Deeper: the nearest folder that exists is searched.
    with pytest.raises(RunsDirError, match="sweeps in 'runs': runs/coursework, runs/lengths"):
        load_runs("runs/a/b")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(RunsDirError, match="'elsewhere' holds no sweep either"):
        load_runs("elsewhere/x")


def test_split_equals_select_group_by_group(tmp_path):
    write_sweep(tmp_path / "runs", "a", cells=("GRU", "LSTM"), seeds=(0, 1, 2))
    write_sweep(tmp_path / "runs", "b", cells=("GRU",), seeds=(0, 1))
    data = load_runs(tmp_path / "runs", "all")
    runs = data.summary[["sweep", "run_id"]]
    # Groups out of table order, one run in no group, one group empty.
    groups = [("last", runs.iloc[[5, 1]]), ("none", runs.iloc[:0]), ("first", runs.iloc[[0, 2, 6, 7]])]
    split = list(data.split(groups))
    assert [label for label, _ in split] == ["last", "none", "first"]
    for (_, part), (_, chosen) in zip(split, groups):
        expected = data.select(chosen)
        assert part.sweeps == expected.sweeps
        for kind in (*data.loaded, "config"):
            pd.testing.assert_frame_equal(getattr(part, kind), getattr(expected, kind))
        assert len(part.gradients) > 0 or chosen.empty
    # Overlapping groups cannot share one sort: each is selected on its own, with the same result.
    overlapping = [("x", runs.iloc[[0, 1]]), ("y", runs.iloc[[1, 2]])]
    for (_, part), (_, chosen) in zip(data.split(overlapping), overlapping):
        pd.testing.assert_frame_equal(part.gradients, data.select(chosen).gradients)
