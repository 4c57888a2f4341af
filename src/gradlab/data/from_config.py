"""From a :class:`gradlab.config.DataConfig` to loaded :class:`DataSplits`, with checks before any reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradlab.config import AUDIO_DATASETS, DataConfig
from gradlab.data import DataSplits, DownloadError, FeatureConfig, load_dataset
from gradlab.data.advice import DataNotFoundError, escape, phrase

#: The offline alternatives to a missing audio dataset, as the command line states them.
OFFLINE_HINT = phrase("{offline}", flags=True)


def loader_options(data: DataConfig) -> dict[str, Any]:
    """The keyword arguments of ``gradlab.data.load_dataset`` that ``data`` describes."""
    if data.is_audio:
        features = FeatureConfig(
            n_mfcc=data.n_mfcc, n_fft=data.n_fft, hop_length=data.hop_length, amplitude_scale=data.amplitude_scale
        )
        options: dict[str, Any] = {"words": data.words, "features": features, "normalise": data.normalise,
                                   "cache_dir": data.cache_dir, "pad": data.pad, "delay": data.delay,
                                   "train_fraction": data.train_fraction}
        if data.data_dir is not None:
            options["root"] = data.data_dir
        if data.dataset == "speech-commands":
            options["download"] = data.download
        else:
            options.update(split=data.split, test_speaker=data.test_speaker)
            if data.takes is not None:
                options["takes"] = data.takes
        return options
    options = {"seed": data.data_seed}
    for name in ("seq_len", "n_train", "n_validation", "n_test"):
        if getattr(data, name) is not None:
            options[name] = getattr(data, name)
    if data.dataset == "distance":
        options["noise_std"] = data.noise_std
        if data.distance is not None:
            options["distance"] = data.distance
    return options


def load_data(data: DataConfig, *, progress: bool = False, num_workers: int | None = None) -> DataSplits:
    """Load the dataset ``data`` describes (features computed once and cached)."""
    options = loader_options(data)
    if data.is_audio:
        options.update(num_workers=num_workers, progress=progress)
    return load_dataset(data.dataset, **options)


def check_data_inputs(data: DataConfig) -> None:
    """Check words and the data folder before anything is read.

    Raises:
        ValueError: an unknown word, or a data folder that does not exist.
    """
    if data.dataset == "fsdd":
        from gradlab.data.fsdd import resolve_digits

        resolve_digits(data.words)
    elif data.dataset == "speech-commands":
        from gradlab.data.speech_commands import ALL_WORDS, resolve_words

        resolve_words(data.words)
        unknown = [word for word in data.words if word not in ALL_WORDS]
        if unknown:
            raise ValueError(f"unknown Speech Commands word(s) {unknown}; v0.02 has {', '.join(ALL_WORDS)}")
    if data.data_dir is not None and not Path(data.data_dir).expanduser().is_dir():
        raise ValueError(f"data directory {data.data_dir!r} does not exist (or is not a folder)")


def load_checked(data: DataConfig, *, progress: bool) -> DataSplits:
    """Load ``data``, turning a missing or undownloadable dataset into an error naming the offline choices."""
    check_data_inputs(data)
    try:
        return load_data(data, progress=progress)
    except (FileNotFoundError, DownloadError) as error:
        if data.dataset in AUDIO_DATASETS:
            raise _with_offline_choices(error) from error
        raise


def locate_data(data: DataConfig) -> str:
    """Where ``data``'s recordings are, checked without reading, downloading or caching anything.

    Returns:
        One line for a sweep's plan: the folder found, what would be downloaded, or that the data is generated.

    Raises:
        ValueError: as :func:`check_data_inputs`.
        DataNotFoundError: the recordings are missing and would not be downloaded (naming the offline choices).
    """
    check_data_inputs(data)
    if data.dataset == "fsdd":
        from gradlab.data.fsdd import find_fsdd_root

        try:
            return f"fsdd: recordings in {find_fsdd_root(data.data_dir)}"
        except FileNotFoundError as error:
            raise _with_offline_choices(error) from error
    if data.dataset == "speech-commands":
        from gradlab.data.speech_commands import prepare_speech_commands, speech_commands_status

        tree, missing = speech_commands_status(data.words, data.data_dir)
        if not missing:
            return f"speech-commands: tree at {tree}"
        if data.download if data.download is not None else data.data_dir is None:
            return f"speech-commands: the words {', '.join(missing)} would be downloaded (about 2.3 GB once)"
        try:  # downloading is off: the loader's own error says where it looked
            prepare_speech_commands(words=data.words, root=data.data_dir, download=False, progress=False)
        except FileNotFoundError as error:
            raise _with_offline_choices(error) from error
        return f"speech-commands: tree at {tree}"
    return f"{data.dataset}: generated in memory from data_seed {data.data_seed}"


def _with_offline_choices(error: BaseException) -> DataNotFoundError:
    """``error`` (a loader's advice, in arguments or in both forms) followed by the offline choices."""
    template = getattr(error, "template", None) or escape(str(error))
    return DataNotFoundError(template + "\n{offline}")
