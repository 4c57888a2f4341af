"""Shared pieces of the four answers: constants, number formats and fold-level helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from gradlab.analysis.folds import (
    FOLD,
    paired_effects,
    speaker_table,
)
from gradlab.analysis.report.format import format_percent
from gradlab.analysis.report.study import Study

#: The questions, as headings.
QUESTIONS: tuple[str, ...] = (
    "What are vanishing gradients, why do they occur, and which activations suffer more or less?",
    "Why do LSTMs help with vanishing gradients, compared with a vanilla RNN?",
    "Which training curve is the RNN, which the LSTM and which the GRU, and why?",
    "When would you use each?",
)
#: The figure each answer leads with (file stem; the figures command draws them).
FIGURES: tuple[str, ...] = ("answer1_decay_by_activation", "answer2_carry_paths", "answer3_curves",
                            "answer4_differences")
#: RNN activations of question 1, in the order they are discussed.
ACTIVATION_CELLS: tuple[str, ...] = ("RNN_SIGMOID", "RNN_TANH", "RNN_RELU", "RNN_LEAKY_RELU")
CLASSIC: tuple[str, ...] = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")



# ---------------------------------------------------------------- formatting


def percent(value: float) -> str:
    return "n/a" if not np.isfinite(value) else format_percent(value)


def number(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}g}"


def interval_text(mean: float, low: float, high: float, fmt: Callable[[float], str] = number) -> str:
    if not np.isfinite(low) or not np.isfinite(high):
        return f"{fmt(mean)} (no interval)"
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


def difference_text(result: Mapping[str, object], fmt: Callable[[float], str] | None = None) -> str:
    """``difference [low, high]`` of a :func:`gradlab.analysis.folds.paired_difference` result (points by default)."""
    return interval_text(result["difference"], result["ci_low"], result["ci_high"], fmt or points)


def signed(digits: int) -> Callable[[float], str]:
    """A signed fixed-point format, e.g. ``signed(3)(0.1) == "+0.100"``."""
    return lambda value: f"{value:+.{digits}f}"


def points(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:+.1f}"


def p_text(value: float) -> str:
    if not np.isfinite(value):
        return "p n/a"
    return "p < 0.001" if value < 0.001 else f"p = {value:.2g}"


def effect_text(row: Mapping[str, object], *, scale: str = "points") -> str:
    """``+12.3 [+4.0, +20.6] points, paired over 6 speakers, p = 0.01``."""
    fmt = points if scale == "points" else (lambda v: f"{v:+.2f}")
    unit = "speakers" if row["unit"] == "speaker" else "seeds"
    return (f"{difference_text(row, fmt)} {scale}, paired over "
            f"{row['n']} {unit}, {p_text(row['p'])}")


def limits_line(study: Study, extra: str = "") -> str:
    speakers, seeds = study.speakers, study.seeds_per_fold
    plural = "seed" if seeds == 1 else "seeds"
    who = (f"{speakers} test speakers (FSDD's six speakers, each the test speaker of one fold), {seeds} {plural} "
           f"per fold" if speakers > 1 else f"one test split (on FSDD: one test speaker), {seeds} {plural} per cell")
    return f"*Limits:* {who}{extra}."


def figure_lines(stem: str, figures: Sequence[str], alt: str) -> list[str]:
    name = next((name for name in figures if name.startswith(stem)), None)
    return [f"![{alt}]({name})", ""] if name else []


# ---------------------------------------------------------------- shared measurements


def with_folds(values: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    keys = ["sweep", "run_id"]
    extra = [column for column in (FOLD, "status") if column in summary.columns and column not in values.columns]
    frame = values.merge(summary[[*keys, *extra]], on=keys, how="left")
    if FOLD not in frame.columns:
        frame[FOLD] = "single"
    frame[FOLD] = frame[FOLD].fillna("single")
    return frame


def speaker_rows(values: pd.DataFrame, summary: pd.DataFrame, value: str,
                  by: Sequence[str] = ("cell",)) -> pd.DataFrame:
    frame = with_folds(values, summary)
    frame = frame[np.isfinite(frame[value].astype(float))]
    return speaker_table(frame, value, by) if not frame.empty else pd.DataFrame()


def fold_series(values: pd.DataFrame, summary: pd.DataFrame, value: str, cell: str) -> pd.Series:
    frame = with_folds(values[values["cell"] == cell], summary)
    frame = frame[np.isfinite(frame[value].astype(float))]
    return frame.groupby(FOLD)[value].mean()


def effects(study: Study, option: str, value: object = None, cells: Sequence[str] = CLASSIC,
             column: str = "test_accuracy") -> pd.DataFrame:
    pairs = study.pairs
    if pairs.empty:
        return pd.DataFrame()
    chosen = pairs[(pairs["option"] == option) & pairs["cell"].isin(cells)]
    if value is not None:
        chosen = chosen[chosen["value"].map(str) == str(value)]
    if chosen.empty:
        return pd.DataFrame()
    return paired_effects(chosen, ("cell", "option", "value"), value=column).set_index("cell")


