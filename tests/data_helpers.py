"""Shared helpers of the data tests: the shared FSDD folder and fake audio trees."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

#: Overrides where the tests look for FSDD (a folder of WAVs or with recordings/).
FSDD_TEST_ENV = "GRADLAB_FSDD"


def ci_run() -> bool:
    """Whether the tests run under CI (``CI=true``), where a missing data folder fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def fsdd_recordings() -> Path:
    """The shared FSDD recordings folder; else skip the test with the reason, or fail it under ``CI=true``."""
    override = os.environ.get(FSDD_TEST_ENV)
    base = (
        Path(override)
        if override
        else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"
    )
    for candidate in (base / "recordings", base):
        if candidate.is_dir() and any(candidate.glob("*_*_*.wav")):
            return candidate
    reason = f"FSDD recordings not found at {base} (set {FSDD_TEST_ENV} to a copy)"
    if ci_run():
        # the real-audio runs are the only end-to-end checks on recorded speech: CI must not pass without them
        pytest.fail(f"{reason}; CI=true needs them")
    pytest.skip(reason)


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone, float32."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int = 16_000) -> Path:
    """Writes 16-bit PCM audio, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, rate, subtype="PCM_16")
    return path


def build_speech_commands_tree(
    root: Path,
    words: dict[str, int],
    *,
    validation: int = 1,
    test: int = 1,
    background_noise: bool = True,
) -> dict[str, list[str]]:
    """A fake Speech Commands v0.02 tree with the real naming scheme.

    Each word gets ``count`` short tones named ``<hash>_nohash_<n>.wav``; the
    first ``validation`` speakers of each word go in validation_list.txt and
    the next ``test`` in testing_list.txt.

    Args:
        root: Folder to fill (the tree's root).
        words: Word -> number of files.
        validation: Files per word listed for validation.
        test: Files per word listed for test.
        background_noise: Also write a ``_background_noise_`` folder.

    Returns:
        ``{"train"|"validation"|"test": ["word/file.wav", ...]}``, sorted.
    """
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for w, (word, count) in enumerate(words.items()):
        for i in range(count):
            name = f"{w:02x}{i:06x}_nohash_{i % 2}.wav"
            write_wav(root / word / name, tone(200 + 100 * w + 7 * i, 0.3 + 0.05 * (i % 3), 16_000))
            split = "validation" if i < validation else "test" if i < validation + test else "train"
            splits[split].append(f"{word}/{name}")
    if background_noise:
        write_wav(root / "_background_noise_" / "white_noise.wav", np.zeros(1600, np.float32))
    (root / "validation_list.txt").write_text("".join(f"{line}\n" for line in splits["validation"]))
    (root / "testing_list.txt").write_text("".join(f"{line}\n" for line in splits["test"]))
    return {split: sorted(lines) for split, lines in splits.items()}
