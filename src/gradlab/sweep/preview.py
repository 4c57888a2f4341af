"""A sweep's plan, checked and shown without writing anything (``--plan``).

:func:`plan_text` lists the runs a command would train and how they would
execute; :func:`plan_notes` says where each dataset is (without reading,
downloading or caching it) and, for a sweep folder that exists, which runs
ended and which ``--resume`` would run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradlab.config import CONFIG_PARTS, RunConfig
from gradlab.store import schema
from gradlab.sweep.execute import ensemble_min_members
from gradlab.sweep.folder import check_sweep_dir, finished_run
from gradlab.sweep.plan import varying_options
from gradlab.training.ensemble.grouping import DEFAULT_MAX_MEMBERS, group_runs


def plan_notes(runs: Sequence[RunConfig], sweep_dir: Path, *, resume: bool, overwrite: bool) -> list[str]:
    """Check ``runs`` against their data and ``sweep_dir`` as running them would, writing nothing.

    A folder that exists is checked as ``--resume`` would check it (unless ``overwrite``), so a plan previews a
    resume: the notes list its ended runs, the interrupted ones (resumed from their checkpoint) and the new ones.

    Raises:
        ValueError, RunFolderError, FileNotFoundError: what running the sweep would refuse, naming the fix.
    """
    from gradlab.data.from_config import locate_data

    exists = sweep_dir.is_dir() and any(sweep_dir.iterdir())
    check_sweep_dir(sweep_dir, runs, resume=resume or (exists and not overwrite), overwrite=overwrite)
    notes = [f"data: {locate_data(data)}" for data in dict.fromkeys(run.data for run in runs)]
    if not exists:
        return notes + [f"{sweep_dir} does not exist yet: every run would train"]
    if overwrite:
        return notes + [f"{sweep_dir} exists: --overwrite would replace it and train every run"]
    ended = [run.run_id for run in runs if finished_run(sweep_dir / run.run_id, run)]
    interrupted = [run.run_id for run in runs if run.run_id not in ended
                   and (sweep_dir / run.run_id / schema.RUN_FILES["checkpoint"]).is_file()]
    new = [run.run_id for run in runs if run.run_id not in ended and run.run_id not in interrupted]
    notes.append(f"{sweep_dir} exists: {len(ended)} of {len(runs)} runs ended; --resume would run "
                 f"{len(interrupted) + len(new)}" + ("" if resume else " (give --resume to continue it, "
                                                   "--overwrite to replace it, or --name for a new folder)"))
    for label, ids in (("ended", ended), ("resumes from its checkpoint", interrupted), ("would train", new)):
        notes += [f"  {run_id}: {label}" for run_id in ids]
    return notes


def plan_text(runs: Sequence[RunConfig], sweep_dir: Path, *, workers: int, executor: Any = None,
              ensemble: str = "auto", max_members: int = DEFAULT_MAX_MEMBERS, notes: Sequence[str] = (),
              min_members: int | None = None) -> str:
    """The expanded grid as text: one line per run with the options that vary, how the runs execute, ``notes``.

    ``min_members`` as :func:`gradlab.sweep.runner.run_sweep` takes it (None: decided for the executor's device).
    """
    varying = varying_options(runs)
    how = ("in this process" if workers == 1 else f"by {workers} local worker processes") if executor is None \
        else getattr(executor, "description", executor.name)
    if min_members is None:
        min_members = ensemble_min_members(runs, executor)
    units = group_runs(runs, ensemble=ensemble, workers=workers if executor is None else 1, max_members=max_members,
                       min_members=min_members)
    sizes = sorted((len(unit) for unit in units if len(unit) > 1), reverse=True)
    singles = sum(len(unit) == 1 for unit in units)
    grouped = f"{len(sizes)} ensembles (of {', '.join(map(str, sizes))} runs) and {singles} single runs" if sizes \
        else "one run per task"
    lines = [f"sweep {sweep_dir}: {len(runs)} runs, executed {how}, {grouped}",
             f"options that vary: {', '.join(varying) or 'none'} (and train.seed)"]
    for run in runs:
        flat = {f"{part}.{key}": value for part in CONFIG_PARTS for key, value in run.to_dict()[part].items()}
        shown = [f"{key.split('.', 1)[1]}={flat[key]}" for key in varying] + [f"seed={run.train.seed}"]
        lines.append(f"  {run.run_id}: " + ", ".join(shown))
    job_time_limit = getattr(executor, "job_time_limit", None)
    if job_time_limit is not None:  # a cluster job holds a whole ensemble: say what each holds and may take
        lines.append(f"{len(units)} jobs (time limit: --time-limit for each of their runs):")
        for number, unit in enumerate(units, 1):
            runs_text = "1 run" if len(unit) == 1 else f"{len(unit)} runs"
            lines.append(f"  job {number}: {runs_text}, time limit {job_time_limit(len(unit))} min: "
                         + ", ".join(run.run_id for run in unit))
    lines += notes
    lines.append("every run checked; nothing written")
    return "\n".join(lines)

