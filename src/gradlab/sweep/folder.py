"""A sweep's folder on disk: checking it before anything is written, opening it, its summary table.

Layout (:data:`gradlab.store.schema.SWEEP_FILES`, :data:`gradlab.store.schema.RUN_FILES`)::

    <sweep>/sweep.json          the sweep's runs (each RunConfig as a dict), command line and plan
    <sweep>/summary.parquet     one SUMMARY row per ended run
    <sweep>/<run_id>/...        config.json, the run's tables, metrics.json, checkpoint.pt

A sweep folder is never overwritten silently: it is resumed (when it was made
for the same runs), replaced only with ``overwrite``, and otherwise refused,
naming the three choices.

Replacing a sweep first renames its folder aside, atomically, to
``<out>/.<name>.deleting-<random>``, then deletes that copy: a replacement
killed half-way leaves either the whole sweep or a hidden leftover, which the
next sweep of that name removes, never a sweep folder without its
``sweep.json``. A folder that is one anyway (left by an older gradlab, or by
hand) is recognised by its run folders, named, and may be replaced.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab.config import RunConfig
from gradlab.store import schema
from gradlab.store.io import (
    PROVENANCE_KEYS,
    RunFolder,
    RunFolderError,
    provenance,
    read_sweep_record,
    summary_frame,
    write_json,
    write_table,
)
from gradlab.store.runcheck import describe_differences, result_differences


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


def check_sweep_name(name: str) -> str:
    """A sweep name that is one plain folder name inside ``--out``.

    Raises:
        ValueError: an empty name, a path, or a name starting with a dot.
    """
    if not name or not name.strip():
        raise ValueError("the sweep name is empty; give --name a folder name (or leave it out for the default)")
    if any(char in name for char in "/\\") or name.startswith(".") or name != name.strip():
        raise ValueError(f"sweep name {name!r} must be a plain folder name inside --out (no '/', no leading '.')")
    return name


#: Files of a run folder: a folder with such run folders but no sweep.json is a damaged sweep.
_RUN_MARKERS = tuple(schema.RUN_FILES.values())


def half_deleted(sweep_dir: Path) -> list[str]:
    """What marks ``sweep_dir`` as a gradlab sweep folder that lost its ``sweep.json`` (empty if nothing does).

    Its summary, its executor record, or run folders holding any of a run's files.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir() or (sweep_dir / schema.SWEEP_FILES["sweep"]).is_file():
        return []
    marks = [name for name in (schema.SWEEP_FILES["summary"], schema.SWEEP_FILES["executor"])
             if (sweep_dir / name).is_file()]
    runs = sorted(path.name for path in sweep_dir.iterdir()
                  if path.is_dir() and any((path / marker).is_file() for marker in _RUN_MARKERS))
    if runs:
        marks.append(f"run folders {', '.join(runs[:3])}{', ...' if len(runs) > 3 else ''}")
    return marks


def deleting_leftovers(sweep_dir: Path) -> list[Path]:
    """Copies of ``sweep_dir`` that a killed replacement renamed aside and did not finish deleting."""
    sweep_dir = Path(sweep_dir)
    return sorted(path for path in sweep_dir.parent.glob(f".{sweep_dir.name}.deleting-*") if path.is_dir())


def remove_sweep_dir(sweep_dir: Path) -> None:
    """Delete a sweep folder so that a kill at any moment leaves the whole sweep or a hidden leftover.

    The folder is renamed aside (one atomic rename), then the renamed copy is
    deleted; :func:`clean_leftovers` finishes a deletion that was killed. Call
    under the sweep's lock.
    """
    sweep_dir = Path(sweep_dir)
    aside = sweep_dir.parent / f".{sweep_dir.name}.deleting-{uuid.uuid4().hex[:12]}"
    os.rename(sweep_dir, aside)
    shutil.rmtree(aside)


def clean_leftovers(sweep_dir: Path) -> list[Path]:
    """Finish deleting what killed replacements of ``sweep_dir`` left (:func:`deleting_leftovers`); under its lock."""
    leftovers = deleting_leftovers(sweep_dir)
    for path in leftovers:
        shutil.rmtree(path)
    return leftovers


def check_lock_name(sweep_dir: str | os.PathLike) -> None:
    """Raise ``ValueError`` if the lock of ``sweep_dir`` would need a file name too long for its filesystem.

    Called before anything is written: a name that fits the folder but not
    the lock's own files (:func:`gradlab.store.locking.longest_lock_file_name`)
    would train, then leave a lock nothing can remove.
    """
    import socket

    from gradlab.store.locking import longest_lock_file_name

    sweep_dir = Path(sweep_dir).resolve()
    existing = next((path for path in (sweep_dir.parent, *sweep_dir.parent.parents) if path.is_dir()), Path("/"))
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    longest = len(longest_lock_file_name(sweep_dir.name).encode())
    if longest > limit:
        room = len(sweep_dir.name.encode()) - (longest - limit)
        raise ValueError(
            f"sweep name {sweep_dir.name[:40]!r}... ({len(sweep_dir.name)} characters) is too long: the sweep lock "
            f"beside it needs file names of the name plus {longest - len(sweep_dir.name.encode())} characters "
            f"(on host {socket.gethostname()}), and {existing} allows {limit}; give --name at most {max(room, 0)} "
            "characters"
        )


def check_sweep_dir(sweep_dir: Path, runs: Sequence[RunConfig], *, resume: bool, overwrite: bool) -> Path:
    """Check, without writing anything, that ``sweep_dir`` may hold ``runs``.

    Raises:
        ValueError: ``resume`` and ``overwrite`` together, the path is a file,
            a name too long for the sweep lock's files,
            or resuming a sweep made for different runs (naming the settings).
        FileExistsError: the folder exists and neither ``resume`` nor ``overwrite`` was given.
    """
    if resume and overwrite:
        raise ValueError("choose --resume or --overwrite, not both")
    sweep_dir = check_output_path(sweep_dir)
    check_lock_name(sweep_dir)
    record = sweep_dir / schema.SWEEP_FILES["sweep"]
    if not sweep_dir.exists() or not any(sweep_dir.iterdir()):
        return sweep_dir
    damage = half_deleted(sweep_dir)
    if overwrite:
        if not record.is_file() and not damage:
            raise ValueError(f"{sweep_dir} exists but is not a gradlab sweep folder (no {record.name}); not deleting it")
        return sweep_dir
    if not resume:
        raise FileExistsError(
            f"sweep folder {sweep_dir} already exists; pass --resume to continue it, --overwrite to replace it, "
            "or --name for a new folder"
        )
    if damage:
        raise ValueError(f"cannot resume {sweep_dir}: it is a gradlab sweep folder that lost its {record.name} (it "
                         f"holds {'; '.join(damage)}), as a deletion killed half-way leaves it; replace it with "
                         "--overwrite, or use a new --name")
    if not record.is_file():
        raise ValueError(f"cannot resume {sweep_dir}: it has no {record.name}, so it is not a gradlab sweep folder")
    stored = read_sweep_record(record)
    if stored.get("layout", 1) != provenance(None)["layout"]:
        raise RunFolderError(
            f"cannot resume {sweep_dir}: it was written by gradlab with run-folder layout {stored.get('layout', 1)}; "
            "finish it with the gradlab that wrote it, or start again with --overwrite or a new --name"
        )
    planned = {run["run_id"]: run for run in stored["runs"]}
    for run in runs:
        if run.run_id in planned:
            differences = result_differences(_normalised(planned[run.run_id], record), run.to_dict())
            if differences:
                raise ValueError(
                    f"cannot resume {sweep_dir}: run {run.run_id} was made with other settings "
                    f"({describe_differences(differences)}); use --overwrite or a new --name"
                )
    return sweep_dir


def open_sweep_dir(sweep_dir: Path, runs: Sequence[RunConfig], *, overwrite: bool, command: Sequence[str] | None,
                   extra: dict[str, Any] | None = None) -> Path:
    """Create (or reopen, or replace) a checked sweep folder and write its ``sweep.json``.

    Runs that an earlier command listed and this one does not are kept in ``sweep.json``.
    """
    record = sweep_dir / schema.SWEEP_FILES["sweep"]
    if overwrite and (record.is_file() or half_deleted(sweep_dir)):
        remove_sweep_dir(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    payload = {**provenance(list(command) if command is not None else None), **(extra or {}),
               "runs": [run.to_dict() for run in runs]}
    if record.is_file():
        listed = {run["run_id"] for run in payload["runs"]}
        payload["runs"] = [run for run in read_sweep_record(record)["runs"] if run["run_id"] not in listed] \
            + payload["runs"]
    write_json(record, payload)
    return sweep_dir


def finished_run(run_dir: Path, run: RunConfig) -> bool:
    """Whether ``run_dir`` holds ``run`` ended, made with the same result-changing settings.

    Raises:
        RunFolderError: the folder holds an ended run made with other settings (naming them).
    """
    folder = RunFolder(run_dir)
    if not folder.ended:
        return False
    stored = {key: value for key, value in folder.raw_config().items() if key not in PROVENANCE_KEYS}
    differences = result_differences(_normalised(stored, folder.file("config")), run.to_dict())
    if differences:
        raise RunFolderError(f"{run_dir} holds run {run.run_id} made with other settings "
                             f"({describe_differences(differences)}); delete that run folder, "
                             "or use --overwrite or a new --name")
    return True


def _normalised(stored: dict[str, Any], source: Path) -> dict[str, Any]:
    """A stored config dict (read from ``source``) as this gradlab writes it (lists as tuples' lists, options in full)."""
    try:
        return RunConfig.from_dict(stored).to_dict()
    except (ValueError, TypeError) as error:
        fix = "delete that run folder, and --resume trains the run again" if source.name == schema.RUN_FILES["config"] \
            else "start the sweep again with --overwrite or a new --name"
        raise RunFolderError(f"{source} holds a run config this gradlab cannot read ({error}); {fix}") from None


def collect_summary(sweep_dir: Path, *, warn: Any = None) -> pd.DataFrame:
    """The SUMMARY rows of every run folder in ``sweep_dir`` that has ended (damaged ones skipped, with ``warn``)."""
    rows = []
    for run_dir in sorted(path for path in Path(sweep_dir).iterdir() if path.is_dir()):
        folder = RunFolder(run_dir)
        if folder.has("metrics"):
            try:
                rows.append(folder.metrics())
            except RunFolderError as error:
                if warn is not None:
                    warn(f"skipping run {run_dir.name}: {error}")
    return summary_frame(rows)


def write_summary(sweep_dir: Path, *, warn: Any = None) -> pd.DataFrame:
    """Rewrite ``<sweep>/summary.parquet`` from the runs' metrics (atomically); returns it."""
    summary = collect_summary(sweep_dir, warn=warn)
    write_table(summary, Path(sweep_dir) / schema.SWEEP_FILES["summary"])
    return summary
