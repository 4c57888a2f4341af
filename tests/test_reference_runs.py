"""Results do not move: tiny float64 runs equal the tables committed under ``tests/data/reference``.

The references were written by ``tests/data/reference/make_reference.py`` with
the code before the run layer was redesigned; every option of each run is in
its ``config.json``. A change that alters any number a run produces fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from data_helpers import fsdd_recordings

from gradlab.config import RunConfig
from gradlab.training import train_run

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
CASES = sorted(path.name for path in REFERENCE.iterdir() if path.is_dir())
#: Metrics that measure time or the machine, not the model.
UNPINNED_METRICS = {"time_per_epoch", "train_time_per_epoch", "wall_time", "device"}
#: Options added after the references were made, at the values that reproduce the old behaviour.
LATER_OPTIONS = {"data": {"split": "takes", "noise_std": 0.0, "pad": "end", "delay": 0, "test_speaker": None}}


def _config(name: str, tmp_path: Path) -> RunConfig:
    values = json.loads((REFERENCE / name / "config.json").read_text())
    for part, options in LATER_OPTIONS.items():
        for key, value in options.items():
            values[part].setdefault(key, value)
    if values["data"]["dataset"] == "fsdd":
        values["data"]["data_dir"] = str(fsdd_recordings())
        values["data"]["cache_dir"] = str(tmp_path / "cache")
    return RunConfig.from_dict(values)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return a == b


@pytest.mark.parametrize("name", CASES)
def test_run_equals_reference(name, tmp_path):
    config = _config(name, tmp_path)
    result = train_run(config, run_dir=tmp_path / name)
    expected_metrics = json.loads((REFERENCE / name / "metrics.json").read_text())
    for key, value in expected_metrics.items():
        if key not in UNPINNED_METRICS:
            assert _same(result.metrics[key], value), f"{name}: metric {key} {result.metrics[key]!r} != {value!r}"
    for kind in ("history", "gradients", "gates", "jacobian"):
        expected = pd.read_parquet(REFERENCE / name / f"{kind}.parquet")
        actual = getattr(result, kind)
        assert len(expected), f"{name}: the reference {kind} table is empty"
        columns = [column for column in expected.columns if column != "wall_time"]
        pd.testing.assert_frame_equal(
            actual[columns].reset_index(drop=True), expected[columns].reset_index(drop=True),
            check_dtype=False, rtol=1e-12, atol=1e-12, obj=f"{name} {kind}",
        )
