"""Comparing a run's stored config with the requested one, on the fields that change results."""

import json
import subprocess
import sys

from gradlab.config import DataConfig, RunConfig, TrainConfig
from gradlab.store.runcheck import EXECUTION_FIELDS, MISSING, describe_differences, result_differences


def _requested() -> dict:
    config = RunConfig(data=DataConfig(dataset="fsdd", words=("zero", "one"), takes=(0, 1)),
                       train=TrainConfig(lr=0.003, seed=1), run_id="lstm-s1")
    return config.to_dict()


def _stored(requested: dict, command=("gradlab", "sweep")) -> dict:
    """What config.json reads back as: JSON turns tuples into lists, and it holds the command."""
    return json.loads(json.dumps({**requested, "command": list(command)}))


def _leaves(config: dict, prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _changed(config: dict, dotted: str) -> dict:
    changed = json.loads(json.dumps(config))
    *parents, leaf = dotted.split(".")
    part = changed
    for name in parents:
        part = part[name]
    value = part[leaf]
    part[leaf] = "something else" if not isinstance(value, str) else value + "-other"
    return changed


def test_the_same_run_read_back_from_json_matches():
    requested = _requested()
    assert result_differences(_stored(requested), requested) == {}


def test_every_field_but_the_execution_ones_is_compared():
    requested = _requested()
    leaves = set(_leaves(requested))
    assert {"train.seed", "train.lr", "model.mode", "data.words", "train.device", "data.cache_dir"} <= leaves
    for dotted in leaves:
        differences = result_differences(_stored(requested), _changed(requested, dotted))
        assert list(differences) == ([] if dotted in EXECUTION_FIELDS else [dotted]), dotted


def test_the_issue_case_names_the_learning_rate():
    requested = _requested()
    stored = _stored({**requested, "train": {**requested["train"], "lr": 0.3}})
    differences = result_differences(stored, requested)
    assert differences == {"train.lr": (0.3, 0.003)}
    assert describe_differences(differences) == "train.lr: 0.3 on disk, 0.003 requested"


def test_execution_only_fields_are_ignored_even_when_new():
    requested = _requested()
    stored = _stored(requested, command=["python", "-m", "gradlab", "--workers", "4"])
    stored["train"].update(device="cuda", threads=8, workers=4, progress=False)
    stored["data"].update(download=True, cache_dir="/scratch/cache", data_dir="/mnt/fsdd")
    stored["run_id"] = "renamed"
    assert result_differences(stored, requested) == {}


def test_missing_fields_booleans_and_numbers():
    requested = _requested()
    stored = _stored(requested)
    del stored["train"]["jacobian_every"]
    stored["train"]["amp"] = 0  # not False: a hand-edited or foreign file
    stored["data"]["amplitude_scale"] = 1  # JSON may write 1.0 as 1: the same number
    stored["model"]["future_option"] = 3
    assert result_differences(stored, requested) == {
        "model.future_option": (3, MISSING),
        "train.amp": (0, False),
        "train.jacobian_every": (MISSING, None),
    }
    assert "<missing>" in describe_differences({"a": (MISSING, 1)})


def test_extra_ignored_names_cover_whole_sections():
    requested = _requested()
    changed = _changed(requested, "model.hidden_size")
    assert result_differences(requested, changed, ignore={"model"}) == {}


def test_runcheck_does_not_import_torch():
    code = "import sys, gradlab.store.runcheck, gradlab.store.locking, gradlab.store.atomic, gradlab.sweep.parent_watch; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
