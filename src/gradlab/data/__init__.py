"""gradlab's datasets: Speech Commands, FSDD and synthetic long-range tasks.

Every dataset comes back as a ``DataSplits`` of tensors (see ``splits``);
``load_dataset`` is the one entry point, ``iterate_batches`` serves batches.
Files a loader left out are in ``DataSplits.skipped`` (reason -> file names;
reasons in ``SKIP_REASONS``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradlab.data.batching import iterate_batches, to_device
from gradlab.data.download import DownloadError
from gradlab.data.features import FeatureConfig
from gradlab.data.fsdd import load_fsdd
from gradlab.data.silence import PADS
from gradlab.data.speech_commands import load_speech_commands
from gradlab.data.splits import (
    SKIP_REASONS,
    TASK_CLASSIFICATION,
    TASK_REGRESSION,
    TASK_SEQUENCE_CLASSIFICATION,
    TASKS,
    DataSplits,
    SplitTensors,
)
from gradlab.data.synthetic import (
    ADDING_BASELINE_MSE,
    DISTANCE_NOISE_STD,
    adding_problem,
    copy_memory,
    distance_task,
)

#: Dataset names accepted by ``load_dataset`` and the loader each maps to.
DATASETS: dict[str, Callable[..., DataSplits]] = {
    "adding": adding_problem,
    "copy-memory": copy_memory,
    "distance": distance_task,
    "fsdd": load_fsdd,
    "speech-commands": load_speech_commands,
}


def load_dataset(name: str, **options: Any) -> DataSplits:
    """Loads a dataset by name.

    Names and the loader (and keyword options) each maps to:

    - ``"speech-commands"``: ``load_speech_commands`` (words, root, download,
      url, sha256, features, normalise, cache_dir, pad, delay, num_workers,
      progress).
    - ``"fsdd"``: ``load_fsdd`` (words, root, features, normalise, cache_dir,
      split, test_speaker, speakers, takes, pad, delay, num_workers, progress).
    - ``"adding"``: ``adding_problem`` (seq_len, n_train, n_validation, n_test, seed).
    - ``"copy-memory"``: ``copy_memory`` (delay or seq_len, n_symbols,
      memory_length, n_train, n_validation, n_test, seed).
    - ``"distance"``: ``distance_task`` (seq_len, distance, num_classes,
      noise_std, n_train, n_validation, n_test, seed).

    Args:
        name: One of ``DATASETS``.
        **options: Keyword arguments of that dataset's loader; an option the
            loader does not take raises ``TypeError``.

    Returns:
        The dataset's ``DataSplits``.
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}"
        ) from None
    return loader(**options)


__all__ = [
    "ADDING_BASELINE_MSE",
    "DATASETS",
    "DISTANCE_NOISE_STD",
    "PADS",
    "SKIP_REASONS",
    "TASKS",
    "TASK_CLASSIFICATION",
    "TASK_REGRESSION",
    "TASK_SEQUENCE_CLASSIFICATION",
    "DataSplits",
    "DownloadError",
    "FeatureConfig",
    "SplitTensors",
    "adding_problem",
    "copy_memory",
    "distance_task",
    "iterate_batches",
    "load_dataset",
    "load_fsdd",
    "load_speech_commands",
    "to_device",
]
