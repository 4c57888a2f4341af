"""Running a sweep: check everything, load the data, take the folder, train what has not ended, summarise.

:func:`run_sweep` checks every run and loads every dataset *before* it
creates the folder (bad input never leaves a half-written sweep), holds the
sweep folder's lock for the whole sweep, hands each run that has not ended to
an executor, rewrites ``summary.parquet`` as runs end, and finally draws the
analysis figures into ``<sweep>/figures/``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab.config import CHECKPOINT_EVERY, DataConfig, RunConfig, check_checkpoint_every
from gradlab.sweep.execute import FAILED, EnsembleTask, Executor, LocalExecutor, RunTask, Task, ensemble_min_members
from gradlab.sweep.folder import check_sweep_dir, clean_leftovers, finished_run, open_sweep_dir, write_summary
from gradlab.training.ensemble.grouping import DEFAULT_MAX_MEMBERS, group_runs
from gradlab.training.progress import ProgressBar

#: Seconds between rewrites of summary.parquet while a sweep trains (and once at its end). Each rewrite reads every
#: ended run's metrics, so rewriting after every run made a sweep of a thousand runs spend minutes of the driver's
#: time on it; analysis reads the runs a stale summary does not list from their metrics.json.
SUMMARY_EVERY = 30.0


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its folder, its summary (one row per ended run), and the runs that failed."""

    sweep_dir: Path
    summary: pd.DataFrame
    failed: dict[str, str]


class SweepFailed(RuntimeError):
    """Some runs raised; the others are safe on disk and ``--resume`` retrains only the failed ones."""


def check_devices(runs: Sequence[RunConfig]) -> None:
    """Raise ``ValueError`` if a run asks for a device this machine lacks (for runs executed here)."""
    from gradlab.training.seeding import resolve_device

    for device in sorted({run.train.device for run in runs}):
        resolve_device(device)


def load_datasets(runs: Sequence[RunConfig], *, progress: bool) -> dict[DataConfig, Any]:
    """Every distinct dataset of ``runs``, loaded (and checked) once."""
    from gradlab.data.from_config import load_checked

    datasets: dict[DataConfig, Any] = {}
    for run in runs:
        if run.data not in datasets:
            datasets[run.data] = load_checked(run.data, progress=progress)
    return datasets


def run_sweep(
    runs: Sequence[RunConfig],
    sweep_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    workers: int = 1,
    threads: int = 1,
    ensemble: str = "auto",
    max_members: int = DEFAULT_MAX_MEMBERS,
    min_members: int | None = None,
    executor: Executor | None = None,
    datasets: Mapping[DataConfig, Any] | None = None,
    command: Sequence[str] | None = None,
    figures: bool = True,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    stream: Any = None,
    tensorboard: str | os.PathLike | None = None,
    checkpoint_every: float = CHECKPOINT_EVERY,
) -> SweepResult:
    """Train every run of ``runs`` into ``sweep_dir``.

    Runs that already ended there are skipped (with ``resume``), an
    interrupted run continues from its last epoch checkpoint, a diverged run is
    recorded and the sweep goes on, and a run that raises is reported by name
    while the others go on (then :class:`SweepFailed` is raised at the end).

    Args:
        runs: the runs (see :func:`gradlab.sweep.plan.plan_runs`); run ids must be unique.
        sweep_dir: the sweep's folder.
        resume: continue a sweep folder that exists.
        overwrite: delete an existing sweep folder first.
        workers: runs in parallel on this machine (with the default executor).
        threads: torch threads per run (per ensemble).
        ensemble: ``auto``: runs that differ only in seed, learning rate, clipping or init
            train together as one batched ensemble, each still writing its own
            folder (:mod:`gradlab.training.ensemble.grouping`); ``off``: every run alone.
        max_members: most runs in one ensemble (fewer where the executor's jobs must fit a cluster's
            cap on job time: :func:`fitting_members`).
        min_members: fewest runs in one ensemble (smaller groups train one run at a time); None: as
            :func:`gradlab.sweep.execute.ensemble_min_members` decides for the executor's device.
        executor: where runs execute (default: :class:`LocalExecutor` with ``workers``).
        datasets: datasets already loaded, by DataConfig (the rest are loaded here).
        command: the command line, stored in ``sweep.json`` and each ``config.json``.
        figures: draw the analysis figures into ``<sweep>/figures/`` at the end.
        progress: progress bars for the sweep and (in-process) each run.
        extra: more entries for ``sweep.json``.
        stream: where notes (and progress) are printed (default standard error). On a terminal the
            progress is a bar; elsewhere one line per ended task.
        checkpoint_every: seconds of training between a run's epoch checkpoints (0: every epoch); a
            killed run resumes from its last one, losing at most about that much training.
        tensorboard: log every run to TensorBoard, into ``<tensorboard>/<sweep folder name>/<run_id>``
            (:class:`gradlab.training.loggers.TensorBoardLogger`; needs ``pip install 'gradlab[tensorboard]'``).

    Raises:
        ValueError, FileExistsError, FileNotFoundError: bad input, before any folder is written.
        SweepFailed: some runs raised (each named with its error).
        SweepLockLost: another process took the sweep's lock over (this one was
            stopped or cut off for longer than its stale limit); nothing more was written.
    """
    from gradlab.store.atomic import checked_writes, clean_orphaned_temporaries
    from gradlab.store.locking import SweepLock, SweepLockLost
    from gradlab.sweep.executors.common import check_no_live_jobs

    stream = stream or sys.stderr
    for name, value in (("workers", workers), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    check_checkpoint_every(checkpoint_every)
    if not runs:
        raise ValueError("the sweep has no runs")
    if tensorboard is not None:
        from gradlab.training.loggers import require_tensorboard

        try:
            require_tensorboard()
        except ModuleNotFoundError as error:
            raise ValueError(str(error)) from None
    if min_members is None:
        min_members = ensemble_min_members(runs, executor)
    group_runs(runs, ensemble=ensemble, max_members=max_members, min_members=min_members)  # checked before writing
    max_members = fitting_members(executor, max_members, stream=stream)
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise ValueError("run ids repeat")
    sweep_dir = Path(sweep_dir)
    check_sweep_dir(sweep_dir, runs, resume=resume, overwrite=overwrite)
    if executor is None:
        check_devices(runs)
    datasets = {**(datasets or {}), **load_datasets([run for run in runs if run.data not in (datasets or {})],
                                                    progress=progress)}
    executor = executor or LocalExecutor(workers, datasets=datasets, progress=progress)
    with SweepLock(sweep_dir) as lock, checked_writes(lambda path: lock.verify()):
        check_sweep_dir(sweep_dir, runs, resume=resume, overwrite=overwrite)  # again, now that it is ours
        check_no_live_jobs(sweep_dir)  # cluster jobs an earlier, detached command left running
        for leftover in clean_leftovers(sweep_dir):
            print(f"removed {leftover}, which a killed --overwrite of {sweep_dir} left half deleted", file=stream)
        if resume and sweep_dir.is_dir():
            removed = clean_orphaned_temporaries(sweep_dir)  # a killed sweep's half-written files
            if removed:
                print(f"removed {len(removed)} temporary files a killed sweep left in {sweep_dir}", file=stream)
        open_sweep_dir(sweep_dir, runs, overwrite=overwrite, command=command,
                       extra={**(extra or {}), "skipped_files": _skipped_files(datasets)})
        pending = [run for run in runs if not finished_run(sweep_dir / run.run_id, run)]
        if len(pending) < len(runs):
            print(f"{len(runs) - len(pending)} of {len(runs)} runs already ended in {sweep_dir}; skipping them",
                  file=stream)
        failed: dict[str, str] = {}
        bar = ProgressBar(total=len(runs), initial=len(runs) - len(pending), desc="sweep", unit="run", leave=True,
                          stream=stream, enabled=progress)
        ended = len(runs) - len(pending)
        summarised = time.monotonic()

        def report(task: Task, results: list[dict[str, Any]] | None, error: BaseException | None) -> None:
            nonlocal ended, summarised
            if isinstance(error, SweepLockLost):
                raise error  # another process owns the sweep now: nothing more is written
            if error is not None:
                failed.update(dict.fromkeys(task.run_ids, f"{type(error).__name__}: {error}"))
                runs_named = "run" if len(task.run_ids) == 1 else f"ensemble of {len(task.run_ids)} runs"
                print(f"{runs_named} {', '.join(task.run_ids)} failed: {type(error).__name__}: {error}", file=stream)
            else:
                for run_id, metrics in zip(task.run_ids, results):
                    if metrics["status"] == FAILED:  # alone: the ensemble's other runs ended
                        failed[run_id] = metrics["error"]
                        print(f"run {run_id} failed: {metrics['error']}", file=stream)
                    elif metrics["status"] != "finished":
                        print(f"run {run_id} {metrics['status']} at step {metrics['diverged_step']}", file=stream)
            if time.monotonic() - summarised >= SUMMARY_EVERY:
                write_summary(sweep_dir, warn=lambda note: print(note, file=stream))
                summarised = time.monotonic()
            bar.update(len(task.run_ids))
            ended += len(task.run_ids)
            if failed:
                bar.postfix({"failed": len(failed)})
            bar.line(f"{ended}/{len(runs)} runs ended ({', '.join(task.run_ids)})"
                     + (f", {len(failed)} failed" if failed else ""))

        command_list = list(command) if command is not None else None

        # Absolute: a worker's working folder may differ.
        logs = Path(tensorboard).absolute() / sweep_dir.name if tensorboard is not None else None

        def as_task(run: RunConfig) -> RunTask:
            return RunTask(run.run_id, run.to_dict(), str(sweep_dir / run.run_id), command_list, threads,
                           lock=(str(lock.path), lock.token),
                           tensorboard=str(logs / run.run_id) if logs is not None else None,
                           checkpoint_every=checkpoint_every)

        units = group_runs(pending, ensemble=ensemble, workers=getattr(executor, "workers", workers),
                           max_members=max_members, min_members=min_members)
        tasks: list[Task] = [as_task(unit[0]) if len(unit) == 1 else EnsembleTask(tuple(map(as_task, unit)))
                             for unit in units]
        lost = raising = False
        if figures and getattr(executor, "workers", 2) > 1:  # the runs train elsewhere: this process waits
            _import_quietly_meanwhile("gradlab.analysis.commands")
        try:
            executor.run(tasks, report)
        except SweepLockLost:
            lost = True  # the summary belongs to the process that took the sweep over
            raise
        except BaseException:
            raising = True
            raise
        finally:
            bar.close()
            if not lost:
                summary = _final_summary(sweep_dir, stream=stream, only_print=raising or bool(failed))
    if figures and summary is not None and not summary.empty:
        draw_figures(sweep_dir, stream=stream)
    if failed:
        which = "; ".join(f"{run_id}: {message}" for run_id, message in failed.items())
        raise SweepFailed(f"{len(failed)} of {len(runs)} runs failed ({which}); "
                          f"the others are saved in {sweep_dir}, and --resume retrains only the failed ones")
    return SweepResult(sweep_dir=sweep_dir, summary=summary, failed=failed)


def _import_quietly_meanwhile(module: str) -> None:
    """Import ``module`` in a daemon thread, while this process waits for its workers.

    The figures drawn after the sweep import gradlab.analysis (scipy.stats, matplotlib: about 1.8 s), which
    otherwise ran after the last run ended. A failure here is ignored: drawing imports it again and reports it.
    """

    def load() -> None:
        with contextlib.suppress(Exception):
            importlib.import_module(module)

    threading.Thread(target=load, name=f"import {module}", daemon=True).start()


def _final_summary(sweep_dir: Path, *, stream: Any, only_print: bool) -> pd.DataFrame | None:
    """``summary.parquet`` written a last time; returns it.

    With ``only_print`` (runs failed, or the sweep stopped with an error), a failure to write it is printed
    and None returned: the error to raise is the runs', which a full disk's summary error would hide.
    """
    from gradlab.store.locking import SweepLockLost

    try:
        return write_summary(sweep_dir, warn=lambda note: print(note, file=stream))
    except SweepLockLost:
        raise  # another process owns the sweep: that stops it whatever else failed
    except Exception as error:  # noqa: BLE001 - printed, then the runs' failure is raised
        if not only_print:
            raise
        print(f"the sweep's summary was not written ({type(error).__name__}: {error}); the runs that ended are "
              "saved, analysis reads their metrics.json, and --resume writes it again", file=stream)
        return None


def fitting_members(executor: Executor | None, max_members: int, *, stream: Any = None) -> int:
    """``max_members``, lowered (with a note) until an ensemble's job fits the cluster's cap on job time.

    Raises:
        ValueError: not even one run fits (from the executor's ``members_that_fit``).
    """
    fit = getattr(executor, "members_that_fit", None)
    if fit is None:
        return max_members
    fitted = fit(max_members)
    if fitted < max_members:
        print(f"ensembles of at most {fitted} runs, so that each job fits the partition's time limit "
              "(--plan lists each job's limit)", file=stream or sys.stderr)
    return fitted


def _skipped_files(datasets: Mapping[DataConfig, Any]) -> dict[str, Any]:
    """Files each dataset's loader skipped, by dataset label (recorded in sweep.json)."""
    skipped = {}
    for data, splits in datasets.items():
        if getattr(splits, "skipped", None):
            label = data.dataset if data.is_audio else f"{data.dataset} (T={data.seq_len})"
            skipped[label] = {reason: list(names) for reason, names in splits.skipped.items()}
    return skipped


def draw_figures(sweep_dir: str | os.PathLike, *, stream: Any = None) -> list[Path]:
    """The analysis figures and findings report of a sweep, in ``<sweep>/figures/`` (PNG).

    A failure here is reported, not raised: the runs are already safe on disk,
    and ``python -m gradlab figures <sweep>`` redraws them.
    """
    import io

    from gradlab.analysis.commands import figures

    stream = stream or sys.stderr
    log = io.StringIO()
    try:
        # The sweep's own folder: a renamed sweep redraws its report; one sweep's configurations are few,
        # so each gets its own figures too.
        written = figures(sweep_dir, Path(sweep_dir) / "figures", formats=("png",), n_resamples=1000, stream=log,
                          overwrite=True, every_configuration=True)
    except Exception as error:  # noqa: BLE001 - drawing must not lose a finished sweep
        print(f"figures failed ({type(error).__name__}: {error}); redraw with: python -m gradlab figures {sweep_dir}",
              file=stream)
        return []
    print(f"wrote {len(written)} figure files and the findings report to {Path(sweep_dir) / 'figures'}", file=stream)
    return written
