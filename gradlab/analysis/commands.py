"""The ``figures`` and ``inspect`` commands behind ``python -m gradlab``.

Kept apart from the plot functions: this is the only analysis module that
writes files or selects a matplotlib backend.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import pandas as pd

from gradlab import schema
from gradlab.analysis.load import RunData, load_runs
from gradlab.analysis.stats import config_groups, first_to_last_ratio
from gradlab.atomic import write_atomic

#: Figure file stems, in the order they are written.
FIGURES: tuple[str, ...] = (
    "gradient_norm_by_timestep",
    "gradient_norm_heatmap",
    "learning_curves",
    "test_accuracy",
    "gate_statistics",
    "jacobian_spectral_norm",
    "vanishing_vs_length",
)
REPORT = "findings.md"
# The table each figure draws from, to skip a figure once when no run has it.
_FIGURE_TABLES: dict[str, str] = {
    "gradient_norm_by_timestep": "gradients",
    "gradient_norm_heatmap": "gradients",
    "learning_curves": "history",
    "test_accuracy": "summary",
    "gate_statistics": "gates",
    "jacobian_spectral_norm": "jacobian",
    "vanishing_vs_length": "gradients",
}
_TABLE_FILES: dict[str, str] = {**schema.RUN_FILES, "summary": f"{schema.SWEEP_FILES['summary']} or metrics.json"}
DEFAULT_FORMATS: tuple[str, ...] = ("png", "pdf")


def slug(label: str) -> str:
    """A file-name-safe form of a group label: ``"s readout=mean"`` -> ``"s_readout-mean"``."""
    safe = "".join(char if char.isalnum() or char in "-." else "_" if char in " /" else "-" for char in label)
    return safe.strip("_") or "runs"


def _figure_jobs(data: RunData, bootstrap: dict[str, float | int]) -> list[tuple[str, str, Callable[[], object]]]:
    """(group label, figure stem, draw) for every figure the data allows."""
    from gradlab.analysis import plots

    jobs = []
    groups = config_groups(data.summary) if not data.summary.empty else [
        (name, data.runs().loc[lambda runs, n=name: runs["sweep"] == n, ["sweep", "run_id"]]) for name in data.sweeps
    ]
    for label, runs in groups:
        part = data.select(runs)
        jobs += [
            (label, "gradient_norm_by_timestep", lambda p=part: plots.plot_gradient_profile(p.gradients, **bootstrap)),
            (label, "gradient_norm_heatmap", lambda p=part: plots.plot_gradient_heatmap(p.gradients)),
            (label, "learning_curves", lambda p=part: plots.plot_learning_curves(p.history, **bootstrap)),
            (label, "test_accuracy", lambda p=part: plots.plot_test_accuracy(p.summary, **bootstrap)),
            (label, "gate_statistics", lambda p=part: plots.plot_gate_statistics(p.gates, **bootstrap)),
            (label, "jacobian_spectral_norm", lambda p=part: plots.plot_jacobian_norm(p.jacobian, **bootstrap)),
        ]
    # Sequence-length sweeps: one figure per configuration other than seq_len.
    if not data.summary.empty:
        for label, runs in config_groups(data.summary, exclude=("seq_len",)):
            part = data.select(runs)
            if part.summary["seq_len"].nunique() > 1:
                jobs.append((label, "vanishing_vs_length", lambda p=part: plots.plot_vanishing_vs_length(
                    first_to_last_ratio(p.gradients, p.summary), **bootstrap)))
    return jobs


def figures(
    runs_dirs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    dpi: int = 200,
    n_resamples: int = 2000,
    seed: int = 0,
    stream: TextIO | None = None,
) -> list[Path]:
    """Write every figure and the findings report of saved runs, without training.

    A figure whose table no run recorded is skipped with a one-line note.

    Args:
        runs_dirs: sweep folder(s) or folder(s) of sweeps.
        out: output folder, created if needed.
        formats: file formats of each figure (``png``, ``pdf``, ``svg``).
        dpi: resolution of raster formats.
        n_resamples, seed: bootstrap intervals.
        stream: where notes and written paths are printed (default: standard output).

    Returns:
        The files written, report last.

    Raises:
        RunsDirError: if a runs directory is missing or holds no runs.
    """
    stream = stream or sys.stdout
    import matplotlib

    # Agg only here, in the command: plot functions never choose a backend.
    matplotlib.use("Agg")
    from gradlab.analysis.report import findings_report

    data = load_runs(runs_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bootstrap = {"n_resamples": n_resamples, "seed": seed}
    written: list[Path] = []
    linked: dict[str, list[str]] = {}
    missing = {stem: kind for stem, kind in _FIGURE_TABLES.items() if data.table(kind).empty}
    for stem, kind in missing.items():
        print(f"skipped {stem}: no run recorded {kind} ({_TABLE_FILES[kind]})", file=stream)
    for label, stem, draw in _figure_jobs(data, bootstrap):
        if stem in missing:
            continue
        try:
            fig = draw()
        except ValueError as error:
            print(f"skipped {stem} for {label}: {error}", file=stream)
            continue
        for fmt in formats:
            path = out / f"{stem}__{slug(label)}.{fmt}"
            write_atomic(path, lambda temporary, f=fig, k=fmt: f.savefig(temporary, format=k, dpi=dpi))
            written.append(path)
            print(f"wrote {path}", file=stream)
        linked.setdefault(label, []).append(f"{stem}__{slug(label)}.{formats[0]}")
    text = findings_report(data, figures=linked, n_resamples=n_resamples, seed=seed)
    report = out / REPORT
    write_atomic(report, lambda temporary: temporary.write_text(text))
    written.append(report)
    print(f"wrote {report}", file=stream)
    return written


#: Summary columns shown by ``inspect``, in order, where present.
INSPECT_COLUMNS: tuple[str, ...] = (
    "run_id", "cell", "seed", "dataset", "readout", "normalise", "seq_len", "status",
    "best_val_accuracy", "test_accuracy", "final_test_accuracy", "n_params", "time_per_epoch",
)


def inspect(runs_dirs: str | Path | Sequence[str | Path], *, rows: int = 5, stream: TextIO | None = None) -> None:
    """Print each sweep's summary table and the shape and head of its gradient frame.

    Args:
        runs_dirs: sweep folder(s) or folder(s) of sweeps.
        rows: rows of the gradient frame to show.
        stream: where to print (default: standard output).

    Raises:
        RunsDirError: if a runs directory is missing or holds no runs.
    """
    stream = stream or sys.stdout
    data = load_runs(runs_dirs)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 200):
        for sweep, path in data.sweeps.items():
            summary = data.summary[data.summary["sweep"] == sweep]
            gradients = data.gradients[data.gradients["sweep"] == sweep]
            print(f"== sweep {sweep} ({path}): {data.runs()['sweep'].eq(sweep).sum()} runs", file=stream)
            print("summary:", file=stream)
            if summary.empty:
                print("  (no summary.parquet or metrics.json)", file=stream)
            else:
                shown = [column for column in INSPECT_COLUMNS if column in summary.columns]
                print(summary[shown].sort_values(["cell", "seed"]).to_string(index=False), file=stream)
            print(f"gradients: {gradients.shape[0]} rows x {gradients.shape[1]} columns", file=stream)
            if not gradients.empty:
                print(gradients.head(rows).to_string(index=False), file=stream)
            print(file=stream)
