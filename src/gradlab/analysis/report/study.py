"""The parts of a set of sweeps that the four answers read, found by configuration, never by name.

- ``headline``: FSDD runs at the baseline conditions (last-step readout,
  silence after the word, no delay, default init, all training clips, no
  regulariser, the usual 30 epochs), one learning rate and clipping per cell
  and fold (the tuned sweep after selection).
- ``curves``: FSDD runs of the long (100-epoch) training curves.
- ``matched``: FSDD runs sized to a parameter target.
- ``distance``: the synthetic distance task trained for more than one epoch (no regulariser; every
  init, which question 2 compares).
- ``pairs``: every intervention beside its matched control
  (:func:`gradlab.analysis.controlled.matched_pairs`).

Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradlab.analysis.controlled import matched_pairs
from gradlab.analysis.folds import FOLD
from gradlab.analysis.load import RunData
from gradlab.analysis.modern import is_classic
from gradlab.store import schema

#: The synthetic tasks: not speech, never a headline.
SYNTHETIC: tuple[str, ...] = ("distance", "adding", "copy-memory")
#: Baseline value of each condition column (a missing column counts as baseline).
BASELINE: dict[str, object] = {"readout": "last", "pad": "end", "delay": 0, "init": "default",
                               "train_fraction": 1.0, "omega_weight": 0.0, "floss_weight": 0.0}


def _at_baseline(summary: pd.DataFrame) -> pd.Series:
    keep = pd.Series(True, index=summary.index)
    for column, value in BASELINE.items():
        if column in summary.columns:
            keep &= summary[column].isna() | (summary[column] == value)
    if "param_target" in summary.columns:
        keep &= summary["param_target"].isna()
    return keep


@dataclass
class Study:
    """Runs grouped by the role they play in the answers (module docstring)."""

    data: RunData
    headline: RunData
    curves: RunData
    matched: RunData
    distance: RunData
    pairs: pd.DataFrame

    @property
    def speakers(self) -> int:
        """Test speakers (folds) behind the headline runs."""
        summary = self.headline.summary
        return int(summary[FOLD].nunique()) if FOLD in summary.columns and not summary.empty else 0

    @property
    def seeds_per_fold(self) -> int:
        summary = self.headline.summary
        if summary.empty:
            return 0
        by = ["cell", FOLD] if FOLD in summary.columns else ["cell"]
        return int(summary.groupby(by, observed=True).size().min())


def tuned_sweeps(data: RunData) -> list[str]:
    """The loaded sweeps that choose learning rate and clipping on validation (``--select-by``)."""
    found = []
    for sweep, path in data.sweeps.items():
        try:
            record = json.loads((path / schema.SWEEP_FILES["sweep"]).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("select_by"):
            found.append(sweep)
    return found


def _select(data: RunData, mask: pd.Series) -> RunData:
    return data.select(data.summary.loc[mask, ["sweep", "run_id"]])


def study(data: RunData) -> Study:
    """Split ``data`` (already restricted to tuned selections) into the answers' roles.

    The answers are about the classic cells (RNNs, LSTM, GRU): runs of the modern ones are left out here,
    and their own section follows the answers.
    """
    summary = data.summary
    classic = summary["cell"].astype(str).map(is_classic) if not summary.empty else None
    if classic is not None and not classic.all():
        data = _select(data, classic)
        summary = data.summary
    if summary.empty:
        empty = data.select(summary[["sweep", "run_id"]])
        return Study(data, empty, empty, empty, empty, pd.DataFrame())
    # Recorded speech (FSDD, Speech Commands, or any dataset that is not a synthetic task).
    fsdd = (~summary["dataset"].isin(SYNTHETIC) if "dataset" in summary.columns
            else pd.Series(True, index=summary.index))
    epochs = summary["epochs"] if "epochs" in summary.columns else pd.Series(np.nan, index=summary.index)
    usual = epochs[fsdd].mode().min() if fsdd.any() and epochs[fsdd].notna().any() else np.nan
    baseline = _at_baseline(summary)
    long_curves = fsdd & baseline & (epochs > usual)
    headline = fsdd & baseline & ((epochs == usual) | epochs.isna())
    matched = fsdd & summary["param_target"].notna() if "param_target" in summary.columns else fsdd & False
    # The distance task keeps its init variants (question 2 compares them) and leaves out runs of one epoch
    # (a measurement at initialisation, e.g. the Lyapunov sweep), whose accuracy says nothing.
    distance = (summary["dataset"].eq("distance") & _at_baseline(summary.drop(columns="init", errors="ignore"))
                & ~(epochs <= 1) if "dataset" in summary.columns else fsdd & False)
    tuned = summary["sweep"].isin(tuned_sweeps(data))
    if (headline & tuned).any():  # the learning rate chosen on validation, not a fixed default
        headline &= tuned
    elif headline.any():  # no tuned sweep: the one sweep that compares the most cells (then most runs)
        counts = summary[headline].groupby("sweep", observed=True).agg(cells=("cell", "nunique"),
                                                                       runs=("cell", "size"))
        headline &= summary["sweep"] == counts.sort_values(["cells", "runs"], ascending=False).index[0]
    return Study(data=data, headline=_select(data, headline), curves=_select(data, long_curves),
                 matched=_select(data, matched), distance=_select(data, distance), pairs=matched_pairs(data))
