"""A sweep's folder on disk: creating it safely, and its summary table.

Layout (:data:`gradlab.schema.SWEEP_FILES`, :data:`gradlab.schema.RUN_FILES`)::

    <sweep>/sweep.json          the sweep's runs (each RunConfig as a dict) and command line
    <sweep>/summary.parquet     one SUMMARY row per ended run
    <sweep>/<run_id>/...        config.json, history/gradients/gates/jacobian.parquet,
                                metrics.json, checkpoint.pt

A sweep folder is never overwritten silently: :func:`open_sweep_dir` resumes
it (when it was made for the same runs), replaces it only with
``overwrite=True``, and otherwise refuses, naming the three choices.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab import schema
from gradlab.atomic import write_atomic
from gradlab.config import RunConfig
from gradlab.train import config_differences, read_json, write_json


def check_output_path(out: str | os.PathLike) -> Path:
    """``out`` as a Path, checked to be a folder or nothing yet (never a file).

    Raises:
        ValueError: if ``out`` (or a parent of it) is a file.
    """
    out = Path(out)
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            raise ValueError(f"output path {str(out)!r} is not usable: {str(path)!r} is a file, not a folder")
    return out


def sweep_record(runs: Sequence[RunConfig], command: Sequence[str] | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``sweep.json`` holds: the runs' configs and the command line."""
    return {"command": list(command) if command is not None else None, **(extra or {}),
            "runs": [run.to_dict() for run in runs]}


def check_sweep_dir(sweep_dir: str | os.PathLike, runs: Sequence[RunConfig], *, resume: bool, overwrite: bool) -> Path:
    """Check, without writing anything, that ``sweep_dir`` may hold ``runs``.

    Raises:
        ValueError: ``resume`` and ``overwrite`` together, the path is a file,
            or resuming a sweep made for different runs.
        FileExistsError: the folder exists and neither ``resume`` nor ``overwrite`` was given.
    """
    if resume and overwrite:
        raise ValueError("choose --resume or --overwrite, not both")
    sweep_dir = check_output_path(sweep_dir)
    if not sweep_dir.exists() or not any(sweep_dir.iterdir()):
        return sweep_dir
    record = sweep_dir / schema.SWEEP_FILES["sweep"]
    if overwrite:
        if not record.is_file():
            raise ValueError(f"{sweep_dir} exists but is not a gradlab sweep folder (no {record.name}); not deleting it")
        return sweep_dir
    if not resume:
        raise FileExistsError(
            f"sweep folder {sweep_dir} already exists; pass --resume to continue it, --overwrite to replace it, "
            "or --name for a new folder"
        )
    if not record.is_file():
        raise ValueError(f"cannot resume {sweep_dir}: it has no {record.name}, so it is not a gradlab sweep folder")
    stored = {run["run_id"]: run for run in read_json(record)["runs"]}
    for run in runs:
        if run.run_id in stored:
            differences = config_differences(stored[run.run_id], run.to_dict())
            if differences:
                raise ValueError(
                    f"cannot resume {sweep_dir}: run {run.run_id} was made with other settings "
                    f"({'; '.join(differences)}); use --overwrite or a new --name"
                )
    return sweep_dir


def open_sweep_dir(
    sweep_dir: str | os.PathLike,
    runs: Sequence[RunConfig],
    *,
    resume: bool,
    overwrite: bool,
    command: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Create (or reopen, or replace) a sweep folder and write its ``sweep.json``.

    Checks with :func:`check_sweep_dir` first; see there for the errors.
    """
    sweep_dir = check_sweep_dir(sweep_dir, runs, resume=resume, overwrite=overwrite)
    if overwrite and sweep_dir.exists():
        shutil.rmtree(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    record = sweep_dir / schema.SWEEP_FILES["sweep"]
    payload = sweep_record(runs, command, extra)
    if record.is_file():  # resuming: keep runs it listed that this command does not
        listed = {run["run_id"] for run in payload["runs"]}
        payload["runs"] = [run for run in read_json(record)["runs"] if run["run_id"] not in listed] + payload["runs"]
    write_json(record, payload)
    return sweep_dir


def collect_summary(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """The SUMMARY rows of every run folder in ``sweep_dir`` that has a ``metrics.json``."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for run_dir in sorted(path for path in sweep_dir.iterdir() if path.is_dir()):
        metrics = run_dir / schema.RUN_FILES["metrics"]
        if metrics.is_file():
            rows.append(read_json(metrics))
    if not rows:
        return schema.empty("summary")
    return schema.conform(pd.DataFrame(rows), "summary")


def write_summary(sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """Rewrite ``<sweep>/summary.parquet`` from the runs' metrics (atomically); returns it."""
    summary = collect_summary(sweep_dir)
    path = Path(sweep_dir) / schema.SWEEP_FILES["summary"]
    write_atomic(path, lambda temporary: summary.to_parquet(temporary, engine="pyarrow", index=False))
    return summary
