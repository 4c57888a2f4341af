"""Free Spoken Digit Dataset (FSDD): real recordings of spoken digits.

6 speakers, 10 digits, 50 takes each (3,000 mono 8 kHz WAVs) named
``{digit}_{speaker}_{take}.wav``. Two ways to split it:

- ``split="speakers"`` (the default), speaker-independent: one test speaker
  and one validation speaker, never heard in training; the other speakers'
  recordings are the training set. The default test speaker is
  ``DEFAULT_TEST_SPEAKER``; ``test_speaker=`` rotates it, and the validation
  speaker is always ``validation_speaker(test_speaker)``, so the six
  rotations hold out every speaker once as test and once as validation and
  measure how much accuracy depends on the voice.
- ``split="takes"``, speaker-dependent: FSDD's official split puts takes 0-4
  in the test set and takes 5-49 in training; gradlab carves a validation set
  from the training takes: takes 5-9 validation, 10-49 train. Every speaker
  is in every split, so accuracies are higher than on unheard voices and not
  comparable with Speech Commands (whose official split is by speaker).

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

from gradlab.data.advice import DataNotFoundError, escape
from gradlab.data.audio import LabelledFiles, build_audio_splits
from gradlab.data.features import FeatureConfig, with_silence
from gradlab.data.paths import data_home
from gradlab.data.splits import SKIP_BAD_NAME, DataSplits

#: Environment variable naming the FSDD folder.
FSDD_ENV = "GRADLAB_FSDD"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_WORDS = ("one", "two", "three")
SPLITS = ("speakers", "takes")
#: The speakers of FSDD (all male; accents from FSDD's metadata).
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
#: Held out for testing by default, with ``validation_speaker("theo") ==
#: "yweweler"``. Each of the two shares an accent with a speaker who stays in
#: training (theo is USA/neutral like jackson, yweweler DEU/German like lucas),
#: so they test a new voice rather than an accent the network never heard;
#: george (Greek) and nicolas (Belgian French), whose accents nobody else has,
#: stay in training.
DEFAULT_TEST_SPEAKER = "theo"
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
        base, origin = Path(root).expanduser(), "{root_origin}"
    elif os.environ.get(FSDD_ENV):
        base, origin = Path(os.environ[FSDD_ENV]).expanduser(), f"${FSDD_ENV}"
    else:
        base, origin = data_home() / "fsdd", "the default location"
    candidates = [base / "recordings", base]
    for candidate in candidates:
        if candidate.is_dir() and any(_FILE_NAME.match(p.name) for p in candidate.iterdir()):
            return candidate
    looked = escape(", ".join(str(c) for c in candidates))
    # A template: the command line names --data-dir where Python callers read root=.
    raise DataNotFoundError(
        f"no FSDD recordings ({{{{digit}}}}_{{{{speaker}}}}_{{{{take}}}}.wav) found via {origin}; "
        f"looked in {looked}; {{root}}<folder with the WAVs or a recordings/ folder> "
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


def validation_speaker(test_speaker: str, speakers: Iterable[str] = SPEAKERS) -> str:
    """The validation speaker that goes with ``test_speaker``: the next of
    ``speakers`` in alphabetical order, wrapping around after the last.

    Raises:
        ValueError: ``test_speaker`` is not one of ``speakers``, or fewer than
            three speakers leave nobody to train on.
    """
    ordered = sorted(set(speakers))
    if test_speaker not in ordered:
        raise ValueError(
            f"unknown test speaker {test_speaker!r}; speakers: {', '.join(ordered) or 'none'}"
        )
    if len(ordered) < 3:
        raise ValueError(
            f"split='speakers' needs at least 3 speakers (test, validation, train), got "
            f"{', '.join(ordered)}; keep more speakers or use split='takes'"
        )
    return ordered[(ordered.index(test_speaker) + 1) % len(ordered)]


def speaker_of(path: Path) -> str:
    """The speaker named in an FSDD file name."""
    match = _FILE_NAME.match(Path(path).name)
    if not match:
        raise ValueError(f"{path} is not named {{digit}}_{{speaker}}_{{take}}.wav")
    return match[2]


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
    split: str = "speakers",
    test_speaker: str | None = None,
    speakers: Iterable[str] | None = None,
    takes: Iterable[int] | None = None,
) -> dict[str, LabelledFiles]:
    """The files of each split, sorted by path, labelled in ``words`` order.

    Args:
        recordings: Folder of FSDD WAVs (``find_fsdd_root``).
        words: Digit names or digits.
        split: ``"speakers"`` (speaker-independent) or ``"takes"``
            (speaker-dependent); see the module docstring.
        test_speaker: With ``split="speakers"``, the speaker to test on
            (default ``DEFAULT_TEST_SPEAKER``); validation is on
            ``validation_speaker(test_speaker, <speakers kept>)``.
        speakers: Keep only these speakers (default all).
        takes: Keep only these take numbers (default all), e.g. for small
            tests; with ``split="takes"`` membership still follows the take.

    Returns:
        ``LabelledFiles`` for ``"train"``, ``"validation"`` and ``"test"``.

    Raises:
        ValueError: An unknown split or test speaker, a test speaker with
            ``split="takes"``, or a chosen digit without recordings (after
            the filters).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown FSDD split {split!r}; expected one of {SPLITS}")
    if split == "takes" and test_speaker is not None:
        raise ValueError("test_speaker applies to split='speakers' only, not split='takes'")
    digits = resolve_digits(words)
    label_of = {digit: label for label, digit in enumerate(digits)}
    speaker_set = None if speakers is None else set(speakers)
    take_set = None if takes is None else set(takes)
    kept: list[tuple[Path, int, str, int]] = []
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
        kept.append((path, label_of[digit], speaker, take))
    labelled = {label for _, label, _, _ in kept}
    empty = [DIGIT_NAMES[d] for d in digits if label_of[d] not in labelled]
    if empty:
        raise ValueError(f"no FSDD recordings in {recordings} for: {', '.join(empty)}")
    role: dict[str, str] = {}
    if split == "speakers":
        test_speaker = DEFAULT_TEST_SPEAKER if test_speaker is None else test_speaker
        validation = validation_speaker(test_speaker, {speaker for _, _, speaker, _ in kept})
        role = {test_speaker: "test", validation: "validation"}
    chosen: dict[str, list[tuple[Path, int]]] = {"train": [], "validation": [], "test": []}
    for path, label, speaker, take in kept:
        which = role.get(speaker, "train") if split == "speakers" else split_of_take(take)
        chosen[which].append((path, label))
    return {
        name: LabelledFiles(tuple(p for p, _ in items), tuple(label for _, label in items))
        for name, items in chosen.items()
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
    split: str = "speakers",
    test_speaker: str | None = None,
    speakers: Iterable[str] | None = None,
    takes: Iterable[int] | None = None,
    pad: str | None = None,
    delay: int | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    train_fraction: float = 1.0,
) -> DataSplits:
    """FSDD as normalised MFCC tensors (task ``"classification"``).

    Args:
        words: Digit names or digits; labels follow this order.
        root: FSDD folder (see ``find_fsdd_root``).
        features: MFCC parameters.
        normalise: Standardise coefficients with training-split statistics.
        cache_dir: Feature cache folder (default ``~/.cache/gradlab/features``).
        split: ``"speakers"`` (speaker-independent, the default) or
            ``"takes"`` (speaker-dependent); see the module docstring.
        test_speaker: With ``split="speakers"``, the speaker to test on
            (default ``DEFAULT_TEST_SPEAKER``).
        speakers: Keep only these speakers.
        takes: Keep only these takes.
        pad: Sets ``features.pad`` (``"end"`` or ``"start"``); None keeps it.
        delay: Sets ``features.delay`` (frames of silence after the clip);
            None keeps it.
        num_workers: Extraction processes (default all cores).
        progress: Show progress bars.
        train_fraction: Train on this class-stratified, nested fraction of
            the training clips (see ``gradlab.data.audio.training_subset``).

    Returns:
        ``DataSplits`` with ``x`` ``(N, T, n_mfcc)`` and ``y`` ``(N,)``;
        ``info["split"]`` names the split and ``info["speakers"]`` lists the
        speakers of each split; ``skipped`` names the files left out (WAVs
        named outside the ``{digit}_{speaker}_{take}.wav`` scheme under
        ``"bad_name"``).
    """
    recordings = find_fsdd_root(root)
    digits = resolve_digits(words)
    features = with_silence(features, pad, delay)
    bad_names = unmatched_wav_names(recordings)
    if bad_names:
        warnings.warn(
            f"skipped {len(bad_names)} WAV files in {recordings} not named "
            f"{{digit}}_{{speaker}}_{{take}}.wav (first: {bad_names[0]}); rename them to load them",
            RuntimeWarning,
            stacklevel=2,
        )
    splits = fsdd_files(
        recordings, digits, split=split, test_speaker=test_speaker, speakers=speakers, takes=takes
    )
    if split == "speakers":
        rule = "by speaker: validation and test speakers are never in training"
    else:
        rule = (
            "takes 0-4 test, 5-9 validation, 10-49 train "
            "(speaker-dependent: every speaker in every split)"
        )
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
        info={
            "split": split,
            "split_rule": rule,
            "speakers": {
                name: sorted({speaker_of(path) for path in files.paths})
                for name, files in splits.items()
            },
        },
        skipped={SKIP_BAD_NAME: bad_names} if bad_names else None,
        train_fraction=train_fraction,
    )
