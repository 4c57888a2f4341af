"""Read a runs directory into the tables documented in :mod:`gradlab.store.schema`.

A runs directory is either one sweep (``<sweep>/<run_id>/<file>``) or a folder
of sweeps. Every loaded frame gains a ``sweep`` column, the sweep folder's name,
because run ids are only unique within a sweep.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gradlab.store import schema
from gradlab.store.io import LAYOUT, RUN_TABLES, RunFolder, RunFolderError, read_sweep_record

# Files whose presence marks a folder as one run's folder.
_RUN_MARKERS: tuple[str, ...] = ("config", "metrics", *RUN_TABLES)

_LAYOUT_HINT = (
    "expected a sweep folder <sweep>/<run_id>/ holding "
    + ", ".join(schema.RUN_FILES[name] for name in _RUN_MARKERS)
    + f" (and optionally <sweep>/{schema.SWEEP_FILES['summary']}), or a folder of such sweeps"
)


class RunsDirError(ValueError):
    """A runs directory is missing or holds no runs."""


class DamagedRunWarning(UserWarning):
    """A run's file could not be read; the run is left out of the analysis."""


class OlderLayoutWarning(UserWarning):
    """Runs were written by an older gradlab; they are read as they are."""


@dataclass(frozen=True)
class RunData:
    """Every table of one or several sweeps, each with an extra ``sweep`` column.

    Attributes:
        summary: one row per run (:data:`gradlab.store.schema.SUMMARY`).
        history: training history (:data:`gradlab.store.schema.HISTORY`).
        gradients: per-timestep gradient norms (:data:`gradlab.store.schema.GRADIENTS`).
        gates: gate statistics (:data:`gradlab.store.schema.GATES`).
        jacobian: Jacobian spectral norms (:data:`gradlab.store.schema.JACOBIAN`).
        sweeps: sweep name -> the folder it was read from.
        predictions: per-example predictions (:data:`gradlab.store.schema.PREDICTIONS`).
        lyapunov: Lyapunov exponents recorded during training (:data:`gradlab.store.schema.LYAPUNOV`).
        skipped: one message per run left out because a file of it could not be read.
    """

    summary: pd.DataFrame
    history: pd.DataFrame
    gradients: pd.DataFrame
    gates: pd.DataFrame
    jacobian: pd.DataFrame
    sweeps: dict[str, Path] = field(default_factory=dict)
    predictions: pd.DataFrame = field(default_factory=lambda: _empty("predictions"))
    lyapunov: pd.DataFrame = field(default_factory=lambda: _empty("lyapunov"))
    skipped: tuple[str, ...] = ()

    def table(self, kind: str) -> pd.DataFrame:
        """The table of ``kind``: ``summary`` or one of :data:`RUN_TABLES`."""
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
        return RunData(**tables, sweeps={name: path for name, path in self.sweeps.items() if name in names},
                       skipped=self.skipped)


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


def _read_summary_file(sweep: str, path: Path, skipped: list[str]) -> pd.DataFrame | None:
    """The sweep's summary.parquet, or None (with a warning) when it cannot be read."""
    summary_file = path / schema.SWEEP_FILES["summary"]
    if not summary_file.is_file():
        return None
    try:
        return _with_sweep(pd.read_parquet(summary_file), "summary", sweep, summary_file)
    except Exception as error:  # noqa: BLE001 - any damage: fall back to each run's metrics.json
        _warn(skipped, f"could not read {summary_file} ({_reason(error)}); using each run's "
                       f"{schema.RUN_FILES['metrics']} instead")
        return None


def _check_sweep_record(path: Path, skipped: list[str]) -> None:
    """Warn when the sweep's sweep.json is damaged: the runs are still analysed, without what it records."""
    record = path / schema.SWEEP_FILES["sweep"]
    if record.is_file():
        try:
            read_sweep_record(record, require_runs=False)
        except (RunFolderError, OSError) as error:
            _warn(skipped, f"{str(error).split(';')[0]}; its runs are read without it (no grid selection, "
                           "no class names)")


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _warn(skipped: list[str], message: str) -> None:
    skipped.append(message)
    warnings.warn(message, DamagedRunWarning, stacklevel=3)


def _read_run(sweep: str, run_dir: Path) -> dict[str, pd.DataFrame]:
    """Every table of one run folder, and its metrics.json row as ``metrics`` (when present).

    Raises:
        ValueError: naming the file that could not be read, and why.
    """
    folder = RunFolder(run_dir)
    tables = {}
    try:
        if folder.has("config"):
            folder.raw_config()  # checked for shape: a run whose config.json is damaged is not analysed
        for kind in RUN_TABLES:
            if folder.has(kind):
                tables[kind] = _with_sweep(folder.table(kind), kind, sweep, folder.file(kind))
        if folder.has("metrics"):
            tables["metrics"] = _with_sweep(pd.DataFrame([folder.metrics()]), "summary", sweep, folder.file("metrics"))
    except RunFolderError as error:
        raise ValueError(str(error).split(";")[0]) from None
    return tables


def _older_layout(run_dir: Path) -> int | None:
    """The layout of a run folder written by an older gradlab, or None (current, or unreadable config)."""
    try:
        layout = RunFolder(run_dir).layout
    except (RunFolderError, OSError):
        return None
    return layout if layout < LAYOUT else None


def load_runs(paths: str | Path | Iterable[str | Path]) -> RunData:
    """Load every table of one or several runs directories.

    A run with a file that cannot be read (a truncated or empty Parquet file,
    a broken metrics.json) is left out with a :class:`DamagedRunWarning`
    naming the file; the messages are kept in :attr:`RunData.skipped`.

    Args:
        paths: a sweep folder, a folder of sweeps, or several of either.

    Returns:
        A :class:`RunData` whose frames follow :mod:`gradlab.store.schema` plus a
        ``sweep`` column. A table no run wrote is an empty frame.

    Raises:
        RunsDirError: if a path does not exist or no readable run is found.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sweep_paths = [sweep for path in paths for sweep in find_sweeps(path)]
    sweeps = _sweep_names(sweep_paths)
    tables: dict[str, list[pd.DataFrame]] = {kind: [] for kind in ("summary", *RUN_TABLES)}
    skipped: list[str] = []
    for sweep, path in sweeps.items():
        _check_sweep_record(path, skipped)
        summary = _read_summary_file(sweep, path, skipped)
        listed = set(summary["run_id"]) if summary is not None else set()
        damaged, unlisted, older = set(), [], []
        for run_dir in sorted(child for child in path.iterdir() if _is_run_dir(child)):
            if _older_layout(run_dir) is not None:
                older.append(run_dir.name)
            try:
                run = _read_run(sweep, run_dir)
            except ValueError as error:
                _warn(skipped, f"skipped run {run_dir}: {error}")
                damaged.add(run_dir.name)
                continue
            metrics = run.pop("metrics", None)
            if metrics is not None and run_dir.name not in listed:
                unlisted.append(metrics)
            for kind, frame in run.items():
                tables[kind].append(frame)
        if older:
            warnings.warn(f"{len(older)} runs of {path} (e.g. {older[0]}) were written by an older gradlab "
                          f"(run-folder layout {_older_layout(path / older[0])}, before {LAYOUT}): read as they are, "
                          "without the tables that layout lacked (predictions); re-run them for those",
                          OlderLayoutWarning, stacklevel=2)
        if summary is not None:
            tables["summary"].append(summary[~summary["run_id"].isin(damaged)])
        tables["summary"] += unlisted
    data = RunData(**{kind: _concat(frames, kind) for kind, frames in tables.items()}, sweeps=sweeps,
                   skipped=tuple(skipped))
    if data.runs().empty:
        where = ", ".join(repr(str(path)) for path in sweeps.values())
        reason = f" ({len(skipped)} damaged: {'; '.join(skipped)})" if skipped else ""
        raise RunsDirError(f"no readable runs found in {where}{reason}; {_LAYOUT_HINT}")
    return data
