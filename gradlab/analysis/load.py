"""Read a runs directory into the tables documented in :mod:`gradlab.schema`.

A runs directory is either one sweep (``<sweep>/<run_id>/<file>``) or a folder
of sweeps. Every loaded frame gains a ``sweep`` column, the sweep folder's name,
because run ids are only unique within a sweep.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gradlab import schema

#: Tables stored per run, in the order they are loaded.
RUN_TABLES: tuple[str, ...] = ("history", "gradients", "gates", "jacobian")

# Files whose presence marks a folder as one run's folder.
_RUN_MARKERS: tuple[str, ...] = ("config", "metrics", *RUN_TABLES)

_LAYOUT_HINT = (
    "expected a sweep folder <sweep>/<run_id>/ holding "
    + ", ".join(schema.RUN_FILES[name] for name in _RUN_MARKERS)
    + f" (and optionally <sweep>/{schema.SWEEP_FILES['summary']}), or a folder of such sweeps"
)


class RunsDirError(ValueError):
    """A runs directory is missing or holds no runs."""


@dataclass(frozen=True)
class RunData:
    """Every table of one or several sweeps, each with an extra ``sweep`` column.

    Attributes:
        summary: one row per run (:data:`gradlab.schema.SUMMARY`).
        history: training history (:data:`gradlab.schema.HISTORY`).
        gradients: per-timestep gradient norms (:data:`gradlab.schema.GRADIENTS`).
        gates: gate statistics (:data:`gradlab.schema.GATES`).
        jacobian: Jacobian spectral norms (:data:`gradlab.schema.JACOBIAN`).
        sweeps: sweep name -> the folder it was read from.
    """

    summary: pd.DataFrame
    history: pd.DataFrame
    gradients: pd.DataFrame
    gates: pd.DataFrame
    jacobian: pd.DataFrame
    sweeps: dict[str, Path] = field(default_factory=dict)

    def table(self, kind: str) -> pd.DataFrame:
        """The table of ``kind`` (``summary``, ``history``, ``gradients``, ``gates`` or ``jacobian``)."""
        schema.columns(kind)  # raises ValueError naming the allowed kinds
        return getattr(self, kind)

    def runs(self) -> pd.DataFrame:
        """The distinct (sweep, run_id, cell, activation, seed) of every run in any table."""
        keys = ["sweep", "run_id", "cell", "activation", "seed"]
        frames = [self.table(kind)[keys] for kind in ("summary", *RUN_TABLES)]
        return pd.concat(frames, ignore_index=True).drop_duplicates(["sweep", "run_id"]).reset_index(drop=True)

    def select(self, runs: pd.DataFrame) -> RunData:
        """Keep only the runs listed in ``runs`` (a frame with ``sweep`` and ``run_id``)."""
        wanted = pd.MultiIndex.from_frame(runs[["sweep", "run_id"]].astype("string"))

        def keep(frame: pd.DataFrame) -> pd.DataFrame:
            index = pd.MultiIndex.from_frame(frame[["sweep", "run_id"]])
            return frame[index.isin(wanted)].reset_index(drop=True)

        tables = {kind: keep(self.table(kind)) for kind in ("summary", *RUN_TABLES)}
        names = set(runs["sweep"])
        return RunData(**tables, sweeps={name: path for name, path in self.sweeps.items() if name in names})


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / schema.RUN_FILES[name]).is_file() for name in _RUN_MARKERS)


def _is_sweep_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in schema.SWEEP_FILES.values()):
        return True
    return any(_is_run_dir(child) for child in path.iterdir())


def find_sweeps(root: str | Path) -> list[Path]:
    """The sweep folders under ``root``: ``root`` itself if it is a sweep, else its sweep children.

    Raises:
        RunsDirError: if ``root`` does not exist or holds no sweep.
    """
    root = Path(root)
    if not root.exists():
        raise RunsDirError(f"runs directory {str(root)!r} does not exist; {_LAYOUT_HINT}")
    if not root.is_dir():
        raise RunsDirError(f"runs directory {str(root)!r} is not a folder; {_LAYOUT_HINT}")
    if _is_sweep_dir(root):
        return [root]
    sweeps = sorted(child for child in root.iterdir() if _is_sweep_dir(child))
    if not sweeps:
        raise RunsDirError(f"runs directory {str(root)!r} holds no runs; {_LAYOUT_HINT}")
    return sweeps


def _sweep_names(paths: list[Path]) -> dict[str, Path]:
    """Name each sweep by its folder name, or by more of its path where names clash."""
    names = [path.name for path in paths]
    if len(set(names)) == len(names):
        return dict(zip(names, paths))
    resolved = [path.resolve() for path in paths]
    depth = 2
    while True:
        names = ["/".join(path.parts[-depth:]) for path in resolved]
        if len(set(names)) == len(names) or depth > max(len(path.parts) for path in resolved):
            return dict(zip(names, paths))
        depth += 1


def _with_sweep(frame: pd.DataFrame, kind: str, sweep: str, source: Path) -> pd.DataFrame:
    try:
        frame = schema.conform(frame, kind)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    return frame.assign(sweep=pd.array([sweep] * len(frame), dtype="string"))


def _empty(kind: str) -> pd.DataFrame:
    return schema.empty(kind).assign(sweep=pd.array([], dtype="string"))


def _concat(frames: list[pd.DataFrame], kind: str) -> pd.DataFrame:
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return _empty(kind)
    # Concatenate then conform again: runs may carry different extra columns.
    combined = pd.concat(frames, ignore_index=True)
    return schema.conform(combined, kind)


def _load_summary(sweep: str, path: Path, run_dirs: list[Path]) -> pd.DataFrame:
    """The sweep's summary.parquet, plus metrics.json rows of runs it does not list."""
    frames = []
    summary_file = path / schema.SWEEP_FILES["summary"]
    if summary_file.is_file():
        frames.append(_with_sweep(pd.read_parquet(summary_file), "summary", sweep, summary_file))
    listed = set(frames[0]["run_id"]) if frames else set()
    for run_dir in run_dirs:
        metrics_file = run_dir / schema.RUN_FILES["metrics"]
        if run_dir.name in listed or not metrics_file.is_file():
            continue
        row = json.loads(metrics_file.read_text())
        frames.append(_with_sweep(pd.DataFrame([row]), "summary", sweep, metrics_file))
    return _concat(frames, "summary")


def load_runs(paths: str | Path | Iterable[str | Path]) -> RunData:
    """Load every table of one or several runs directories.

    Args:
        paths: a sweep folder, a folder of sweeps, or several of either.

    Returns:
        A :class:`RunData` whose frames follow :mod:`gradlab.schema` plus a
        ``sweep`` column. A table no run wrote is an empty frame.

    Raises:
        RunsDirError: if a path does not exist or no run is found.
        ValueError: if a stored table lacks documented columns.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sweep_paths = [sweep for path in paths for sweep in find_sweeps(path)]
    sweeps = _sweep_names(sweep_paths)
    tables: dict[str, list[pd.DataFrame]] = {kind: [] for kind in ("summary", *RUN_TABLES)}
    for sweep, path in sweeps.items():
        run_dirs = sorted(child for child in path.iterdir() if _is_run_dir(child))
        tables["summary"].append(_load_summary(sweep, path, run_dirs))
        for run_dir in run_dirs:
            for kind in RUN_TABLES:
                table_file = run_dir / schema.RUN_FILES[kind]
                if table_file.is_file():
                    tables[kind].append(_with_sweep(pd.read_parquet(table_file), kind, sweep, table_file))
    data = RunData(**{kind: _concat(frames, kind) for kind, frames in tables.items()}, sweeps=sweeps)
    if data.runs().empty:
        where = ", ".join(repr(str(path)) for path in sweeps.values())
        raise RunsDirError(f"no runs found in {where}; {_LAYOUT_HINT}")
    return data
