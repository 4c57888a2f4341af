"""Whether a run on disk is the run asked for: its ``config.json`` against the requested config.

A finished run may be skipped only when it was made with the same settings in
every field that changes its results. Fields that only say how or where it ran
are not compared (:data:`EXECUTION_FIELDS`); every other field is, including
fields this module has never heard of, so a new config field is safe by default.

Paths are not compared: ``data.cache_dir`` holds features keyed by the
parameters that made them, and ``data.data_dir`` only says where the dataset
is; the same data mounted elsewhere (another host, another path to the same
folder, ``None`` for the default) gives the same results. Which dataset, which
words, takes and sizes are compared, as their own fields.

Plain dicts in, so reading a run folder needs no torch. Fields missing on one
side differ from any value; to treat them as their defaults, pass both configs
through ``RunConfig.from_dict(...).to_dict()`` first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

#: Dotted names of config fields that never change a run's results.
EXECUTION_FIELDS: frozenset[str] = frozenset({
    "command",  # the command line that launched the run
    "run_id",  # the run's folder name: the key runs are matched by, not a setting
    "train.device",  # float results vary by device in the last bits only
    "train.threads",
    "train.workers",
    "train.progress",
    "data.num_workers",  # feature-extraction processes
    "data.progress",
    "data.download",  # whether a missing dataset may be fetched
    "data.cache_dir",
    "data.data_dir",
})


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: Stands for a field absent from one of the two configs.
MISSING: Any = _Missing()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b  # True is not 1 here
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))  # JSON turns tuples into lists
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return False
    return a == b  # 1 == 1.0: JSON may write either for the same number


def result_differences(
    stored: Mapping[str, Any],
    requested: Mapping[str, Any],
    *,
    ignore: Collection[str] = EXECUTION_FIELDS,
) -> dict[str, tuple[Any, Any]]:
    """The fields that change results and differ between two run configs.

    Args:
        stored: the config a run was made with (its ``config.json``).
        requested: the config asked for now (``RunConfig.to_dict()``).
        ignore: dotted names not compared (a dict's name covers everything in it).

    Returns:
        ``{dotted name: (stored value, requested value)}`` in sorted order,
        :data:`MISSING` for a field absent on one side; empty when the stored
        run answers the request.
    """
    differences: dict[str, tuple[Any, Any]] = {}
    _compare(stored, requested, "", frozenset(ignore), differences)
    return differences


def _compare(stored: Mapping[str, Any], requested: Mapping[str, Any], prefix: str,
             ignore: frozenset[str], differences: dict[str, tuple[Any, Any]]) -> None:
    for key in sorted(set(stored) | set(requested), key=str):
        name = f"{prefix}{key}"
        if name in ignore:
            continue
        a, b = stored.get(key, MISSING), requested.get(key, MISSING)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            _compare(a, b, f"{name}.", ignore, differences)
        elif not _same(a, b):
            differences[name] = (a, b)


def describe_differences(differences: Mapping[str, tuple[Any, Any]]) -> str:
    """``"train.lr: 0.003 on disk, 0.3 requested; ..."``, for error messages."""
    return "; ".join(f"{name}: {a!r} on disk, {b!r} requested" for name, (a, b) in differences.items())
