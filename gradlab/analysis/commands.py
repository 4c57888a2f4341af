"""The ``figures`` and ``inspect`` commands behind ``python -m gradlab``.

Kept apart from the plot functions: this is the only analysis module that
writes files or selects a matplotlib backend.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import pandas as pd

from gradlab import schema
from gradlab.analysis.learning import chance_level
from gradlab.analysis.load import DamagedRunWarning, RunData, load_runs
from gradlab.analysis.report.dynamics import LABEL as DYNAMICS
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
APPENDIX = "findings_appendix.md"
# The table each figure draws from, to skip a figure once when no run has it.
_FIGURE_TABLES: dict[str, str] = {
    "gradient_norm_by_timestep": "gradients",
    "gradient_norm_heatmap": "gradients",
    "learning_curves": "history",
    "test_accuracy": "summary",
    "gate_statistics": "gates",
    "jacobian_spectral_norm": "jacobian",
    "vanishing_vs_length": "gradients",
    "lyapunov_spectra": "lyapunov",
    "exponent_vs_slope": "lyapunov",
}
_TABLE_FILES: dict[str, str] = {**schema.RUN_FILES, "summary": f"{schema.SWEEP_FILES['summary']} or metrics.json"}
DEFAULT_FORMATS: tuple[str, ...] = ("png", "pdf")


def slug(label: str) -> str:
    """A file-name-safe form of a group label: ``"s readout=mean"`` -> ``"s_readout-mean"``."""
    safe = "".join(char if char.isalnum() or char in "-." else "_" if char in " /" else "-" for char in label)
    return safe.strip("_") or "runs"


def _chance(data: RunData) -> float | None:
    levels = chance_level(data.summary).dropna().unique() if not data.summary.empty else []
    return float(levels[0]) if len(levels) == 1 else None


def _figure_jobs(data: RunData, *, dynamics_only: bool = False) -> list[tuple[str, str, Callable[[], object]]]:
    """(group label, figure stem, draw) for every figure the data allows (``dynamics_only``: the Lyapunov ones)."""
    from gradlab.analysis import plots

    jobs = []
    if dynamics_only:
        return _dynamics_jobs(data)
    groups = config_groups(data.summary) if not data.summary.empty else [
        (name, data.runs().loc[lambda runs, n=name: runs["sweep"] == n, ["sweep", "run_id"]]) for name in data.sweeps
    ]
    for label, runs in groups:
        part = data.select(runs)
        jobs += [
            (label, "gradient_norm_by_timestep", lambda p=part: plots.plot_gradient_profile(p.gradients)),
            (label, "gradient_norm_heatmap", lambda p=part: plots.plot_gradient_heatmap(p.gradients)),
            (label, "learning_curves", lambda p=part: plots.plot_learning_curves(p.history, chance=_chance(p))),
            (label, "test_accuracy", lambda p=part: plots.plot_test_accuracy(p.summary)),
            (label, "gate_statistics", lambda p=part: plots.plot_gate_statistics(p.gates)),
            (label, "jacobian_spectral_norm", lambda p=part: plots.plot_jacobian_norm(p.jacobian)),
        ]
    # Sequence-length sweeps: one figure per configuration other than seq_len, at initialisation.
    if not data.summary.empty:
        for label, runs in config_groups(data.summary, exclude=("seq_len",)):
            part = data.select(runs)
            if part.summary["seq_len"].nunique() > 1:
                jobs.append((label, "vanishing_vs_length", lambda p=part: plots.plot_vanishing_vs_length(
                    first_to_last_ratio(p.gradients, p.summary, stage="init"))))
    return jobs + _dynamics_jobs(data)


def _dynamics_jobs(data: RunData) -> list[tuple[str, str, Callable[[], object]]]:
    from gradlab.analysis import plots

    jobs = []
    if not data.lyapunov.empty:
        from gradlab.analysis.dynamics import exponent_vs_slope, spectrum_stages

        for sweep in data.sweeps:
            part = data.lyapunov[data.lyapunov["sweep"] == sweep]
            if not part.empty:
                jobs.append((DYNAMICS, f"lyapunov_spectra__{slug(sweep)}",
                             lambda p=part: plots.plot_lyapunov_spectra(spectrum_stages(p))))
        jobs.append((DYNAMICS, "exponent_vs_slope", lambda: plots.plot_exponent_vs_slope(
            exponent_vs_slope(data.lyapunov, data.gradients, data.summary))))
    return jobs


def _load(runs_dirs, stream: TextIO) -> RunData:
    """:func:`load_runs`, printing each damaged run it left out as a warning line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedRunWarning)
        data = load_runs(runs_dirs)
    for warning in caught:
        if issubclass(warning.category, DamagedRunWarning):
            print(f"warning: {warning.message}", file=stream)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return data


def figures(
    runs_dirs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    dpi: int = 200,
    n_resamples: int = 2000,
    seed: int = 0,
    stream: TextIO | None = None,
    every_configuration: bool = False,
) -> list[Path]:
    """Write every figure and the findings report of saved runs, without training.

    A figure whose table no run recorded is skipped with a one-line note.

    Args:
        runs_dirs: sweep folder(s) or folder(s) of sweeps.
        out: output folder, created if needed.
        formats: file formats of each figure (``png``, ``pdf``, ``svg``).
        dpi: resolution of raster formats.
        n_resamples, seed: the stratified bootstrap of the report's IQM accuracies
            (every other interval is a t interval over seeds).
        stream: where notes, warnings about damaged runs (left out) and written
            paths are printed (default: standard output).
        every_configuration: also draw every configuration's own figures
            (gradient profiles, curves, gates ... of each sweep and fold); by
            default only the answers' figures and the dynamics figures.

    Returns:
        The files written, report and its appendix last.

    Raises:
        RunsDirError: if a runs directory is missing or holds no readable run.
    """
    stream = stream or sys.stdout
    import matplotlib

    # Agg only here, in the command: plot functions never choose a backend.
    matplotlib.use("Agg")
    from gradlab.analysis.report import build_findings, tune, with_classes

    data = with_classes(_load(runs_dirs, stream))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    linked: dict[str, list[str]] = {}
    missing = {stem: kind for stem, kind in _FIGURE_TABLES.items() if data.table(kind).empty}
    for stem, kind in missing.items():
        print(f"skipped {stem}: no run recorded {kind} ({_TABLE_FILES[kind]})", file=stream)
    tuned = tune(data)[0]  # tuned sweeps at their selected points
    from gradlab.analysis.report.answers import answer_figures
    from gradlab.analysis.report.study import study

    answers: list[str] = []
    for stem, draw in answer_figures(study(tuned)):
        try:
            fig = draw()
        except (ValueError, KeyError) as error:
            print(f"skipped {stem}: {error}", file=stream)
            continue
        for fmt in formats:
            path = out / f"{stem}.{fmt}"
            write_atomic(path, lambda temporary, f=fig, k=fmt: f.savefig(temporary, format=k, dpi=dpi))
            written.append(path)
            print(f"wrote {path}", file=stream)
        answers.append(f"{stem}.{formats[0]}")
    for label, stem, draw in _figure_jobs(tuned) if every_configuration else _figure_jobs(tuned, dynamics_only=True):
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
    findings = build_findings(data, figures=linked, answer_figures=answers, n_resamples=n_resamples, seed=seed)
    for name, text in ((REPORT, findings.main()), (APPENDIX, findings.appendix())):
        path = out / name
        write_atomic(path, lambda temporary, t=text: temporary.write_text(t))
        written.append(path)
        print(f"wrote {path}", file=stream)
    return written


#: Summary columns shown by ``inspect``, in order, where present.
INSPECT_COLUMNS: tuple[str, ...] = (
    "run_id", "cell", "seed", "dataset", "split", "readout", "normalise", "seq_len", "pad", "delay", "hidden_size",
    "init", "lr", "clip_grad_norm", "num_classes", "n_validation",
    "status", "best_val_accuracy", "test_accuracy", "final_test_accuracy", "n_params", "time_per_epoch",
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
    data = _load(runs_dirs, stream)
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
