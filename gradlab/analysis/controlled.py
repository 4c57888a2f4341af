"""Controlled comparisons: runs that differ from matched control runs in one option only.

An intervention (silence after the clip, silence before the word, another
readout or initialisation) is read against its control: runs, in any loaded
sweep, whose recorded config (``sweep.json``) is the same in every option
except that one, which holds its reference value, seed for seed. Nothing is
matched by name, so a comparison appears exactly when both sides were run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from gradlab import schema
from gradlab.config import RunConfig
from gradlab.analysis.compare import compare
from gradlab.analysis.load import RunData
from gradlab.io import read_sweep_record
from gradlab.analysis.stats import first_to_last_ratio

#: Interventions and their reference (control) values, by dotted option.
INTERVENTIONS: dict[str, object] = {"data.delay": 0, "data.pad": "end", "model.readout": "last",
                                    "model.init": "default", "train.omega_weight": 0.0, "train.floss_weight": 0.0}
#: Options that only say how an intervention acts: not matched when that intervention is compared.
COMPANIONS: dict[str, tuple[str, ...]] = {"train.floss_weight": ("train.floss_k", "train.floss_every",
                                                                 "train.floss_until")}
#: Options that do not describe the computation (never part of the match).
UNMATCHED: frozenset[str] = frozenset({"train.seed", "train.device", "data.data_dir", "data.cache_dir",
                                       "data.download"})


def _flat(config: Mapping[str, object]) -> dict[str, object]:
    try:  # options added since the run was recorded take their defaults, which is how it ran
        config = RunConfig.from_dict(dict(config)).to_dict()
    except (ValueError, TypeError):
        pass
    return {f"{part}.{key}": json.dumps(value) for part in ("model", "data", "train")
            for key, value in config.get(part, {}).items()}


def recorded_configs(data: RunData) -> pd.DataFrame:
    """One row per run listed in a loaded sweep's sweep.json: sweep, run_id, seed and its flattened config."""
    rows = []
    for sweep, path in data.sweeps.items():
        try:
            record = read_sweep_record(path / schema.SWEEP_FILES["sweep"], require_runs=False)
        except (OSError, ValueError):  # load_runs warned about a damaged one
            continue
        for run in record.get("runs", []):
            if isinstance(run, dict) and "run_id" in run and "seed" in run.get("train", {}):
                rows.append({"sweep": sweep, "run_id": run["run_id"], "seed": run["train"]["seed"], **_flat(run)})
    return pd.DataFrame(rows)


def controlled_comparisons(data: RunData) -> pd.DataFrame:
    """Every intervention in ``data`` against its matched control, per sweep, cell and value.

    Returns:
        One row per (sweep, cell, option, value): ``seeds`` (matched pairs),
        test accuracy of treated and control runs (means), the difference
        with its Welch t interval, and the mean log10 first-to-last gradient
        ratio at initialisation of each side (NaN where not recorded).
    """
    configs = recorded_configs(data)
    ended = data.summary[["sweep", "run_id", "cell", "test_accuracy"]]
    if configs.empty or ended.empty:
        return pd.DataFrame()
    configs = configs.merge(ended, on=["sweep", "run_id"])
    ratios = first_to_last_ratio(data.gradients, data.summary, stage="init") if not data.gradients.empty else None
    if ratios is not None and not ratios.empty:
        with np.errstate(divide="ignore"):
            logged = ratios.assign(log10_ratio=np.log10(ratios["ratio"].astype(float)))
        configs = configs.merge(logged[["sweep", "run_id", "log10_ratio"]], on=["sweep", "run_id"], how="left")
    else:
        configs["log10_ratio"] = np.nan
    matched = [column for column in configs.columns if "." in column and column not in UNMATCHED]
    rows = []
    for option, reference in INTERVENTIONS.items():
        if option not in configs.columns:
            continue
        control_value = json.dumps(reference)
        others = [column for column in matched if column != option and column not in COMPANIONS.get(option, ())]
        controls = configs[configs[option] == control_value].drop_duplicates(subset=[*others, "seed"])
        treated = configs[configs[option] != control_value]
        pairs = treated.merge(controls[[*others, "seed", "test_accuracy", "log10_ratio"]], on=[*others, "seed"],
                              suffixes=("", "_control"))
        for (sweep, cell, value), part in pairs.groupby(["sweep", "cell", option], observed=True, sort=True):
            rows.append(_row(sweep, cell, option, json.loads(value), part))
    return pd.DataFrame(rows)


def _row(sweep: str, cell: str, option: str, value: object, part: pd.DataFrame) -> dict[str, object]:
    treated, control = part["test_accuracy"].to_numpy(float), part["test_accuracy_control"].to_numpy(float)
    row = {"sweep": sweep, "cell": cell, "option": option.split(".", 1)[1], "value": value,
           "reference": INTERVENTIONS[option], "seeds": len(part), "accuracy": treated.mean(),
           "accuracy_control": control.mean(), "difference": treated.mean() - control.mean(),
           "ci_low": math.nan, "ci_high": math.nan}
    if len(part) > 1:
        comparison = compare(treated, control)
        row.update(ci_low=float(comparison.ci_low), ci_high=float(comparison.ci_high))
    for side, column in (("log10_ratio", "log10_ratio"), ("log10_ratio_control", "log10_ratio_control")):
        values = part[column].to_numpy(float)
        values = values[np.isfinite(values)]
        row[side] = values.mean() if len(values) else math.nan
        row[f"{side}_underflowed"] = int(np.isneginf(part[column].to_numpy(float)).sum())
    return row
