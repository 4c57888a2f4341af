"""The tables :func:`gradlab.analysis.load.load_runs` returns, and run settings joined onto them.

:class:`RunData` holds one frame per table (``None`` for a table not loaded,
which reading raises :class:`TableNotLoadedError` for) and the runs'
config.json settings, so any table can gain a run's ``lr`` or ``init``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from gradlab.store import schema
from gradlab.store.io import RUN_TABLES

#: Every table :func:`load_runs` can read.
ALL_TABLES: tuple[str, ...] = ("summary", *RUN_TABLES)
#: What :func:`load_runs` reads unless told otherwise: one row per run and the gradient norms,
#: the tables most analyses start from (the gate table alone is often ten times the gradients').
DEFAULT_TABLES: tuple[str, ...] = ("summary", "gradients")
#: String columns of the per-run tables, held as pandas categoricals: each repeats a few values over
#: millions of rows, and a category code takes one or two bytes where a string takes tens.
CATEGORICAL_COLUMNS: tuple[str, ...] = ("sweep", "run_id", "cell", "activation", "direction", "state", "gate",
                                        "stat", "split", "metric")
_KEYS: tuple[str, ...] = ("sweep", "run_id", "cell", "activation", "seed")


class TableNotLoadedError(LookupError):
    """A table of :class:`RunData` was not read; ``load_runs(..., tables=...)`` reads it."""


@dataclass(frozen=True)
class RunData:
    """The tables of one or several sweeps, each with an extra ``sweep`` column.

    A table that :func:`load_runs` was not asked for is not loaded: reading its
    attribute raises :class:`TableNotLoadedError` naming ``tables=`` (rather than
    handing back an empty frame that would look like "no run recorded it").
    The per-run tables hold their :data:`CATEGORICAL_COLUMNS` as categoricals.

    Attributes:
        summary: one row per run (:data:`gradlab.store.schema.SUMMARY`).
        history: training history (:data:`gradlab.store.schema.HISTORY`).
        gradients: per-timestep gradient norms (:data:`gradlab.store.schema.GRADIENTS`).
        gates: gate statistics (:data:`gradlab.store.schema.GATES`).
        jacobian: Jacobian spectral norms (:data:`gradlab.store.schema.JACOBIAN`).
        sweeps: sweep name -> the folder it was read from.
        predictions: per-example predictions (:data:`gradlab.store.schema.PREDICTIONS`).
        lyapunov: Lyapunov exponents recorded during training (:data:`gradlab.store.schema.LYAPUNOV`).
        parameter_gradients: per-unit memory-parameter gradients (:data:`gradlab.store.schema.PARAMETER_GRADIENTS`).
        skipped: one message per run left out because a file of it could not be read.
        config: the run settings of every run (one row per ``sweep``, ``run_id``; one column per
            setting of its config.json, nested settings dotted), read for :meth:`with_config`.
    """

    summary: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    gradients: pd.DataFrame | None = None
    gates: pd.DataFrame | None = None
    jacobian: pd.DataFrame | None = None
    sweeps: dict[str, Path] = field(default_factory=dict)
    predictions: pd.DataFrame | None = field(default_factory=lambda: _empty("predictions"))
    lyapunov: pd.DataFrame | None = field(default_factory=lambda: _empty("lyapunov"))
    parameter_gradients: pd.DataFrame | None = field(default_factory=lambda: _empty("parameter_gradients"))
    skipped: tuple[str, ...] = ()
    config: pd.DataFrame | None = None

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if value is None and name in ALL_TABLES:
            raise TableNotLoadedError(
                f"the {name} table was not loaded; load it with load_runs(..., tables=(..., {name!r})) "
                f"(loaded: {', '.join(self.loaded) or 'none'})")
        return value

    def __repr__(self) -> str:
        rows = ", ".join(f"{kind}={len(object.__getattribute__(self, kind))} rows" for kind in self.loaded)
        return f"RunData({rows}, sweeps={sorted(self.sweeps)}, skipped={len(self.skipped)})"

    @property
    def loaded(self) -> tuple[str, ...]:
        """The tables that were read, in :data:`ALL_TABLES` order."""
        return tuple(kind for kind in ALL_TABLES if object.__getattribute__(self, kind) is not None)

    def replace(self, **changes: object) -> RunData:
        """A copy with ``changes`` (as :func:`dataclasses.replace`, which cannot copy a table not loaded)."""
        values = {item.name: object.__getattribute__(self, item.name) for item in fields(self)}
        return RunData(**{**values, **changes})

    def table(self, kind: str) -> pd.DataFrame:
        """The table of ``kind``: ``summary`` or one of :data:`RUN_TABLES`.

        Raises:
            ValueError: ``kind`` is not a table; TableNotLoadedError: it was not loaded.
        """
        schema.columns(kind)  # raises ValueError naming the allowed kinds
        return getattr(self, kind)

    def runs(self) -> pd.DataFrame:
        """The distinct (sweep, run_id, cell, activation, seed) of every run in any loaded table."""
        # De-duplicate each table before combining: the per-run tables have millions of rows.
        frames = [self.table(kind)[list(_KEYS)].drop_duplicates(["sweep", "run_id"]).astype(_KEY_TYPES)
                  for kind in self.loaded]
        if not frames:
            return _empty("summary")[list(_KEYS)]
        return pd.concat(frames, ignore_index=True).drop_duplicates(["sweep", "run_id"]).reset_index(drop=True)

    def select(self, runs: pd.DataFrame) -> RunData:
        """Keep only the runs listed in ``runs`` (a frame with ``sweep`` and ``run_id``).

        A table whose runs are all kept is shared, not copied.
        """
        wanted = pd.MultiIndex.from_arrays([runs["sweep"].astype(str), runs["run_id"].astype(str)]).unique()

        def keep(frame: pd.DataFrame | None) -> pd.DataFrame | None:
            if frame is None:
                return None
            # One lookup of every row's run (its keys are categoricals: a few categories, cheap to index),
            # rather than one scan of the table per sweep.
            mask = wanted.get_indexer(pd.MultiIndex.from_arrays([frame["sweep"], frame["run_id"]])) >= 0
            return frame if mask.all() else frame[mask].reset_index(drop=True)

        tables = {kind: keep(object.__getattribute__(self, kind)) for kind in (*ALL_TABLES, "config")}
        names = set(wanted.get_level_values(0))
        return RunData(**tables, sweeps={name: path for name, path in self.sweeps.items() if name in names},
                       skipped=self.skipped)

    def split(self, groups: Sequence[tuple[str, pd.DataFrame]]) -> Iterator[tuple[str, RunData]]:
        """``(label, self.select(runs))`` for each ``(label, runs)`` of ``groups``, in order.

        Each table is sorted by group once, so splitting into G groups costs one pass over the
        rows rather than G (a report over thousands of runs has hundreds of configurations).
        Groups that share a run fall back to :meth:`select` one by one.
        """
        groups = list(groups)
        keys = [pd.MultiIndex.from_arrays([runs["sweep"].astype(str), runs["run_id"].astype(str)])
                for _, runs in groups]
        every = keys[0].append(keys[1:]) if keys else pd.MultiIndex.from_arrays([[], []])
        if not every.is_unique:
            yield from ((label, self.select(runs)) for label, runs in groups)
            return
        number = np.repeat(np.arange(len(groups)), [len(key) for key in keys])
        pieces = {kind: _pieces(object.__getattribute__(self, kind), every, number, len(groups))
                  for kind in (*ALL_TABLES, "config")}
        for index, ((label, runs), key) in enumerate(zip(groups, keys)):
            names = set(key.get_level_values(0))
            tables = {kind: None if parts is None else parts[index] for kind, parts in pieces.items()}
            yield label, RunData(**tables, sweeps={name: path for name, path in self.sweeps.items() if name in names},
                                 skipped=self.skipped)

    def with_config(self, kind: str, *settings: str) -> pd.DataFrame:
        """Table ``kind`` with run settings joined on by (``sweep``, ``run_id``).

        ``data.with_config("gradients", "lr", "init")`` adds each run's ``lr`` and ``init`` to every
        gradient row. A setting is any key of the runs' config.json (``lr``, ``init``,
        ``clip_grad_norm``, ``test_speaker`` ...; nested ones dotted, as ``train.lr``, or by their last
        part where that is unambiguous); a run without it gets a missing value.

        Raises:
            ValueError: naming a setting no run has, and the settings there are.
        """
        frame = self.table(kind)
        if not settings:
            return frame
        config = object.__getattribute__(self, "config")
        if config is None:
            raise ValueError("these runs carry no settings (RunData built by hand); load_runs reads them")
        columns = {setting: _config_column(config, setting) for setting in settings}
        clash = [setting for setting in settings if setting in frame.columns]
        if clash:
            raise ValueError(f"{kind} already has columns {clash}; join other settings, or read them from the table")
        # Look each row's run up among the runs' settings (the rows' keys are categoricals: cheap to index),
        # rather than merging two frames of millions of rows.
        runs = pd.MultiIndex.from_arrays([config["sweep"].astype(str), config["run_id"].astype(str)])
        rows = runs.get_indexer(pd.MultiIndex.from_arrays([frame["sweep"], frame["run_id"]]))
        found = rows >= 0
        joined = {}
        for setting, column in columns.items():
            values = pd.Series(config[column].to_numpy()).take(np.where(found, rows, 0)).to_numpy()
            joined[setting] = pd.Series(values).where(found).to_numpy() if not found.all() else values
        return frame.assign(**joined)

    def gradients_with(self, *settings: str) -> pd.DataFrame:
        """The gradient table with run ``settings`` joined on: ``data.with_config("gradients", *settings)``."""
        return self.with_config("gradients", *settings)


_KEY_TYPES = {"sweep": "string", "run_id": "string", "cell": "string", "activation": "string", "seed": "int64"}


def _config_column(config: pd.DataFrame, setting: str) -> str:
    """The column of ``config`` that holds ``setting`` (its full dotted name, or a unique last part)."""
    if setting in config.columns:
        return setting
    matches = [column for column in config.columns if column.rsplit(".", 1)[-1] == setting]
    if len(matches) == 1:
        return matches[0]
    known = sorted(column for column in config.columns if column not in ("sweep", "run_id"))
    if matches:
        raise ValueError(f"setting {setting!r} is ambiguous, name one of {sorted(matches)}")
    raise ValueError(f"no run has a setting {setting!r} in its {schema.RUN_FILES['config']}; settings: {known}")


def _pieces(frame: pd.DataFrame | None, runs: pd.MultiIndex, number: np.ndarray,
            count: int) -> list[pd.DataFrame] | None:
    """``frame``'s rows of each group, in their order in ``frame``: group ``number[i]`` holds run ``runs[i]``."""
    if frame is None:
        return None
    found = runs.get_indexer(pd.MultiIndex.from_arrays([frame["sweep"], frame["run_id"]]))
    group = np.where(found >= 0, number[np.maximum(found, 0)], count)  # rows of no group sort last
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(count + 1))
    return [frame.iloc[order[bounds[i]:bounds[i + 1]]].reset_index(drop=True) for i in range(count)]


def _empty(kind: str) -> pd.DataFrame:
    return schema.empty(kind).assign(sweep=pd.array([], dtype="string"))
