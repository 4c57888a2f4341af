"""How the findings report writes numbers, intervals, tables and data descriptions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from gradlab.analysis.load import RunData

#: How each FSDD split scheme is labelled wherever its numbers appear.
SPLIT_LABELS: dict[str, str] = {
    "speakers": "speaker-independent split (validation and test speakers never seen in training)",
    "takes": "speaker-dependent split (by take: every speaker is in train, validation and test)",
}


def format_ratio(value: float) -> str:
    """How the report writes a gradient ratio or norm (3 significant digits)."""
    return f"{value:.3g}"


def format_percent(fraction: float) -> str:
    """How the report writes an accuracy fraction, as a percentage."""
    return f"{100.0 * fraction:.1f}%"


def format_number(value: float) -> str:
    return f"{value:.3g}"


def with_interval(mean: float, low: float, high: float, fmt=format_number, *, log: bool = False) -> str:
    """``mean [low, high]``; ``log`` values are log10 and shown as powers of ten. No interval: just the mean."""
    values = [mean, low, high]
    if log:
        values = [10.0**value if not math.isnan(value) else value for value in values]
    if any(math.isnan(value) for value in values[1:]):
        return f"{fmt(values[0])} (no interval)"
    return f"{fmt(values[0])} [{fmt(values[1])}, {fmt(values[2])}]"


def row_interval(row: pd.Series, fmt=format_number, *, log: bool = False, prefix: str = "") -> str:
    return with_interval(row[f"{prefix}mean" if prefix else "mean"], row["ci_low"], row["ci_high"], fmt, log=log)


def table(header: Sequence[str], rows: list[Sequence[object]]) -> list[str]:
    """A Markdown table, then a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def dataset_of(data: RunData) -> str:
    datasets = sorted(set(data.summary["dataset"].dropna())) if "dataset" in data.summary else []
    return ", ".join(f"`{name}`" for name in datasets) if datasets else "an unrecorded dataset"


def split_of(data: RunData, sweep_config: dict | None = None) -> str | None:
    """The data split scheme of these runs: ``speakers``, ``takes`` or None where not recorded."""
    if "split" in data.summary.columns:
        schemes = sorted(set(data.summary["split"].dropna().astype(str)))
        if len(schemes) == 1:
            return schemes[0]
    if sweep_config:
        # a split scheme belongs to recorded speech; synthetic tasks carry the field unused
        schemes = {(run.get("data") or {}).get("split") for run in sweep_config.get("runs") or []
                   if (run.get("data") or {}).get("dataset") not in ("adding", "copy-memory", "distance")}
        schemes |= {sweep_config.get("split"), (sweep_config.get("config") or {}).get("split")}
        schemes = {scheme for scheme in schemes if isinstance(scheme, str)}
        if len(schemes) == 1:
            return schemes.pop()
    return None


def split_note(data: RunData, sweep_config: dict | None = None) -> str:
    """A short label of the split behind these numbers (FSDD only; other datasets have fixed splits)."""
    scheme = split_of(data, sweep_config)
    if scheme in SPLIT_LABELS:
        return SPLIT_LABELS[scheme]
    if "fsdd" in dataset_of(data):
        return "split not recorded (runs of that age split FSDD by take: speaker-dependent)"
    return scheme or "the dataset's fixed split"


def words(text: str) -> int:
    return len(text.split())
