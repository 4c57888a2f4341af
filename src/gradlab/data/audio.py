"""From labelled audio file lists to normalised MFCC tensors, through the cache.

Shared by the Speech Commands and FSDD loaders. Each split's raw MFCCs are
cached under a key made of the dataset, split, class names, every
``FeatureConfig`` field and the file list (relative path, size and a BLAKE2b
digest of the bytes of every file, and its label), so any change misses the
cache, even one that keeps a file's size and modification time. Files
skipped while extracting are stored with the features, so a cache hit
reports (and warns about) them as the first load did. Normalisation is
applied after loading: per-coefficient mean and standard deviation over all
frames of the training split only, applied to every split. With a delay
(``FeatureConfig.delay``), the statistics come from the training clips without
it, so they do not change with the delay (the appended silence would otherwise
shift them).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradlab.data.advice import DataCacheError, escape
from gradlab.data.cache import load_arrays, make_key, save_arrays
from gradlab.data.features import FeatureConfig, extract_features
from gradlab.data.paths import default_cache_dir
from gradlab.data.splits import TASK_CLASSIFICATION, DataSplits, SplitTensors

#: Bump when the cached arrays' meaning changes, to invalidate old caches.
CACHE_FORMAT = 2

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class LabelledFiles:
    """One split's audio files and their labels, in a fixed order."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError("paths and labels must have the same length")


def _content_digest(path: Path) -> str:
    """BLAKE2b of the file's bytes: the cache must follow content, not mtime."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _relative_name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _file_record(path: Path, root: Path) -> list[Any]:
    return [_relative_name(path, root), path.stat().st_size, _content_digest(path)]


def _skip_summary(names: Sequence[str], reasons: Sequence[str]) -> dict[str, list[str]]:
    summary: dict[str, list[str]] = {}
    for name, reason in zip(names, reasons, strict=True):
        summary.setdefault(reason, []).append(name)
    return {reason: sorted(found) for reason, found in sorted(summary.items())}


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

    A cache hit whose entry was built without some files warns about them,
    as the extraction that built it did.

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
        could be used, and a dict with ``cache_file``, ``cache_hit``,
        ``skipped`` (paths of the files left out) and ``skipped_by_reason``
        (reason -> names relative to ``root``, see ``splits.SKIP_REASONS``).

    Raises:
        OSError: The cache file cannot be written; the message names it.
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
        failures = extraction.failures
        arrays = {
            "x": extraction.features[extraction.ok],  # (N_ok, T, F)
            "y": labels[extraction.ok],  # (N_ok,)
            "skipped": np.array([_relative_name(Path(f.path), root) for f in failures], dtype=str),
            "skipped_reason": np.array([f.reason for f in failures], dtype=str),
            "skipped_detail": np.array([f.detail for f in failures], dtype=str),
        }
        try:
            save_arrays(cache_file, key, arrays)
        except OSError as error:
            raise DataCacheError(
                escape(f"cannot write the feature cache file {cache_file} ({error}); free disk space there ")
                + "or {cache_dir}<a writable folder>"
            ) from error
    names = [str(name) for name in arrays["skipped"].tolist()]
    reasons = [str(reason) for reason in arrays["skipped_reason"].tolist()]
    if hit and names:
        counts = Counter(reasons)
        warnings.warn(
            f"{dataset} {split}: the cached features in {cache_file} were built without "
            f"{len(names)} files ({', '.join(f'{n} {r}' for r, n in sorted(counts.items()))}); "
            f"first: {names[0]} ({arrays['skipped_detail'][0]})",
            RuntimeWarning,
            stacklevel=2,
        )
    info = {
        "cache_file": str(cache_file),
        "cache_hit": hit,
        "skipped": [str(root / name) for name in names],
        "skipped_by_reason": _skip_summary(names, reasons),
    }
    return arrays["x"], arrays["y"], info


def normalisation_stats(train_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient mean and standard deviation over all training frames.

    Args:
        train_x: ``(N, T, F)`` training features.

    Returns:
        ``mean`` and ``std``, each ``(F,)`` float32; a constant coefficient
        gets std 1 so that it maps to 0 instead of dividing by zero.

    Raises:
        ValueError: The training split is empty or its statistics are not finite.
    """
    if train_x.shape[0] == 0:
        raise ValueError("cannot normalise: the training split is empty")
    frames = train_x.reshape(-1, train_x.shape[-1]).astype(np.float64)  # (N*T, F)
    with np.errstate(invalid="ignore"):  # non-finite statistics are refused below
        mean = frames.mean(axis=0)  # (F,)
        std = frames.std(axis=0)  # (F,)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        bad = int(np.sum(~np.isfinite(train_x).all(axis=(1, 2))))
        raise ValueError(
            f"cannot normalise: the training statistics are not finite ({bad} of "
            f"{train_x.shape[0]} examples hold NaN or infinite features); find them with "
            f"numpy.isfinite, or load with normalise=False"
        )
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def training_subset(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Indices (sorted) of a class-stratified ``fraction`` of a training split.

    Each class keeps ``round(fraction * n_class)`` of its examples (at least
    one), chosen by a fixed permutation: the subset is part of the data, the
    same for every run and seed, and nested (the 25% subset lies inside the
    50% one), so a training-set-size sweep varies only the amount of data.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction!r}")
    if fraction == 1.0:
        return np.arange(len(labels))
    generator = np.random.default_rng(0)
    kept = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = members[generator.permutation(len(members))]
        kept.append(order[: max(1, round(fraction * len(members)))])
    return np.sort(np.concatenate(kept))


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
    skipped: Mapping[str, Sequence[str]] | None = None,
    train_fraction: float = 1.0,
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
        skipped: Files the loader left out before extraction, reason -> names
            relative to ``root`` (e.g. ``"bad_name"``).
        train_fraction: Keep this class-stratified fraction of the training
            split (``training_subset``); the normalisation statistics come
            from the kept clips only.

    Returns:
        ``DataSplits`` with ``x`` ``(N, T, n_mfcc)`` and ``y`` ``(N,)`` int64;
        ``skipped`` holds those files and the ones extraction left out.

    Raises:
        ValueError: A split is empty after skipping, or the normalisation
            statistics are not finite.
    """
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    split_info: dict[str, Any] = {}
    all_skipped: dict[str, list[str]] = {r: list(names) for r, names in (skipped or {}).items()}
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
        for reason, names in details["skipped_by_reason"].items():
            all_skipped.setdefault(reason, []).extend(names)
    for split in SPLIT_NAMES:
        if arrays[split][0].shape[0] == 0:
            listed = len(splits[split].paths)
            why = f"all {listed} files chosen for it were skipped" if listed else "no files"
            raise ValueError(
                f"the {dataset} {split} split is empty ({why}: "
                f"{split_info[split]['skipped_by_reason']}); choose words, takes or speakers "
                f"that give every split files"
            )
    kept = training_subset(arrays["train"][1], train_fraction)
    arrays["train"] = (arrays["train"][0][kept], arrays["train"][1][kept])
    if train_fraction < 1.0:
        split_info["train"]["size"] = int(kept.size)
        split_info["train"]["fraction"] = train_fraction
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
            undelayed = undelayed[kept]  # same files, same order: the same subset
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
        skipped={reason: sorted(names) for reason, names in sorted(all_skipped.items()) if names},
    )
