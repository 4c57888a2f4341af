"""The Speech Commands loader on fake trees with the real naming scheme."""

import numpy as np
import pytest
import soundfile
import torch
from data_helpers import build_speech_commands_tree, fsdd_recordings, tone, write_wav

from gradlab.data import load_dataset, load_speech_commands
from gradlab.data.speech_commands import ALL_WORDS, FOLDER_NAME, speech_commands_files

WORDS = {"one": 6, "two": 5, "three": 4, "four": 3}
FAST = dict(num_workers=1, progress=False, download=False)


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "sc"
    expected = build_speech_commands_tree(root, WORDS, validation=1, test=2)
    return root, expected


def _relative(files, root):
    return [p.relative_to(root).as_posix() for p in files.paths]


def test_split_membership_equals_the_list_files(tree):
    root, expected = tree
    files = speech_commands_files(root, ["one", "two", "three"])
    listed_validation = (root / "validation_list.txt").read_text().split()
    listed_test = (root / "testing_list.txt").read_text().split()
    chosen = ("one/", "two/", "three/")
    wanted_validation = sorted(line for line in listed_validation if line.startswith(chosen))
    wanted_test = sorted(line for line in listed_test if line.startswith(chosen))
    assert _relative(files["validation"], root) == wanted_validation
    assert _relative(files["test"], root) == wanted_test
    on_disk = sorted(
        p.relative_to(root).as_posix()
        for w in ("one", "two", "three")
        for p in (root / w).glob("*.wav")
    )
    train = _relative(files["train"], root)
    assert train == sorted(set(on_disk) - set(listed_validation) - set(listed_test))
    assert not any(
        name.startswith(("four/", "_background_noise_/"))
        for split in files.values()
        for name in _relative(split, root)
    )
    for split in files.values():
        assert list(split.paths) == sorted(split.paths)
        for path, label in zip(split.paths, split.labels, strict=True):
            assert ["one", "two", "three"].index(path.parent.name) == label


def test_labels_follow_the_user_order(tree):
    root, _ = tree
    files = speech_commands_files(root, ["four", "one"])
    for path, label in zip(files["train"].paths, files["train"].labels, strict=True):
        assert {"four": 0, "one": 1}[path.parent.name] == label


def test_loads_hand_extracted_and_torchaudio_layouts(tmp_path, tree):
    root, _ = tree
    hand = load_speech_commands(root=root, cache_dir=tmp_path / "cache", **FAST)
    assert (len(hand.train), len(hand.validation), len(hand.test)) == (3 + 2 + 1, 3, 6)
    assert hand.train.x.shape[1:] == (32, 20) and hand.class_names == ("one", "two", "three")
    torchaudio_root = tmp_path / "ta"
    build_speech_commands_tree(
        torchaudio_root / "SpeechCommands" / FOLDER_NAME, WORDS, validation=1, test=2
    )
    via_torchaudio = load_dataset(
        "speech-commands", root=torchaudio_root, cache_dir=tmp_path / "cache", **FAST
    )
    assert via_torchaudio.info["root"] == str(torchaudio_root / "SpeechCommands" / FOLDER_NAME)
    assert torch.equal(hand.train.x, via_torchaudio.train.x)


def test_all_words_means_the_35(tree):
    assert len(ALL_WORDS) == 35 and "one" in ALL_WORDS
    root, _ = tree
    with pytest.raises(FileNotFoundError, match="'backward'"):
        speech_commands_files(root, "all")


def test_missing_root_names_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_speech_commands(root=tmp_path / "absent", **FAST)
    message = str(error.value)
    assert str(tmp_path / "absent" / "SpeechCommands" / FOLDER_NAME) in message
    assert "root=" in message and "download=True" in message


def test_missing_list_file(tree):
    root, _ = tree
    (root / "testing_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testing_list.txt"):
        speech_commands_files(root)


def test_word_without_folder_lists_available_words(tree):
    root, _ = tree
    with pytest.raises(FileNotFoundError, match="'five'.*four, one, three, two"):
        speech_commands_files(root, ["one", "five"])


def test_empty_class(tree):
    root, _ = tree
    (root / "zero").mkdir()
    with pytest.raises(ValueError, match="holds no .wav"):
        speech_commands_files(root, ["one", "zero"])


def test_bad_words_are_refused(tree):
    root, _ = tree
    for words in (["one", "one"], ["_background_noise_"], ["../one"], [], "one"):
        with pytest.raises(ValueError):
            speech_commands_files(root, words)


def test_undecodable_stereo_and_odd_rate_files_in_a_tree(tmp_path, tree):
    root, _ = tree
    (root / "one" / "ffffffff_nohash_0.wav").write_bytes(b"RIFF garbage")
    soundfile.write(
        root / "two" / "eeeeeeee_nohash_0.wav", np.stack([tone(300, 2.0, 44100)] * 2, axis=1), 44100
    )
    write_wav(root / "three" / "dddddddd_nohash_0.wav", tone(300, 0.5, 8000), rate=8000)
    with pytest.warns(RuntimeWarning, match="ffffffff_nohash_0.wav"):
        data = load_speech_commands(
            root=root, cache_dir=tmp_path / "cache", normalise=False, **FAST
        )
    assert len(data.train) == 6 + 2  # the broken file skipped, the other two kept
    assert data.info["splits"]["train"]["skipped"] == [str(root / "one" / "ffffffff_nohash_0.wav")]
    assert data.skipped == {"unreadable": ["one/ffffffff_nohash_0.wav"]}
    # The skip is remembered by the cache: a reload does not re-read, but says so again.
    with pytest.warns(RuntimeWarning, match="built without 1 files"):
        again = load_speech_commands(
            root=root, cache_dir=tmp_path / "cache", normalise=False, **FAST
        )
    assert again.info["splits"]["train"]["cache_hit"] and len(again.train) == 8
    assert again.skipped == data.skipped


def test_one_loud_wav_does_not_poison_the_dataset(tmp_path, tree):
    """A finite float WAV at 1e24 once made every feature of every split NaN."""
    root, expected = tree
    loud = root / "one" / "10adf00d_nohash_0.wav"
    soundfile.write(loud, tone(300, 0.5, 16000, amplitude=1e24), 16000, subtype="FLOAT")
    silent = next(name for name in expected["test"] if name.startswith("two/"))
    write_wav(root / silent, np.zeros(8000, np.float32))
    with (
        pytest.warns(RuntimeWarning, match="1 non_finite"),
        pytest.warns(RuntimeWarning, match="1 empty"),
    ):
        data = load_speech_commands(root=root, cache_dir=tmp_path / "cache", **FAST)
    assert data.skipped == {"empty": [silent], "non_finite": ["one/10adf00d_nohash_0.wav"]}
    assert (len(data.train), len(data.validation), len(data.test)) == (3 + 2 + 1, 3, 5)
    for split in (data.train, data.validation, data.test):
        assert torch.isfinite(split.x).all()
    assert np.isfinite(data.info["normalisation_std"]).all()


def test_fsdd_recordings_laid_out_as_speech_commands(tmp_path):
    """End to end on real speech, as the reference did: FSDD in a Speech Commands tree."""
    recordings = fsdd_recordings()
    root = tmp_path / "sc"
    validation, test = [], []
    for digit, word in ((1, "one"), (2, "two")):
        for path in sorted(recordings.glob(f"{digit}_theo_*.wav"))[:12]:
            take = int(path.stem.split("_")[2])
            name = f"{take:08x}_nohash_0.wav"
            audio, rate = soundfile.read(path, dtype="float32")
            write_wav(root / word / name, audio, rate=rate)
            (validation if take % 6 == 0 else test if take % 6 == 1 else []).append(
                f"{word}/{name}"
            )
    (root / "validation_list.txt").write_text("\n".join(validation) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    data = load_speech_commands(
        root=root, words=["one", "two"], cache_dir=tmp_path / "cache", **FAST
    )
    assert len(data.validation) == len(validation) and len(data.test) == len(test)
    assert len(data.train) + len(data.validation) + len(data.test) == 24


def test_list_entries_are_normalised_before_matching(tree):
    root, expected = tree
    validation = expected["validation"]
    written = [
        f"./{validation[0]}",
        validation[1].replace("/", "\\"),
        validation[2].replace("/", "//"),
    ]
    (root / "validation_list.txt").write_text("\n".join(written + validation[3:]) + "\n")
    files = speech_commands_files(root, ["one", "two", "three"])
    chosen = ("one/", "two/", "three/")
    assert _relative(files["validation"], root) == [v for v in validation if v.startswith(chosen)]
    assert not set(_relative(files["train"], root)) & set(validation)


def test_list_entries_matching_no_file_are_counted_in_a_warning(tree):
    root, expected = tree
    extra = ["one/0badc0de_nohash_0.wav", "one/0badc0df_nohash_0.wav", "Two/x.wav"]
    other_word = ["five/00000000_nohash_0.wav"]  # a word not chosen: not loaded, not counted
    lines = expected["validation"] + extra + other_word
    (root / "validation_list.txt").write_text("\n".join(lines) + "\n")
    with pytest.warns(RuntimeWarning, match=r"validation_list.txt: 3 of 6 entries .* no file"):
        files = speech_commands_files(root, ["one", "two", "three"])
    assert len(files["validation"].paths) == 3


@pytest.mark.parametrize("list_name", ["validation_list.txt", "testing_list.txt"])
def test_a_list_matching_nothing_is_an_error_before_anything_is_written(tmp_path, tree, list_name):
    root, expected = tree
    split = "validation" if list_name.startswith("validation") else "test"
    (root / list_name).write_text("".join(f"sub/{line}\n" for line in expected[split]))
    cache = tmp_path / "cache"
    with (
        pytest.warns(RuntimeWarning, match="match no file"),
        pytest.raises(ValueError, match=rf"the {split} split would be empty.*{list_name}"),
    ):
        load_speech_commands(root=root, cache_dir=cache, **FAST)
    assert not cache.exists()
