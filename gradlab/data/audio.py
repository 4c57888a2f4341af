"""From labelled audio file lists to normalised MFCC tensors, through the cache.

Shared by the Speech Commands and FSDD loaders. Each split's raw MFCCs are
cached under a key made of the dataset, split, class names, every
``FeatureConfig`` field and the file list (relative path, size and mtime of
every file, and its label), so any change misses the cache. Normalisation is
applied after loading: per-coefficient mean and standard deviation over all
frames of the training split only, applied to every split. With a delay
(``FeatureConfig.delay``), the statistics come from the training clips without
it, so they do not change with the delay (the appended silence would otherwise
shift them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradlab.data.cache import load_arrays, make_key, save_arrays
from gradlab.data.features import FeatureConfig, extract_features
from gradlab.data.paths import default_cache_dir
from gradlab.data.splits import TASK_CLASSIFICATION, DataSplits, SplitTensors

#: Bump when the cached arrays' meaning changes, to invalidate old caches.
CACHE_FORMAT = 1

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class LabelledFiles:
    """One split's audio files and their labels, in a fixed order."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError("paths and labels must have the same length")


def _file_record(path: Path, root: Path) -> list[Any]:
    stat = path.stat()
    try:
        name = path.relative_to(root).as_posix()
    except ValueError:
        name = path.as_posix()
    return [name, stat.st_size, stat.st_mtime_ns]


def cached_features(
    dataset: str,
    split: str,
    files: LabelledFiles,
    class_names: Sequence[str],
    config: FeatureConfig,
    *,
    root: Path,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Raw MFCCs of one split, computed once and then read from the cache.

    Args:
        dataset: Dataset name, part of the key and of the file name.
        split: Split name, part of the key.
        files: The split's files and labels.
        class_names: Class names in label order.
        config: Feature parameters.
        root: Dataset root; file paths enter the key relative to it.
        cache_dir: Cache folder; default ``paths.default_cache_dir()``.
        num_workers: Extraction processes (default all cores).
        progress: Show a progress bar while extracting.

    Returns:
        ``x`` ``(N, T, F)`` float32 and ``y`` ``(N,)`` int64 for the files that
        could be decoded, and a dict with ``cache_file``, ``cache_hit`` and
        ``skipped`` (paths of files that could not be decoded).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = make_key(
        {
            "format": CACHE_FORMAT,
            "dataset": dataset,
            "split": split,
            "class_names": list(class_names),
            "features": asdict(config),
            "files": [_file_record(p, root) for p in files.paths],
            "labels": list(files.labels),
        }
    )
    cache_file = cache_dir / f"{dataset}-{split}-{key[:24]}.npz"
    arrays = load_arrays(cache_file, key)
    hit = arrays is not None
    if arrays is None:
        extraction = extract_features(
            files.paths,
            config,
            num_workers=num_workers,
            progress=progress,
            description=f"{dataset} {split} MFCC",
        )
        labels = np.asarray(files.labels, dtype=np.int64)
        arrays = {
            "x": extraction.features[extraction.ok],  # (N_ok, T, F)
            "y": labels[extraction.ok],  # (N_ok,)
            "skipped": np.array([path for path, _ in extraction.failures], dtype=str),
        }
        save_arrays(cache_file, key, arrays)
    info = {
        "cache_file": str(cache_file),
        "cache_hit": hit,
        "skipped": [str(p) for p in arrays["skipped"].tolist()],
    }
    return arrays["x"], arrays["y"], info


def normalisation_stats(train_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient mean and standard deviation over all training frames.

    Args:
        train_x: ``(N, T, F)`` training features.

    Returns:
        ``mean`` and ``std``, each ``(F,)`` float32; a constant coefficient
        gets std 1 so that it maps to 0 instead of dividing by zero.
    """
    if train_x.shape[0] == 0:
        raise ValueError("cannot normalise: the training split is empty")
    frames = train_x.reshape(-1, train_x.shape[-1]).astype(np.float64)  # (N*T, F)
    mean = frames.mean(axis=0)  # (F,)
    std = frames.std(axis=0)  # (F,)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def build_audio_splits(
    dataset: str,
    splits: Mapping[str, LabelledFiles],
    class_names: Sequence[str],
    config: FeatureConfig,
    *,
    root: Path,
    normalise: bool = True,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    info: Mapping[str, Any] | None = None,
) -> DataSplits:
    """Turns the three splits' file lists into a classification ``DataSplits``.

    Args:
        dataset: Dataset name (cache key and ``info["dataset"]``).
        splits: ``LabelledFiles`` for ``"train"``, ``"validation"``, ``"test"``.
        class_names: Class names in label order.
        config: Feature parameters.
        root: Dataset root.
        normalise: Standardise each coefficient with training-split statistics.
        cache_dir: Feature cache folder.
        num_workers: Extraction processes.
        progress: Show progress bars.
        info: Extra provenance to record in ``info``.

    Returns:
        ``DataSplits`` with ``x`` ``(N, T, n_mfcc)`` and ``y`` ``(N,)`` int64.
    """
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    split_info: dict[str, Any] = {}
    for split in SPLIT_NAMES:
        x, y, details = cached_features(
            dataset,
            split,
            splits[split],
            class_names,
            config,
            root=root,
            cache_dir=cache_dir,
            num_workers=num_workers,
            progress=progress,
        )
        arrays[split] = (x, y)
        split_info[split] = {**details, "size": int(x.shape[0])}
    mean = std = None
    if normalise:
        undelayed = arrays["train"][0]
        if config.delay:
            undelayed, _, _ = cached_features(
                dataset,
                "train",
                splits["train"],
                class_names,
                replace(config, delay=0),
                root=root,
                cache_dir=cache_dir,
                num_workers=num_workers,
                progress=progress,
            )
        mean, std = normalisation_stats(undelayed)

    def tensors(split: str) -> SplitTensors:
        x, y = arrays[split]
        if normalise:
            x = (x - mean) / std  # (N, T, F)
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # (N, T, F)
        return SplitTensors(x, torch.from_numpy(y))

    return DataSplits(
        train=tensors("train"),
        validation=tensors("validation"),
        test=tensors("test"),
        task=TASK_CLASSIFICATION,
        num_outputs=len(class_names),
        input_size=config.n_mfcc,
        seq_len=config.num_frames,
        class_names=tuple(class_names),
        info={
            "dataset": dataset,
            "root": str(root),
            "features": asdict(config),
            "normalised": normalise,
            "normalisation_mean": None if mean is None else mean.tolist(),
            "normalisation_std": None if std is None else std.tolist(),
            "splits": split_info,
            **(info or {}),
        },
    )
