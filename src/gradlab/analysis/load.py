"""Read a runs directory into the tables documented in :mod:`gradlab.store.schema`.

A runs directory is either one sweep (``<sweep>/<run_id>/<file>``) or a folder
of sweeps. Every loaded frame gains a ``sweep`` column, the sweep folder's name,
because run ids are only unique within a sweep.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradlab.store import schema
from gradlab.store.io import LAYOUT, RUN_TABLES, RunFolder, RunFolderError, read_sweep_record
from gradlab.analysis.combine import ColumnPieces
from gradlab.analysis.rundata import (  # noqa: F401 - RunData and its names are imported from here too
    ALL_TABLES,
    CATEGORICAL_COLUMNS,
    DEFAULT_TABLES,
    RunData,
    TableNotLoadedError,
    _empty,
    _KEYS,
)

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
        raise RunsDirError(f"runs directory {str(root)!r} does not exist; {_sweeps_beside(root)}{_LAYOUT_HINT}")
    if not root.is_dir():
        raise RunsDirError(f"runs directory {str(root)!r} is not a folder; {_LAYOUT_HINT}")
    if _is_sweep_dir(root):
        return [root]
    sweeps = sorted(child for child in root.iterdir() if _is_sweep_dir(child))
    if not sweeps:
        raise RunsDirError(f"runs directory {str(root)!r} holds no runs; {_LAYOUT_HINT}")
    return sweeps


def _sweeps_beside(missing: Path, limit: int = 20) -> str:
    """A sentence naming the sweep folders in the nearest existing folder above ``missing`` (or "")."""
    folder = missing.parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        sweeps = sorted(str(child) for child in folder.iterdir() if _is_sweep_dir(child))
    except OSError:
        return ""
    if not sweeps:
        return f"{str(folder)!r} holds no sweep either; "
    shown = ", ".join(sweeps[:limit]) + (f" and {len(sweeps) - limit} more" if len(sweeps) > limit else "")
    return f"sweeps in {str(folder)!r}: {shown}; "


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


def _read_parquet(path: Path, kind: str, sweep: str, columns: Sequence[str] | None) -> pa.Table:
    """One Parquet table with only ``columns`` (every column when None), its strings dictionary-encoded.

    Raises:
        ValueError: naming the file, when it cannot be read or lacks a documented column.
    """
    try:
        names = pq.read_schema(path).names
        wanted = [name for name in names if columns is None or name in columns]
        table = pq.read_table(path, columns=wanted, read_dictionary=[name for name in wanted
                                                                       if name in CATEGORICAL_COLUMNS])
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise ValueError(f"{path} is damaged ({_reason(error)})") from None
    missing = [name for name in (columns or schema.columns(kind)) if name not in names and name != "sweep"]
    if missing:
        raise ValueError(f"{path} is not a {kind} table: it is missing columns {missing}; it has {names}")
    sweep_column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(table.num_rows, dtype=np.int32)), pa.array([sweep]))
    return table.append_column("sweep", sweep_column)


def _conform(frame: pd.DataFrame, kind: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Cast to ``kind``'s dtypes in its column order (extra columns after), strings of run tables as categoricals.

    Categories are sorted, so that sorting by a categorical column orders rows as sorting the strings would.
    """
    spec = {name: dtype for name, dtype in {**schema.columns(kind), "sweep": "string"}.items()
            if columns is None or name in columns}
    missing = [name for name in spec if name not in frame.columns]
    if missing:
        raise ValueError(f"{kind} table is missing columns {missing}; it has {list(frame.columns)}")
    # Documented columns first, then extra ones, then the sweep (the order gradlab has always given).
    order = [name for name in spec if name != "sweep"] + [name for name in frame.columns if name not in spec]
    frame = frame[order + ["sweep"] if "sweep" in spec else order]
    for name, dtype in spec.items():
        if kind != "summary" and name in CATEGORICAL_COLUMNS:
            values = frame[name] if isinstance(frame[name].dtype, pd.CategoricalDtype) else frame[name].astype(
                "category")
            categories = sorted(str(value) for value in values.cat.categories)
            frame[name] = values.cat.rename_categories([str(value) for value in values.cat.categories]
                                                       ).cat.reorder_categories(categories)
        elif str(frame[name].dtype) != dtype:
            frame[name] = frame[name].astype(dtype)
    return frame


def _combine(pieces: ColumnPieces, kind: str, columns: Sequence[str] | None) -> pd.DataFrame:
    """One frame of every run's table of ``kind``, built column by column (:mod:`gradlab.analysis.combine`)."""
    if not len(pieces):
        return _conform(_empty(kind), kind, columns)
    return _conform(pieces.frame(), kind, columns)


def _read_summary_file(sweep: str, path: Path, skipped: list[str]) -> pd.DataFrame | None:
    """The sweep's summary.parquet, or None (with a warning) when it cannot be read."""
    summary_file = path / schema.SWEEP_FILES["summary"]
    if not summary_file.is_file():
        return None
    try:
        return _conform(pd.read_parquet(summary_file).assign(sweep=sweep), "summary")
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


def _skipped_run(run_dir: Path, error: ValueError) -> str:
    """The warning for a run left out: which run, and the damaged file's path once."""
    message = str(error)
    # The message names the damaged file by a path that holds the run folder's: the run's name says which run.
    return f"skipped run {run_dir.name if str(run_dir) in message else run_dir}: {message}"


def _read_run(sweep: str, run_dir: Path, tables: Sequence[str], columns: Mapping[str, Sequence[str]], *,
              listed: bool = False) -> dict[str, object]:
    """The ``tables`` of one run folder, its metrics.json row as ``metrics`` and its settings as ``config``.

    A run ``listed`` in its sweep's summary.parquet has its row there: its metrics.json is read (a damaged one
    leaves the run out) but not made into a row (5 ms a run).

    Raises:
        ValueError: naming the file that could not be read, and why.
    """
    folder = RunFolder(run_dir)
    run: dict[str, object] = {}
    try:
        config = folder.raw_config() if folder.has("config") else {}
        for kind in tables:
            if kind != "summary" and folder.has(kind):
                run[kind] = _read_parquet(folder.file(kind), kind, sweep, _with_keys(columns.get(kind)))
        if folder.has("metrics"):
            metrics = folder.metrics()  # a RunFolderError names the file itself
            if not listed:
                try:
                    run["metrics"] = _conform(pd.DataFrame([metrics]).assign(sweep=sweep), "summary")
                except ValueError as error:
                    raise ValueError(f"{folder.file('metrics')}: {error}") from None
    except RunFolderError as error:
        raise ValueError(str(error).split(";")[0]) from None
    settings = {key: value for key, value in config.items() if key not in ("sweep", "run_id")}
    run["config"] = {**(pd.json_normalize(settings).iloc[0].to_dict() if settings else {}),
                     "sweep": sweep, "run_id": run_dir.name}
    return run


def _with_keys(columns: Sequence[str] | None) -> list[str] | None:
    """``columns`` plus the run keys every table keeps (None: every column)."""
    if columns is None:
        return None
    return [*_KEYS, *(name for name in columns if name not in _KEYS)]


def _older_layout(run_dir: Path) -> int | None:
    """The layout of a run folder written by an older gradlab, or None (current, or unreadable config)."""
    try:
        layout = RunFolder(run_dir).layout
    except (RunFolderError, OSError):
        return None
    return layout if layout < LAYOUT else None


def _check_tables(tables: str | Iterable[str], columns: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    if isinstance(tables, str):
        tables = ALL_TABLES if tables == "all" else (tables,)
    tables = tuple(tables)
    unknown = [kind for kind in (*tables, *columns) if kind not in ALL_TABLES]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; tables= takes \"all\" or names from {list(ALL_TABLES)}")
    not_asked = [kind for kind in columns if kind not in tables]
    if not_asked:
        raise ValueError(f"columns= names tables {not_asked} that tables= does not load; add them to tables=")
    return tables


def load_runs(paths: str | Path | Iterable[str | Path], tables: str | Iterable[str] = DEFAULT_TABLES, *,
              columns: Mapping[str, Sequence[str]] | None = None) -> RunData:
    """Load tables of one or several runs directories.

    Only the tables named in ``tables`` are read (by default the summary and the
    gradient norms); reading another one from the result raises
    :class:`~gradlab.analysis.rundata.TableNotLoadedError` naming ``tables=``.
    Every run's settings (its config.json) are read too, for :meth:`RunData.with_config`.

    A run with a file that cannot be read (a truncated or empty Parquet file,
    a broken metrics.json) is left out with a :class:`DamagedRunWarning`
    naming the file; the messages are kept in :attr:`RunData.skipped`.

    Args:
        paths: a sweep folder, a folder of sweeps, or several of either.
        tables: the tables to read: names from :data:`ALL_TABLES`, or ``"all"``.
        columns: per table, the only columns to read (the run keys and ``sweep`` are always kept);
            a table not named here is read whole, extra columns included.

    Returns:
        A :class:`RunData` whose frames follow :mod:`gradlab.store.schema` plus a
        ``sweep`` column, with the :data:`CATEGORICAL_COLUMNS` of the per-run tables
        as categoricals. A table no run wrote is an empty frame.

    Raises:
        RunsDirError: if a path does not exist or no readable run is found.
        ValueError: ``tables`` or ``columns`` names an unknown table.
    """
    columns = dict(columns or {})
    tables = _check_tables(tables, columns)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sweep_paths = [sweep for path in paths for sweep in find_sweeps(path)]
    sweeps = _sweep_names(sweep_paths)
    read: dict[str, list] = {"summary": [], "config": []}
    pieces = {kind: ColumnPieces(CATEGORICAL_COLUMNS) for kind in RUN_TABLES}
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
                run = _read_run(sweep, run_dir, tables, columns, listed=run_dir.name in listed)
            except ValueError as error:
                _warn(skipped, _skipped_run(run_dir, error))
                damaged.add(run_dir.name)
                continue
            metrics = run.pop("metrics", None)
            if metrics is not None and run_dir.name not in listed:
                unlisted.append(metrics)
            read["config"].append(run.pop("config"))
            for kind, table in run.items():
                pieces[kind].add(table)
        if older:
            warnings.warn(f"{len(older)} runs of {path} (e.g. {older[0]}) were written by an older gradlab "
                          f"(run-folder layout {_older_layout(path / older[0])}, before {LAYOUT}): read as they are, "
                          "without the tables that layout lacked (predictions); re-run them for those",
                          OlderLayoutWarning, stacklevel=2)
        if summary is not None:
            read["summary"].append(summary[~summary["run_id"].isin(damaged)])
        read["summary"] += unlisted
    frames = {kind: _combine(pieces.pop(kind), kind, _with_keys(columns.get(kind)))
              for kind in RUN_TABLES if kind in tables}
    if "summary" in tables or not frames:
        summary = [frame for frame in read["summary"] if len(frame)]
        # Runs may carry different extra columns: conform again after combining.
        frames["summary"] = (_conform(pd.concat(summary, ignore_index=True), "summary") if summary
                             else _empty("summary"))
    frames = {kind: frames.get(kind) for kind in ALL_TABLES}
    config = pd.DataFrame(read["config"], columns=None if read["config"] else ["sweep", "run_id"])
    data = RunData(**frames, sweeps=sweeps, skipped=tuple(skipped), config=config)
    if data.runs().empty:
        where = ", ".join(repr(str(path)) for path in sweeps.values())
        reason = f" ({len(skipped)} damaged: {'; '.join(skipped)})" if skipped else ""
        raise RunsDirError(f"no readable runs found in {where}{reason}; {_LAYOUT_HINT}")
    return data
