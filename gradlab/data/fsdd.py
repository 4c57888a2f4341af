"""Free Spoken Digit Dataset (FSDD): real recordings of spoken digits.

6 speakers, 10 digits, 50 takes each (3,000 mono 8 kHz WAVs) named
``{digit}_{speaker}_{take}.wav``. The official split puts takes 0-4 in the
test set and takes 5-49 in training; gradlab carves a validation set from the
training takes deterministically: takes 5-9 are validation, 10-49 train.
Every speaker appears in every split (the split is by take, not by speaker).

Words are digit names (``"one"``) or digits (``1``, ``"1"``); labels follow
the order given, and class names are the digit names. Audio is resampled to
the feature pipeline's rate (16 kHz by default).

The loader does not download FSDD: point it at a copy with ``root=`` or the
``GRADLAB_FSDD`` environment variable (a folder holding the WAVs or a
``recordings/`` folder of them).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from gradlab.data.audio import LabelledFiles, build_audio_splits
from gradlab.data.features import FeatureConfig
from gradlab.data.paths import data_home
from gradlab.data.splits import SKIP_BAD_NAME, DataSplits

#: Environment variable naming the FSDD folder.
FSDD_ENV = "GRADLAB_FSDD"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_WORDS = ("one", "two", "three")
TEST_TAKES = range(0, 5)  # official
VALIDATION_TAKES = range(5, 10)  # gradlab's choice, carved from the official training takes
TRAIN_TAKES = range(10, 50)

_FILE_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


def find_fsdd_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding FSDD's WAV files.

    Looks at ``root``, else ``$GRADLAB_FSDD``, else ``data_home() / "fsdd"``;
    in each, at the folder itself and at its ``recordings/`` subfolder.

    Raises:
        FileNotFoundError: No FSDD recordings there; the message says where it
            looked and how to point gradlab at a copy.
    """
    if root is not None:
        base, origin = Path(root).expanduser(), "the root argument"
    elif os.environ.get(FSDD_ENV):
        base, origin = Path(os.environ[FSDD_ENV]).expanduser(), f"${FSDD_ENV}"
    else:
        base, origin = data_home() / "fsdd", "the default location"
    candidates = [base / "recordings", base]
    for candidate in candidates:
        if candidate.is_dir() and any(_FILE_NAME.match(p.name) for p in candidate.iterdir()):
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav) found via {origin}; "
        f"looked in {looked}. Pass root=<folder with the WAVs or a recordings/ folder> "
        f"or set {FSDD_ENV}; FSDD is at github.com/Jakobovski/free-spoken-digit-dataset"
    )


def resolve_digits(words: Sequence[str | int]) -> list[int]:
    """Maps digit names or digits to digits 0-9, keeping their order.

    Raises:
        ValueError: An unknown word, or a word given twice.
    """
    digits = []
    for word in words:
        text = str(word).strip().lower()
        if text in DIGIT_NAMES:
            digit = DIGIT_NAMES.index(text)
        elif text.isdigit() and len(text) == 1:
            digit = int(text)
        else:
            raise ValueError(
                f"unknown FSDD word {word!r}; use digit names "
                f"({', '.join(DIGIT_NAMES)}) or digits 0-9"
            )
        if digit in digits:
            raise ValueError(f"word {word!r} given twice")
        digits.append(digit)
    if not digits:
        raise ValueError("words must name at least one digit")
    return digits


def split_of_take(take: int) -> str:
    """``"test"`` for takes 0-4, ``"validation"`` for 5-9, ``"train"`` otherwise."""
    if take in TEST_TAKES:
        return "test"
    if take in VALIDATION_TAKES:
        return "validation"
    return "train"


def fsdd_files(
    recordings: Path,
    words: Sequence[str | int] = DEFAULT_WORDS,
    *,
    speakers: Iterable[str] | None = None,
    takes: Iterable[int] | None = None,
) -> dict[str, LabelledFiles]:
    """The files of each split, sorted by path, labelled in ``words`` order.

    Args:
        recordings: Folder of FSDD WAVs (``find_fsdd_root``).
        words: Digit names or digits.
        speakers: Keep only these speakers (default all).
        takes: Keep only these take numbers (default all), e.g. for small tests.

    Returns:
        ``LabelledFiles`` for ``"train"``, ``"validation"`` and ``"test"``.

    Raises:
        ValueError: A chosen digit has no recordings (after the filters).
    """
    digits = resolve_digits(words)
    label_of = {digit: label for label, digit in enumerate(digits)}
    speaker_set = None if speakers is None else set(speakers)
    take_set = None if takes is None else set(takes)
    chosen: dict[str, list[tuple[Path, int]]] = {"train": [], "validation": [], "test": []}
    counts = dict.fromkeys(digits, 0)
    for name in sorted(os.listdir(recordings)):
        match = _FILE_NAME.match(name)
        if not match:
            continue
        path = recordings / name
        digit, speaker, take = int(match[1]), match[2], int(match[3])
        if digit not in label_of:
            continue
        if speaker_set is not None and speaker not in speaker_set:
            continue
        if take_set is not None and take not in take_set:
            continue
        chosen[split_of_take(take)].append((path, label_of[digit]))
        counts[digit] += 1
    empty = [DIGIT_NAMES[d] for d, count in counts.items() if count == 0]
    if empty:
        raise ValueError(f"no FSDD recordings in {recordings} for: {', '.join(empty)}")
    return {
        split: LabelledFiles(tuple(p for p, _ in items), tuple(label for _, label in items))
        for split, items in chosen.items()
    }


def unmatched_wav_names(recordings: Path) -> list[str]:
    """WAV files in ``recordings`` whose names do not follow FSDD's scheme, sorted.

    Their digit is unknown, so they cannot be loaded; ``load_fsdd`` reports
    them under ``"bad_name"``.
    """
    return sorted(
        name
        for name in os.listdir(recordings)
        if name.lower().endswith(".wav") and not _FILE_NAME.match(name)
    )


def load_fsdd(
    *,
    words: Sequence[str | int] = DEFAULT_WORDS,
    root: str | os.PathLike | None = None,
    features: FeatureConfig = FeatureConfig(),
    normalise: bool = True,
    cache_dir: str | os.PathLike | None = None,
    speakers: Iterable[str] | None = None,
    takes: Iterable[int] | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> DataSplits:
    """FSDD as normalised MFCC tensors (task ``"classification"``).

    Args:
        words: Digit names or digits; labels follow this order.
        root: FSDD folder (see ``find_fsdd_root``).
        features: MFCC parameters.
        normalise: Standardise coefficients with training-split statistics.
        cache_dir: Feature cache folder (default ``~/.cache/gradlab/features``).
        speakers: Keep only these speakers.
        takes: Keep only these takes (split membership still follows the take).
        num_workers: Extraction processes (default all cores).
        progress: Show progress bars.

    Returns:
        ``DataSplits`` with ``x`` ``(N, T, n_mfcc)`` and ``y`` ``(N,)``;
        ``skipped`` names the files left out (WAVs named outside the
        ``{digit}_{speaker}_{take}.wav`` scheme under ``"bad_name"``).
    """
    recordings = find_fsdd_root(root)
    digits = resolve_digits(words)
    bad_names = unmatched_wav_names(recordings)
    if bad_names:
        warnings.warn(
            f"skipped {len(bad_names)} WAV files in {recordings} not named "
            f"{{digit}}_{{speaker}}_{{take}}.wav (first: {bad_names[0]}); rename them to load them",
            RuntimeWarning,
            stacklevel=2,
        )
    splits = fsdd_files(recordings, digits, speakers=speakers, takes=takes)
    return build_audio_splits(
        "fsdd",
        splits,
        [DIGIT_NAMES[d] for d in digits],
        features,
        root=recordings,
        normalise=normalise,
        cache_dir=cache_dir,
        num_workers=num_workers,
        progress=progress,
        info={"split_rule": "takes 0-4 test, 5-9 validation, 10-49 train"},
        skipped={SKIP_BAD_NAME: bad_names} if bad_names else None,
    )
