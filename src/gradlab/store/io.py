"""Reading and writing gradlab's files, without torch: JSON, Parquet tables and run folders.

A run folder (:data:`gradlab.store.schema.RUN_FILES`) holds ``config.json`` (the
run's :class:`gradlab.config.RunConfig`, the command line, and the gradlab
version, git commit and folder layout that wrote it), one Parquet file per
table of :data:`RUN_TABLES`, ``metrics.json`` (its summary row, written when
the run ends) and ``checkpoint.pt``. :class:`RunFolder` reads one; training,
sweeps and analysis all go through it, so a damaged or outdated file gives the
same clear message everywhere.

Every write is atomic (:func:`gradlab.store.atomic.write_atomic`): a reader sees the
old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab import __version__
from gradlab.config import RunConfig
from gradlab.store import schema
from gradlab.store.atomic import write_atomic

#: Tables a run writes beside its metrics.
RUN_TABLES: tuple[str, ...] = ("history", "gradients", "gates", "jacobian", "predictions", "lyapunov",
                               "parameter_gradients")
#: Version of the run-folder layout this gradlab writes; config.json records it.
LAYOUT = 2
#: Statuses of a run, as in :data:`gradlab.store.schema.SUMMARY`.
FINISHED, DIVERGED, RUNNING = "finished", "diverged", "running"
#: config.json entries that describe how a run was made, not what it is.
PROVENANCE_KEYS: tuple[str, ...] = ("command", "gradlab_version", "git_commit", "layout")


class RunFolderError(ValueError):
    """A run or sweep folder's file is damaged, missing or written by another layout; says which and what to do."""


def _json_default(value: object) -> object:
    # numpy scalars and paths arrive from pandas and pathlib; numpy is imported by pandas anyway
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if value is pd.NA:
        return None
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str | os.PathLike, payload: object) -> Path:
    """Write ``payload`` as indented JSON, atomically (NaN is written as ``NaN``, which Python's json reads)."""
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    return write_atomic(path, lambda temporary: temporary.write_text(text))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file.

    Raises:
        RunFolderError: the file is not valid JSON (naming it, and what to do).
        FileNotFoundError: it does not exist.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(
            f"{path} is damaged ({error}); delete it (a run without metrics.json is trained again on --resume), "
            "or start the sweep again with --overwrite"
        ) from None


def read_json_object(path: str | os.PathLike, fix: str) -> dict[str, Any]:
    """Read a JSON file that must hold an object (a dict), as every gradlab JSON file does.

    Args:
        path: the file.
        fix: what the reader should do about a damaged file, for the message.

    Raises:
        RunFolderError: the file is not valid JSON, or holds another value (``null``, a list), naming it and ``fix``.
        FileNotFoundError: it does not exist.
    """
    values = read_json(path)
    if not isinstance(values, dict):
        raise RunFolderError(f"{path} is damaged: it holds {_json_kind(values)}, not a JSON object; {fix}")
    return values


def _json_kind(value: object) -> str:
    """How a JSON value reads in a message: ``null``, ``a list``, ``a string``."""
    if value is None:
        return "null"
    names = {bool: "a boolean", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


# What a metrics.json value of each SUMMARY dtype may be (None and NaN stand for a missing value).
_METRIC_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "boolean": (bool,), "int64": (int,), "Int64": (int,), "float64": (int, float),
}


def check_metrics(values: object, path: str | os.PathLike) -> dict[str, Any]:
    """``values`` if it is a run's summary row: an object whose status says the run ended and whose values fit SUMMARY.

    Raises:
        RunFolderError: naming ``path``, the first value that does not fit, and what to do.
    """
    fix = "delete it, and --resume trains that run again"
    if not isinstance(values, dict):
        raise RunFolderError(f"{path} is damaged: it holds {_json_kind(values)}, not a JSON object; {fix}")
    if values.get("status") not in (FINISHED, DIVERGED):
        raise RunFolderError(f"{path} is damaged: its status is {values.get('status')!r}, not "
                             f"{FINISHED!r} or {DIVERGED!r}; {fix}")
    for name, dtype in schema.SUMMARY.items():
        value = values.get(name)
        allowed = _METRIC_TYPES.get(dtype)
        if value is None or allowed is None or isinstance(value, float) and math.isnan(value):
            continue  # a missing value (pandas writes NaN for a missing integer too)
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            kind = "a boolean" if dtype == "boolean" else "text" if dtype == "string" else \
                "an integer" if int in allowed and float not in allowed else "a number"
            raise RunFolderError(f"{path} is damaged: {name} is {value!r}, which is not {kind}; {fix}")
    return values


def read_sweep_record(path: str | os.PathLike, *, require_runs: bool = True) -> dict[str, Any]:
    """A sweep's ``sweep.json``, checked for shape: an object whose ``runs`` lists run configs with a run_id each.

    Args:
        path: the file.
        require_runs: whether a record without ``runs`` is damaged (resuming needs the list; analysis does not).

    Raises:
        RunFolderError: naming the file, what is wrong, and what to do.
    """
    fix = "it lists the sweep's runs, so the sweep cannot be continued: start it again with --overwrite or a new --name"
    record = read_json_object(path, fix)
    runs = record.get("runs", None if require_runs else [])
    if not isinstance(runs, list):
        raise RunFolderError(f"{path} is damaged: its \"runs\" entry is {runs!r}, not a list of runs; {fix}")
    for index, run in enumerate(runs):
        if not isinstance(run, dict) or not isinstance(run.get("run_id"), str):
            raise RunFolderError(f"{path} is damaged: run {index} of its \"runs\" is not a run config with a "
                                 f"run_id; {fix}")
    if not isinstance(record.get("grid"), (dict, list, type(None))) or not isinstance(record.get("select_by"),
                                                                                      (str, type(None))):
        raise RunFolderError(f"{path} is damaged: its \"grid\" or \"select_by\" entry is not what gradlab writes; {fix}")
    return record


def write_table(frame: pd.DataFrame, path: str | os.PathLike, *, kind: str | None = None) -> Path:
    """Write ``frame`` as Parquet, atomically; conformed to table ``kind``'s schema when given."""
    if kind is not None:
        frame = schema.conform(frame, kind)
    return write_atomic(path, lambda temporary: frame.to_parquet(temporary, engine="pyarrow", compression="zstd", index=False))


def read_table(path: str | os.PathLike, kind: str) -> pd.DataFrame:
    """Read a Parquet table, conformed to ``kind``'s schema.

    Raises:
        RunFolderError: the file is not a readable Parquet table of that kind (naming it).
    """
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise RunFolderError(f"{path} is damaged ({type(error).__name__}: {error}); delete its run folder "
                             "and resume the sweep to train that run again") from None
    try:
        return schema.conform(frame, kind)
    except (ValueError, TypeError) as error:
        raise RunFolderError(f"{path} is not a {kind} table: {error}") from None


def config_differences(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two config dicts, with both values."""
    differences = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, f"{prefix}{key}.")
        elif (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            differences.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return differences


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the gradlab checkout this code runs from, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def provenance(command: list[str] | None) -> dict[str, Any]:
    """What config.json records about how a run was made."""
    return {"command": command, "gradlab_version": __version__, "git_commit": git_commit(), "layout": LAYOUT}


# What to do about a damaged config.json: the run's other files cannot be trusted without it.
_CONFIG_FIX = "delete that run folder, and --resume trains the run again"


class RunFolder:
    """One run's folder: its config, metrics, tables and status, read lazily.

    Args:
        path: the folder (``<sweep>/<run_id>``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, kind: str) -> Path:
        """The path of file ``kind`` of :data:`gradlab.store.schema.RUN_FILES`."""
        return self.path / schema.RUN_FILES[kind]

    def has(self, kind: str) -> bool:
        return self.file(kind).is_file()

    def raw_config(self) -> dict[str, Any]:
        """config.json as written: the run's config plus :data:`PROVENANCE_KEYS`.

        Raises:
            RunFolderError: the file is not a JSON object, or its layout is not an integer (naming it).
        """
        path = self.file("config")
        values = read_json_object(path, _CONFIG_FIX)
        layout = values.get("layout", 1)
        if isinstance(layout, bool) or not isinstance(layout, int):
            raise RunFolderError(f"{path} is damaged: its layout is {layout!r}, not an integer; {_CONFIG_FIX}")
        return values

    @property
    def layout(self) -> int:
        """The layout version that wrote this folder (1: before layouts were recorded)."""
        return self.raw_config().get("layout", 1) if self.has("config") else LAYOUT

    def check_layout(self, what: str) -> None:
        """Raise :class:`RunFolderError` if the folder was written by another layout than this gradlab's.

        Args:
            what: what the caller was about to do (``resume``), for the message.
        """
        layout = self.layout
        if layout != LAYOUT:
            raise RunFolderError(
                f"cannot {what} {self.path}: it was written by gradlab with run-folder layout {layout}, and this "
                f"gradlab ({__version__}) writes layout {LAYOUT}; finish it with the gradlab that wrote it, or train "
                "it again (--overwrite, or a new --name)"
            )

    def config(self) -> RunConfig:
        """The run's :class:`RunConfig`."""
        values = {key: value for key, value in self.raw_config().items() if key not in PROVENANCE_KEYS}
        try:
            return RunConfig.from_dict(values)
        except (ValueError, TypeError) as error:
            raise RunFolderError(f"{self.file('config')} does not describe a run this gradlab can read: {error}") from None

    def metrics(self) -> dict[str, Any]:
        """metrics.json: the run's summary row (only once the run has ended).

        Raises:
            RunFolderError: the file is damaged or does not hold a summary row (naming it and the fix).
        """
        return check_metrics(read_json(self.file("metrics")), self.file("metrics"))

    @property
    def status(self) -> str | None:
        """``finished``, ``diverged``, or None for a run that has not ended (or never started)."""
        return self.metrics().get("status") if self.has("metrics") else None

    @property
    def ended(self) -> bool:
        return self.status in (FINISHED, DIVERGED)

    def table(self, kind: str) -> pd.DataFrame:
        """Table ``kind`` of :data:`RUN_TABLES`; empty (with the schema's columns) when the run has none."""
        return read_table(self.file(kind), kind) if self.has(kind) else schema.empty(kind)


def summary_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Summary rows (metrics.json dicts) as a SUMMARY table."""
    return schema.conform(pd.DataFrame(rows), "summary") if rows else schema.empty("summary")
