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

from gradlab.analysis.compare import compare
from gradlab.analysis.load import RunData
from gradlab.analysis.stats import first_to_last_ratio
from gradlab.config import RunConfig
from gradlab.store import schema
from gradlab.store.io import read_sweep_record

#: Interventions and their reference (control) values, by dotted option.
INTERVENTIONS: dict[str, object] = {"data.delay": 0, "data.pad": "end", "model.readout": "last",
                                    "model.init": "default", "data.train_fraction": 1.0,
                                    "train.omega_weight": 0.0, "train.floss_weight": 0.0}
#: Options that only say how an intervention acts: not matched when that intervention is compared.
COMPANIONS: dict[str, tuple[str, ...]] = {"train.floss_weight": ("train.floss_k", "train.floss_every",
                                                                 "train.floss_until")}
#: Options that do not describe the computation (never part of the match).
UNMATCHED: frozenset[str] = frozenset({"train.seed", "train.device", "data.data_dir", "data.cache_dir",
                                       "data.download"})
#: Options a tuned sweep (``--select-by validation``) chooses on validation. A run of a tuned sweep
#: with no exact match is paired with a tuned control at that control's own choice: each side at
#: its validation-chosen setting.
TUNED: tuple[str, ...] = ("train.lr", "train.clip_grad_norm")


def _flat(config: Mapping[str, object]) -> dict[str, object]:
    try:  # options added since the run was recorded take their defaults, which is how it ran
        config = RunConfig.from_dict(dict(config)).to_dict()
    except (ValueError, TypeError):
        pass
    return {f"{part}.{key}": json.dumps(value) for part in ("model", "data", "train")
            for key, value in config.get(part, {}).items()}


def recorded_configs(data: RunData) -> pd.DataFrame:
    """One row per run listed in a loaded sweep's sweep.json: sweep, run_id, seed, ``tuned`` (its sweep
    selects on validation) and its flattened config."""
    rows = []
    for sweep, path in data.sweeps.items():
        try:
            record = read_sweep_record(path / schema.SWEEP_FILES["sweep"], require_runs=False)
        except (OSError, ValueError):  # load_runs warned about a damaged one
            continue
        if not isinstance(record, dict):
            continue
        tuned = bool(record.get("select_by"))
        for run in record.get("runs", []) if isinstance(record.get("runs"), list) else []:
            if isinstance(run, dict) and isinstance(run.get("train"), dict) and "run_id" in run \
                    and "seed" in run["train"]:
                rows.append({"sweep": sweep, "run_id": run["run_id"], "seed": run["train"]["seed"], "tuned": tuned,
                             **_flat(run)})
    return pd.DataFrame(rows)


def matched_pairs(data: RunData) -> pd.DataFrame:
    """Every intervention run in ``data`` beside its matched control run (same seed, every other option equal).

    Returns:
        One row per pair: ``sweep`` and ``run_id`` of the treated run, ``cell``,
        ``seed``, ``option`` (dotted), ``value`` and ``reference`` (decoded),
        ``test_speaker`` (the fold; None off FSDD's speaker split),
        ``test_accuracy`` and ``log10_ratio`` of both sides (``_control``), and
        ``run_id_control``. Empty when nothing pairs.
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
    parts = []
    for option, reference in INTERVENTIONS.items():
        if option not in configs.columns:
            continue
        control_value = json.dumps(reference)
        others = [column for column in matched if column != option and column not in COMPANIONS.get(option, ())]
        treated = configs[configs[option] != control_value]
        if treated.empty:  # nothing to pair; merging on every option's column costs 15 ms even so
            continue
        controls = configs[configs[option] == control_value].drop_duplicates(subset=[*others, "seed"])
        taken = ["run_id", "test_accuracy", "log10_ratio"]
        pairs = treated.merge(controls[[*others, "seed", *taken]], on=[*others, "seed"], suffixes=("", "_control"))
        # Tuned against tuned: each side at its own validation-chosen learning rate and clipping.
        loose = [column for column in others if column not in TUNED]
        unpaired = treated[treated["tuned"] & ~treated["run_id"].isin(pairs["run_id"])]
        tuned_controls = controls[controls["tuned"]].drop_duplicates(subset=[*loose, "seed"])
        pairs = pd.concat([pairs, unpaired.merge(tuned_controls[[*loose, "seed", *taken]], on=[*loose, "seed"],
                                                 suffixes=("", "_control"))], ignore_index=True)
        if pairs.empty:
            continue
        speaker = pairs["data.test_speaker"].map(json.loads) if "data.test_speaker" in pairs else None
        parts.append(pd.DataFrame({
            "sweep": pairs["sweep"], "run_id": pairs["run_id"], "cell": pairs["cell"], "seed": pairs["seed"],
            "option": option, "value": pairs[option].map(json.loads), "reference": [reference] * len(pairs),
            "test_speaker": speaker if speaker is not None else None,
            "test_accuracy": pairs["test_accuracy"], "test_accuracy_control": pairs["test_accuracy_control"],
            "log10_ratio": pairs["log10_ratio"], "log10_ratio_control": pairs["log10_ratio_control"],
            "run_id_control": pairs["run_id_control"],
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def controlled_comparisons(data: RunData) -> pd.DataFrame:
    """Every intervention in ``data`` against its matched control, per sweep, cell and value.

    Returns:
        One row per (sweep, cell, option, value): ``seeds`` (matched pairs),
        test accuracy of treated and control runs (means), the difference
        with its Welch t interval, and the mean log10 first-to-last gradient
        ratio at initialisation of each side (NaN where not recorded).
    """
    pairs = matched_pairs(data)
    if pairs.empty:
        return pd.DataFrame()
    rows = []
    for (sweep, cell, option), part in pairs.groupby(["sweep", "cell", "option"], observed=True, sort=True):
        for value in sorted(set(map(json.dumps, part["value"]))):
            chosen = part[part["value"].map(json.dumps) == value]
            rows.append(_row(sweep, cell, option, json.loads(value), chosen))
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
