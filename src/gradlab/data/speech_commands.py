"""Google Speech Commands v0.02 (Warden 2018) with the official split.

The tree is ``<tree>/<word>/<speaker>_nohash_<n>.wav`` with
``validation_list.txt`` and ``testing_list.txt`` at its root. Validation and
test are exactly the files named in those lists; train is every other file of
the chosen words (``_background_noise_`` is never a word). File lists are
sorted by path; labels follow the order of ``words``.

Where the tree is found, for ``root`` (or, when ``root`` is None, gradlab's
data folder: ``$GRADLAB_DATA``, else ``$XDG_CACHE_HOME/gradlab``, else
``~/.cache/gradlab``): ``root`` itself (a tree extracted by hand),
``root/SpeechCommands/speech_commands_v0.02`` (torchaudio's layout) or
``root/speech_commands_v0.02`` (where gradlab downloads to).

Downloading: ``download=None`` downloads when no ``root`` was given and the
chosen words are missing; ``True`` downloads into ``root`` (or the data
folder) whenever words are missing; ``False`` never downloads. The archive
(about 2.3 GB) is kept beside the tree so that other words can be extracted
later without downloading again; delete it to reclaim the space.
"""

from __future__ import annotations

import os
import posixpath
import warnings
from collections.abc import Sequence
from pathlib import Path

from gradlab.data.advice import DataDownloadError, DataNotFoundError, escape
from gradlab.data.audio import LabelledFiles, build_audio_splits
from gradlab.data.download import (
    EXTRACTED_MARKER,
    DownloadError,
    download_file,
    extract_speech_commands,
    extracted_words,
)
from gradlab.data.features import FeatureConfig, with_silence
from gradlab.data.paths import DATA_ENV, data_home
from gradlab.data.splits import DataSplits

SPEECH_COMMANDS_URL = (
    "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
)
#: Published SHA-256 of speech_commands_v0.02.tar.gz (2,428,923,189 bytes), as
#: pinned by TensorFlow Datasets (tensorflow/datasets,
#: tensorflow_datasets/url_checksums/speech_commands.txt) and by torchaudio
#: (torchaudio/datasets/speechcommands.py, ``_CHECKSUMS``).
SPEECH_COMMANDS_SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
ARCHIVE_NAME = "speech_commands_v0.02.tar.gz"
FOLDER_NAME = "speech_commands_v0.02"
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
BACKGROUND_NOISE = "_background_noise_"
DEFAULT_WORDS = ("one", "two", "three")
#: The 35 words of v0.02, in alphabetical order.
ALL_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
    "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on",
    "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual",
    "wow", "yes", "zero",
)  # fmt: skip


def resolve_words(words: Sequence[str] | str) -> tuple[str, ...]:
    """Checks the chosen words; ``"all"`` means ``ALL_WORDS``.

    Raises:
        ValueError: No words, a repeated word, or a name that is not a word folder.
    """
    if words == "all":
        return ALL_WORDS
    if isinstance(words, str):
        raise ValueError(f"words must be a sequence of words or 'all', got the string {words!r}")
    words = tuple(words)
    if not words:
        raise ValueError("words must name at least one word")
    for word in words:
        unsafe = "/" in word or "\\" in word or word.startswith(".")
        if not word or unsafe or word == BACKGROUND_NOISE:
            raise ValueError(f"{word!r} is not a Speech Commands word")
    repeated = sorted({w for w in words if words.count(w) > 1})
    if repeated:
        raise ValueError(f"words given more than once: {', '.join(repeated)}")
    return words


def tree_candidates(base: Path) -> list[Path]:
    """Folders that may hold the tree, in the order they are tried."""
    return [base, base / "SpeechCommands" / FOLDER_NAME, base / FOLDER_NAME]


def find_tree(base: Path) -> Path | None:
    """The first candidate folder holding ``validation_list.txt``, or None."""
    for candidate in tree_candidates(base):
        if (candidate / VALIDATION_LIST).is_file():
            return candidate
    return None


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"split list {path} is missing; a Speech Commands v0.02 tree has "
            f"{VALIDATION_LIST} and {TESTING_LIST} at its root (re-extract them from the archive)"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(
            f"split list {path} is not UTF-8 text ({error}); re-extract it from the archive"
        ) from error
    # "./one/x.wav", "one\x.wav" (backslash) and "one//x.wav" all name one/x.wav.
    return {posixpath.normpath(line.strip().replace("\\", "/")) for line in lines if line.strip()}


def _warn_unmatched(
    list_path: Path, entries: set[str], on_disk: set[str], words: Sequence[str], tree: Path
) -> None:
    """Warns about entries that should name a file of the chosen words but match none.

    Entries of other Speech Commands words (or other folders of the tree) are
    not loaded and not counted; an entry that names no word at all is.
    """
    known = set(ALL_WORDS) | {p.name for p in tree.iterdir() if p.is_dir()}
    relevant = {e for e in entries if e.split("/")[0] in words or e.split("/")[0] not in known}
    unmatched = sorted(relevant - on_disk)
    if unmatched:
        warnings.warn(
            f"{list_path}: {len(unmatched)} of {len(relevant)} entries for the chosen words "
            f"match no file under {tree} (first: {unmatched[0]!r}); entries must be "
            f"<word>/<file>.wav relative to that folder",
            RuntimeWarning,
            stacklevel=3,
        )


def speech_commands_files(
    tree: str | os.PathLike, words: Sequence[str] | str = DEFAULT_WORDS
) -> dict[str, LabelledFiles]:
    """The official split of the chosen words, sorted by path.

    Args:
        tree: Folder with the word folders and the two lists.
        words: Words to use, or ``"all"``; labels follow this order.

    Returns:
        ``LabelledFiles`` for ``"train"``, ``"validation"`` and ``"test"``.

    List entries are normalised (``./one/x.wav``, ``one\\x.wav`` -> ``one/x.wav``);
    entries for the chosen words that match no file are counted in a warning.

    Raises:
        FileNotFoundError: A list file or a word folder is missing.
        ValueError: A word folder holds no WAV files, or no file of the
            chosen words is listed for validation or for test.
    """
    tree = Path(tree)
    words = resolve_words(words)
    validation = _read_list(tree / VALIDATION_LIST)
    testing = _read_list(tree / TESTING_LIST)
    chosen: dict[str, list[tuple[str, int]]] = {"train": [], "validation": [], "test": []}
    for label, word in enumerate(words):
        folder = tree / word
        if not folder.is_dir():
            available = sorted(
                p.name for p in tree.iterdir() if p.is_dir() and p.name != BACKGROUND_NOISE
            )
            raise FileNotFoundError(
                f"no folder for word {word!r} at {folder}; words in this tree: "
                f"{', '.join(available) or 'none'}"
            )
        names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".wav")
        if not names:
            raise ValueError(f"word folder {folder} holds no .wav files")
        for name in names:
            relative = f"{word}/{name}"
            if relative in validation:
                split = "validation"
            elif relative in testing:
                split = "test"
            else:
                split = "train"
            chosen[split].append((relative, label))
    on_disk = {relative for items in chosen.values() for relative, _ in items}
    for list_name, entries, split in (
        (VALIDATION_LIST, validation, "validation"),
        (TESTING_LIST, testing, "test"),
    ):
        _warn_unmatched(tree / list_name, entries, on_disk, words, tree)
        if not chosen[split]:
            raise ValueError(
                f"the {split} split would be empty: none of the {len(entries)} entries of "
                f"{tree / list_name} names a file of the chosen words ({', '.join(words)}) "
                f"under {tree}; entries must be <word>/<file>.wav relative to that folder"
            )
    return {
        split: LabelledFiles(
            tuple(tree / relative for relative, _ in sorted(items)),
            tuple(label for _, label in sorted(items)),
        )
        for split, items in chosen.items()
    }


def _missing_words(tree: Path | None, words: Sequence[str]) -> list[str]:
    if tree is None:
        return list(words)
    return [w for w in words if not (tree / w).is_dir()]


def speech_commands_status(
    words: Sequence[str] | str = DEFAULT_WORDS, root: str | os.PathLike | None = None
) -> tuple[Path | None, list[str]]:
    """(the tree found from ``root``, or None; the words it lacks), reading no audio and writing nothing."""
    words = resolve_words(words)
    base = Path(root).expanduser() if root is not None else data_home()
    tree = find_tree(base)
    if tree == base / FOLDER_NAME and ((tree / EXTRACTED_MARKER).exists() or (base / ARCHIVE_NAME).exists()):
        # gradlab extracted this tree: trust only words whose extraction finished.
        return tree, [w for w in words if w not in extracted_words(tree)]
    return tree, _missing_words(tree, words)


def prepare_speech_commands(
    *,
    words: Sequence[str] | str = DEFAULT_WORDS,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    url: str = SPEECH_COMMANDS_URL,
    sha256: str | None = SPEECH_COMMANDS_SHA256,
    progress: bool = True,
) -> Path:
    """Finds the tree, downloading and extracting the chosen words if needed.

    Args:
        words: Words that must be present.
        root: Where to look (see the module docstring); default gradlab's data folder.
        download: None: download only when ``root`` is None and words are
            missing; True: download when words are missing; False: never.
        url: Archive URL (tests point it at a local server).
        sha256: Expected SHA-256 of the archive, or None to skip verification.
        progress: Show progress bars.

    Returns:
        The tree's folder.

    Raises:
        FileNotFoundError: Words are missing and downloading is off.
        DownloadError: The download or extraction failed; the message says
            where gradlab looked and how to point it at an existing copy.
    """
    words = resolve_words(words)
    base = Path(root).expanduser() if root is not None else data_home()
    tree, missing = speech_commands_status(words, root)
    managed = base / FOLDER_NAME
    archive = base / ARCHIVE_NAME
    if not missing:
        return tree
    looked = escape(", ".join(str(c) for c in tree_candidates(base)))
    # A template: the command line names --data-dir and --download where Python callers read root= and download=.
    how_to_point = (
        f"If you have a copy, {{root}}<folder holding {VALIDATION_LIST}, or its parent> "
        f"or set {DATA_ENV}; a torchaudio download (<folder>/SpeechCommands/{FOLDER_NAME}) works too"
    )
    should_download = download if download is not None else root is None
    if not should_download:
        what = (
            f"no Speech Commands tree (with {VALIDATION_LIST})"
            if tree is None
            else escape(f"the tree at {tree} lacks the words {', '.join(missing)}")
        )
        raise DataNotFoundError(f"{what}; looked in {looked}. {how_to_point}, or {{download}}")
    try:
        download_file(url, archive, sha256=sha256, progress=progress)
        try:
            # Words already extracted keep their files (and so their cached features).
            done = extracted_words(managed)
            extract_speech_commands(archive, managed, [w for w in words if w not in done])
        except DownloadError:
            archive.unlink(missing_ok=True)  # unreadable: never reuse it
            raise
    except DownloadError as error:
        raise DataDownloadError(
            f"Speech Commands not found (looked in {looked}) and the download failed: {escape(error)}. "
            f"{how_to_point}, or retry when online (a partial download resumes)"
        ) from error
    return managed


def load_speech_commands(
    *,
    words: Sequence[str] | str = DEFAULT_WORDS,
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    url: str = SPEECH_COMMANDS_URL,
    sha256: str | None = SPEECH_COMMANDS_SHA256,
    features: FeatureConfig = FeatureConfig(),
    normalise: bool = True,
    cache_dir: str | os.PathLike | None = None,
    pad: str | None = None,
    delay: int | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    train_fraction: float = 1.0,
) -> DataSplits:
    """Speech Commands v0.02 as normalised MFCC tensors (task ``"classification"``).

    Args:
        words: Words to classify, or ``"all"`` (35); labels follow this order.
        root: Folder holding the tree (see the module docstring).
        download: Download policy (see ``prepare_speech_commands``).
        url: Archive URL.
        sha256: Expected archive SHA-256, or None.
        features: MFCC parameters.
        normalise: Standardise coefficients with training-split statistics.
        cache_dir: Feature cache folder (default ``<data folder>/features``).
        pad: Sets ``features.pad`` (``"end"`` or ``"start"``); None keeps it.
        delay: Sets ``features.delay`` (frames of silence after the clip);
            None keeps it.
        num_workers: Extraction processes (default all cores).
        progress: Show progress bars.
        train_fraction: Train on this class-stratified, nested fraction of
            the training clips (see ``gradlab.data.audio.training_subset``).

    Returns:
        ``DataSplits`` with ``x`` ``(N, T, n_mfcc)`` and ``y`` ``(N,)``.
    """
    words = resolve_words(words)
    features = with_silence(features, pad, delay)
    tree = prepare_speech_commands(
        words=words, root=root, download=download, url=url, sha256=sha256, progress=progress
    )
    splits = speech_commands_files(tree, words)
    return build_audio_splits(
        "speech-commands",
        splits,
        words,
        features,
        root=tree,
        normalise=normalise,
        cache_dir=cache_dir,
        num_workers=num_workers,
        progress=progress,
        info={
            # The official lists assign each speaker to one split.
            "split": "official",
            "split_rule": f"official {VALIDATION_LIST} / {TESTING_LIST}",
        },
        train_fraction=train_fraction,
    )
