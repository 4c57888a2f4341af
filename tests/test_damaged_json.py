"""Every JSON file gradlab reads is checked for shape: a wrong-shaped one is named, with the fix, never a traceback."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from analysis_helpers import write_sweep
from train_helpers import load_script

from gradlab.__main__ import main
from gradlab.store import io, schema
from gradlab.store.io import RunFolder, RunFolderError

compare_cells = load_script("compare_cells")
SWEEP_ARGS = ["--dataset", "distance", "--seq-len", "12", "--n-train", "32", "--n-validation", "16", "--n-test", "16",
              "--epochs", "1", "--batch-size", "16", "--hidden-size", "6", "--num-layers", "1", "--cells", "GRU",
              "--seeds", "0,1", "--no-progress", "--no-figures", "--device", "cpu", "--record-every", "2",
              "--val-every", "none", "--diagnostics-batch", "4", "--jacobian-batch", "2", "--name", "sweep"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    assert compare_cells.main([*SWEEP_ARGS, "--out", str(out)]) == 0
    return out / "sweep"


def _edited(path, change) -> str:
    values = json.loads(path.read_text())
    change(values)
    return json.dumps(values)


def _set(key, value):
    return lambda values: values.__setitem__(key, value)


def _bogus(part):
    return lambda values: values[part].__setitem__("bogus", 1)


def _bogus_in_sweep_json(values):
    values["runs"][0]["train"]["bogus"] = 1


# (file in the sweep, its new content or a change to it, what the message must say)
DAMAGES = [
    ("GRU-s0/metrics.json", "null", "it holds null, not a JSON object"),
    ("GRU-s0/metrics.json", "[1, 2]", "it holds a list, not a JSON object"),
    ("GRU-s0/metrics.json", "{}", "its status is None"),
    ("GRU-s0/metrics.json", _set("test_accuracy", "high"), "test_accuracy is 'high', which is not a number"),
    ("GRU-s0/metrics.json", _set("seed", "zero"), "seed is 'zero', which is not an integer"),
    ("GRU-s0/config.json", "[1]", "it holds a list, not a JSON object"),
    ("GRU-s0/config.json", _set("layout", "two"), "its layout is 'two', not an integer"),
    ("GRU-s0/config.json", _bogus("train"), r"unknown train option\(s\) \['bogus'\]"),
    ("GRU-s0/config.json", _set("train", [1]), "the train options must be a JSON object"),
    ("sweep.json", "null", "it holds null, not a JSON object"),
    ("sweep.json", "[]", "it holds a list, not a JSON object"),
    ("sweep.json", '{"layout": 2}', "its \"runs\" entry is None, not a list of runs"),
    ("sweep.json", '{"layout": 2, "runs": [5]}', "run 0 of its \"runs\" is not a run config"),
    ("sweep.json", _bogus_in_sweep_json, r"unknown train option\(s\) \['bogus'\]"),
]


@pytest.mark.parametrize(("name", "damage", "message"), DAMAGES, ids=lambda item: getattr(item, "__name__", item))
def test_resume_names_a_wrong_shaped_file_and_the_fix_and_retrains_nothing(finished, tmp_path, capsys, name, damage,
                                                                           message):
    sweep = tmp_path / "sweep"
    shutil.copytree(finished, sweep)
    path = sweep / name
    path.write_text(damage if isinstance(damage, str) else _edited(path, damage))
    before = {run: (sweep / run / "metrics.json").read_bytes() for run in ("GRU-s0", "GRU-s1")}
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main([*SWEEP_ARGS, "--out", str(tmp_path), "--resume"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    line = [line for line in error.splitlines() if "error:" in line][-1]
    assert str(path) in line, line
    assert re.search(message, line), line
    assert "--overwrite" in line or "--resume trains" in line, line  # the fix
    for run, content in before.items():  # nothing was trained again, silently or not
        if (sweep / run / "metrics.json") != path:
            assert (sweep / run / "metrics.json").read_bytes() == content


def test_a_finished_run_reads_back(finished):
    # the checks accept what gradlab itself writes
    assert RunFolder(finished / "GRU-s0").metrics()["status"] == "finished"
    assert RunFolder(finished / "GRU-s0").layout == 2
    assert [run["run_id"] for run in io.read_sweep_record(finished / "sweep.json")["runs"]] == ["GRU-s0", "GRU-s1"]


def test_a_metrics_row_with_a_wrong_type_is_refused_by_name(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"status": "finished", "normalise": "yes"}))
    with pytest.raises(RunFolderError, match=r"run/metrics.json is damaged: normalise is 'yes', which is not a boolean"):
        RunFolder(run).metrics()


ANALYSIS_DAMAGES = [
    ("gru-s0/config.json", "[1]", "gru-s0/config.json is damaged: it holds a list"),
    ("gru-s0/config.json", json.dumps({"cell": "GRU", "seed": 0, "layout": "two"}),
     "gru-s0/config.json is damaged: its layout is 'two'"),
    ("gru-s0/metrics.json", None, "gru-s0/metrics.json is damaged: test_accuracy is 'high'"),
]


@pytest.mark.parametrize(("name", "content", "message"), ANALYSIS_DAMAGES)
@pytest.mark.parametrize("command", ["inspect", "figures"])
def test_inspect_and_figures_skip_a_damaged_run_with_a_warning(tmp_path, capsys, name, content, message, command):
    sweep = write_sweep(tmp_path / "runs", "hurt", cells=("LSTM", "GRU"), seeds=(0, 1), tables=("history",))
    path = sweep / name
    if content is None:
        content = _edited(path, _set("test_accuracy", "high"))
    path.write_text(content)
    extra = ["--out", str(tmp_path / "out"), "--formats", "png", "--dpi", "30", "--resamples", "20"] \
        if command == "figures" else []
    assert main([command, str(sweep), *extra]) == 0
    printed = capsys.readouterr().out
    warnings = [line for line in printed.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and message in warnings[0], warnings
    if command == "inspect":
        assert "gru-s1" in printed and "lstm-s0" in printed
        assert "gru-s0 " not in printed.split("gradients:")[0]
    else:
        assert "gru-s0" not in (tmp_path / "out" / "findings.md").read_text().split("Runs left out")[0]


@pytest.mark.parametrize("content", ["[]", '{"runs": 5}', "null"])
def test_a_damaged_sweep_json_is_named_and_the_runs_are_still_analysed(tmp_path, capsys, content):
    sweep = write_sweep(tmp_path / "runs", "hurt", cells=("GRU",), seeds=(0, 1), tables=("history",))
    (sweep / schema.SWEEP_FILES["sweep"]).write_text(content)
    assert main(["figures", str(sweep), "--out", str(tmp_path / "out"), "--formats", "png", "--dpi", "30",
                 "--resamples", "20"]) == 0
    assert main(["inspect", str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "warning: " + str(sweep / "sweep.json") + " is damaged" in printed
    assert "gru-s1" in printed


@pytest.mark.parametrize("content", ["[]", '{"jobs": null}', "null"])
def test_a_damaged_executor_record_is_named_on_resume(finished, tmp_path, capsys, content):
    from gradlab.sweep.executors.common import RECORD_FILE

    sweep = tmp_path / "sweep"
    shutil.copytree(finished, sweep)
    (sweep / RECORD_FILE).write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        compare_cells.main([*SWEEP_ARGS, "--out", str(tmp_path), "--resume"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and f"{sweep / RECORD_FILE} is damaged" in error and "delete it" in error


def test_missing_values_of_a_diverged_run_are_not_damage(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # a run that diverged before any validation: pandas writes its missing integers as NaN
    (run / "metrics.json").write_text('{"status": "diverged", "best_epoch": NaN, "diverged_step": 1, '
                                      '"test_accuracy": NaN, "normalise": null}')
    assert RunFolder(run).status == "diverged"
