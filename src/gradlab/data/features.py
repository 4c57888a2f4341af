"""MFCC features: reading clips and extracting them in parallel.

Defaults match the coursework gradlab grew out of: 16 kHz audio, clips
zero-padded at the end (or cut) to 1 s, ``librosa.feature.mfcc`` with 20
coefficients, ``n_fft=2048`` and ``hop_length=512``, giving 32 frames of 20
coefficients per clip. ``pad`` and ``delay`` move the word to the clip's end
and append frames of silence after it (see ``silence``). Every parameter is
a field of ``FeatureConfig``, so the sequence length can be swept (a smaller
hop gives more frames).

One difference: gradlab reads audio as floats in [-1, 1] (soundfile's
convention); the coursework read int16 samples with scipy, which is the same
audio scaled by 32768. ``amplitude_scale=32768.0`` reproduces that.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import soundfile
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from gradlab.data.silence import check_silence, clip_with_silence
from gradlab.data.splits import SKIP_EMPTY, SKIP_NON_FINITE, SKIP_UNREADABLE


@dataclass(frozen=True)
class FeatureConfig:
    """How a clip becomes an MFCC sequence; change with ``dataclasses.replace``."""

    sample_rate: int = 16_000  # audio is resampled to this rate first
    clip_seconds: float = 1.0  # clips are zero-padded at the end or cut to this
    n_mfcc: int = 20  # coefficients per frame: the input size F
    n_fft: int = 2048
    hop_length: int = 512  # samples between frames: sets the sequence length T
    n_mels: int = 128  # mel bands before the DCT (librosa's default)
    amplitude_scale: float = 1.0  # 32768.0 reproduces the coursework's int16 input
    pad: str = "end"  # "end": word then silence; "start": silence then word (see silence)
    delay: int = 0  # frames of silence appended after the clip: T = clip frames + delay

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_mfcc", "n_fft", "hop_length", "n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FeatureConfig.{name} must be a positive int, got {value!r}")
        if self.clip_seconds <= 0:
            raise ValueError(f"FeatureConfig.clip_seconds must be > 0, got {self.clip_seconds}")
        if self.n_mfcc > self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) cannot exceed n_mels ({self.n_mels})")
        check_silence(self.pad, self.delay)

    @property
    def clip_samples(self) -> int:
        """Samples per clip after padding or cutting."""
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def clip_frames(self) -> int:
        """Frames of the clip alone (librosa centres frames: ``1 + samples // hop``)."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def num_frames(self) -> int:
        """Frames per sequence, ``T``: the clip's frames plus ``delay``."""
        return self.clip_frames + self.delay


def with_silence(config: FeatureConfig, pad: str | None, delay: int | None) -> FeatureConfig:
    """``config`` with ``pad`` and ``delay`` replaced where given (the loaders' shortcuts)."""
    changes = {name: value for name, value in (("pad", pad), ("delay", delay)) if value is not None}
    return replace(config, **changes) if changes else config


#: Sample rates a file may declare, in Hz; outside them the header is not a
#: speech recording (a header claiming 1 Hz once asked resampling for 11.9 GiB).
SAMPLE_RATE_RANGE = (1_000, 384_000)
#: Most channels a file may declare; each is read before the mono average.
MAX_CHANNELS = 32


class UnusableAudio(ValueError):
    """A file that decodes but cannot be a training example.

    Attributes:
        reason: One of ``splits.SKIP_REASONS``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_clip(path: str | os.PathLike, config: FeatureConfig) -> np.ndarray:
    """Reads one audio file as a fixed-length mono clip.

    Only the samples the clip needs are read (plus the resampling filter's
    reach), whatever length the header claims. Multi-channel audio is
    averaged to mono, other sample rates are resampled (polyphase,
    ``scipy.signal.resample_poly``), and the result is cut or zero-padded to
    ``config.clip_samples`` (the word first with ``pad="end"``, last with
    ``pad="start"``), followed by ``config.delay`` frames of zeros.

    Args:
        path: An audio file soundfile can read (WAV, FLAC, ...).
        config: Target sample rate, clip length and amplitude scale.

    Returns:
        ``(config.clip_samples + config.delay * config.hop_length,)`` float32.

    Raises:
        soundfile.LibsndfileError: The file cannot be decoded.
        UnusableAudio: The header declares a sample rate outside
            ``SAMPLE_RATE_RANGE`` or more than ``MAX_CHANNELS`` channels
            (reason ``"unreadable"``), holds NaN or infinite samples (``"non_finite"``), or
            holds no sound (``"empty"``).
    """
    with soundfile.SoundFile(os.fspath(path)) as handle:
        rate, channels = handle.samplerate, handle.channels
        low, high = SAMPLE_RATE_RANGE
        if not low <= rate <= high:
            raise UnusableAudio(
                SKIP_UNREADABLE, f"header declares {rate} Hz; accepted rates are {low}-{high} Hz"
            )
        if channels > MAX_CHANNELS:
            raise UnusableAudio(
                SKIP_UNREADABLE, f"header declares {channels} channels; at most {MAX_CHANNELS}"
            )
        divisor = math.gcd(rate, config.sample_rate)
        up, down = config.sample_rate // divisor, rate // divisor
        # resample_poly's filter reaches 10 * max(up, down) upsampled samples each
        # way, so these extra input samples make the kept part exact.
        reach = 0 if rate == config.sample_rate else 10 * max(up, down) // up + 2
        needed = math.ceil(config.clip_seconds * rate) + reach
        audio = handle.read(needed, dtype="float32", always_2d=True)  # (S, C)
    audio = audio.mean(axis=1)  # (S,)
    if not np.isfinite(audio).all():  # a float WAV can store NaN or inf; librosa would refuse it as if undecodable
        bad = int(np.sum(~np.isfinite(audio)))
        raise UnusableAudio(SKIP_NON_FINITE, f"{bad} of {audio.shape[0]} samples are NaN or infinite")
    if not np.any(audio):
        raise UnusableAudio(
            SKIP_EMPTY,
            f"no sound: {audio.shape[0]} samples, all zero, in the clip's {config.clip_seconds} s",
        )
    if rate != config.sample_rate:
        from scipy.signal import resample_poly  # here: scipy.signal takes about a second to import

        audio = resample_poly(audio, up, down)
    clip = clip_with_silence(
        audio, config.clip_samples, pad=config.pad, delay_samples=config.delay * config.hop_length
    )  # (S_clip + S_delay,)
    if config.amplitude_scale != 1.0:
        clip *= np.float32(config.amplitude_scale)
    return clip


def mfcc(clip: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """MFCCs of one clip, time-major.

    Args:
        clip: Samples as from ``load_clip``.
        config: MFCC parameters.

    Returns:
        ``(config.num_frames, config.n_mfcc)`` float32.
    """
    # Imported here, with scipy.signal below it (about a second): a sweep that reads cached features, and each of
    # its worker processes, never computes an MFCC.
    import librosa

    coefficients = librosa.feature.mfcc(
        y=clip,
        sr=config.sample_rate,
        n_mfcc=config.n_mfcc,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
    )  # (F, T)
    return np.ascontiguousarray(coefficients.T, dtype=np.float32)  # (T, F)


class SkippedFile(NamedTuple):
    """A file left out of a dataset, with why."""

    path: str
    reason: str  # one of splits.SKIP_REASONS
    detail: str  # the error, for the user


@dataclass(frozen=True)
class Extraction:
    """Features of a list of files, with the files that could not be used.

    Attributes:
        features: ``(N, T, F)`` float32; rows of failed files are zero.
        ok: ``(N,)`` bool, false where the file was skipped.
        failures: A ``SkippedFile`` for every skipped file, in input order.
    """

    features: np.ndarray
    ok: np.ndarray
    failures: tuple[SkippedFile, ...]


def clip_features(path: str | os.PathLike, config: FeatureConfig) -> np.ndarray:
    """MFCCs of one file, refusing non-finite results.

    Returns:
        ``(config.num_frames, config.n_mfcc)`` float32, all finite.

    Raises:
        UnusableAudio: The clip is empty or its features are not finite.
        soundfile.LibsndfileError: The file cannot be decoded.
    """
    clip = load_clip(path, config)
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, with the file
        features = mfcc(clip, config)  # (T, F)
    if not np.isfinite(features).all():
        peak = float(np.max(np.abs(clip)))
        raise UnusableAudio(
            SKIP_NON_FINITE,
            f"non-finite MFCCs (peak amplitude {peak:.3g}; speech audio is within [-1, 1]"
            f" times amplitude_scale {config.amplitude_scale:g})",
        )
    return features


def _extract_chunk(
    start: int, paths: Sequence[str], config: FeatureConfig
) -> tuple[int, np.ndarray, list[tuple[int, str, str]]]:
    """Worker: features of ``paths``, and ``(index, reason, detail)`` for each failure."""
    features = np.zeros((len(paths), config.num_frames, config.n_mfcc), dtype=np.float32)
    failures = []
    for i, path in enumerate(paths):
        try:
            features[i] = clip_features(path, config)
        except Exception as error:  # one bad file must not end a long extraction
            reason = error.reason if isinstance(error, UnusableAudio) else SKIP_UNREADABLE
            failures.append((i, reason, f"{type(error).__name__}: {error}"))
    return start, features, failures


def default_num_workers() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """Limits BLAS to one thread: workers then do not oversubscribe the cores,
    and features are bit-identical whatever the number of workers (threaded
    BLAS sums in a different order). The limit holds from this call until the
    returned object is exited."""
    return threadpool_limits(1)


def _single_threaded_worker() -> None:
    """Worker initialiser: one BLAS thread for the worker's lifetime."""
    _one_blas_thread()


def _process_context() -> multiprocessing.context.BaseContext:
    # fork starts workers without re-importing torch; spawn elsewhere.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def extract_features(
    paths: Sequence[str | os.PathLike],
    config: FeatureConfig,
    *,
    num_workers: int | None = None,
    progress: bool = True,
    description: str = "MFCC",
) -> Extraction:
    """Extracts MFCCs of many files on all cores, skipping unusable ones.

    Files that cannot be decoded, hold no sound or give non-finite features
    are skipped and counted by reason, with a single warning naming the first
    of them; they never stop the extraction.

    Args:
        paths: Audio files.
        config: Feature parameters.
        num_workers: Worker processes; default all cores available. 1 runs
            in this process.
        progress: Show a tqdm progress bar.
        description: Label of the progress bar.

    Returns:
        An ``Extraction`` with features ``(N, T, F)``.
    """
    paths = [os.fspath(p) for p in paths]
    n = len(paths)
    features = np.zeros((n, config.num_frames, config.n_mfcc), dtype=np.float32)  # (N, T, F)
    ok = np.ones(n, dtype=bool)
    reasons: dict[int, tuple[str, str]] = {}
    workers = default_num_workers() if num_workers is None else num_workers
    workers = max(1, min(workers, n // 16))  # tiny lists are not worth a process pool
    chunk = max(8, math.ceil(n / (workers * 8))) if workers > 1 else max(n, 1)
    starts = range(0, n, chunk)

    def collect(start: int, block: np.ndarray, failed: list[tuple[int, str, str]]) -> None:
        features[start : start + block.shape[0]] = block
        for i, reason, detail in failed:
            ok[start + i] = False
            reasons[start + i] = (reason, detail)

    if workers == 1:
        with (
            _one_blas_thread(),
            tqdm(total=n, desc=description, unit="clip", disable=not progress) as bar,
        ):
            for start in starts:
                collect(*_extract_chunk(start, paths[start : start + chunk], config))
                bar.update(min(chunk, n - start))
    else:
        # Workers are forked before the progress bar starts its monitor thread.
        with ProcessPoolExecutor(
            workers, mp_context=_process_context(), initializer=_single_threaded_worker
        ) as pool:
            futures = [
                pool.submit(_extract_chunk, start, paths[start : start + chunk], config)
                for start in starts
            ]
            with tqdm(total=n, desc=description, unit="clip", disable=not progress) as bar:
                for future in as_completed(futures):
                    start, block, failed = future.result()
                    collect(start, block, failed)
                    bar.update(block.shape[0])
    failures = tuple(SkippedFile(paths[i], *reasons[i]) for i in sorted(reasons))
    if failures:
        counts = Counter(failure.reason for failure in failures)
        warnings.warn(
            f"skipped {len(failures)} of {n} audio files "
            f"({', '.join(f'{count} {reason}' for reason, count in sorted(counts.items()))}); "
            f"first: {failures[0].path} ({failures[0].detail})",
            RuntimeWarning,
            stacklevel=2,
        )
    return Extraction(features, ok, failures)
