"""The FSDD loader on the shared real recordings."""

import re
import shutil

import numpy as np
import pytest
import torch
from data_helpers import fsdd_recordings

from gradlab.data import load_dataset, load_fsdd
from gradlab.data.fsdd import (
    DEFAULT_TEST_SPEAKER,
    SPEAKERS,
    find_fsdd_root,
    fsdd_files,
    unmatched_wav_names,
    validation_speaker,
)

SMALL = dict(
    split="takes",
    speakers=["theo", "jackson"],
    takes=[0, 1, 5, 6, 10, 11, 12],
    num_workers=1,
    progress=False,
)


def _take(path):
    return int(re.match(r"\d_[a-z]+_(\d+)\.wav", path.name)[1])


def _speaker(path):
    return re.match(r"\d_([a-z]+)_\d+\.wav", path.name)[1]


def _speakers(files):
    return {name: {_speaker(p) for p in split.paths} for name, split in files.items()}


def test_split_by_take_and_sorted_lists():
    recordings = fsdd_recordings()
    files = fsdd_files(recordings, split="takes")
    # The same files as before the speaker split existed, listed independently.
    names = sorted(p.name for p in recordings.glob("[123]_*_*.wav"))
    expected = {
        "test": [n for n in names if _take(recordings / n) < 5],
        "validation": [n for n in names if 5 <= _take(recordings / n) < 10],
        "train": [n for n in names if _take(recordings / n) >= 10],
    }
    assert {name: [p.name for p in f.paths] for name, f in files.items()} == expected
    # Speaker-dependent: every speaker is in every split.
    assert all(speakers == set(SPEAKERS) for speakers in _speakers(files).values())
    assert {len(f.paths) for f in (files["test"], files["validation"])} == {90}
    assert len(files["train"].paths) == 720
    assert all(_take(p) <= 4 for p in files["test"].paths)
    assert all(5 <= _take(p) <= 9 for p in files["validation"].paths)
    assert all(_take(p) >= 10 for p in files["train"].paths)
    for split in files.values():
        assert list(split.paths) == sorted(split.paths)
        for path, label in zip(split.paths, split.labels, strict=True):
            assert int(path.name[0]) == label + 1  # one, two, three -> 0, 1, 2


def test_labels_follow_the_given_order_and_digits_are_accepted():
    recordings = fsdd_recordings()
    by_name = fsdd_files(recordings, ["three", "one"], split="takes", speakers=["theo"])
    by_digit = fsdd_files(recordings, [3, "1"], split="takes", speakers=["theo"])
    assert by_name == by_digit
    for path, label in zip(by_name["train"].paths, by_name["train"].labels, strict=True):
        assert {"3": 0, "1": 1}[path.name[0]] == label
    with pytest.raises(ValueError, match="unknown FSDD word"):
        fsdd_files(recordings, ["eleven"])
    with pytest.raises(ValueError, match="twice"):
        fsdd_files(recordings, ["one", 1])
    with pytest.raises(ValueError, match="no FSDD recordings.*one"):
        fsdd_files(recordings, ["one"], speakers=["nobody"])


def test_speaker_split_holds_out_one_test_and_one_validation_speaker():
    recordings = fsdd_recordings()
    files = fsdd_files(recordings)
    assert _speakers(files) == {
        "test": {"theo"},
        "validation": {"yweweler"},
        "train": {"george", "jackson", "lucas", "nicolas"},
    }
    assert DEFAULT_TEST_SPEAKER == "theo" and validation_speaker("theo") == "yweweler"
    # All 50 takes of 3 words for each speaker; labels still follow the digit.
    assert [len(files[s].paths) for s in ("train", "validation", "test")] == [600, 150, 150]
    for split in files.values():
        assert list(split.paths) == sorted(split.paths)
        for path, label in zip(split.paths, split.labels, strict=True):
            assert int(path.name[0]) == label + 1
    everything = [p for split in files.values() for p in split.paths]
    assert sorted(everything) == sorted(recordings.glob("[123]_*_*.wav"))


def test_rotating_the_test_speaker_holds_out_each_speaker_once_per_role():
    recordings = fsdd_recordings()
    as_test, as_validation = [], []
    for speaker in SPEAKERS:
        files = fsdd_files(recordings, ["zero", "nine"], test_speaker=speaker)
        roles = _speakers(files)
        assert roles["test"] == {speaker}
        assert roles["validation"] == {validation_speaker(speaker)} != {speaker}
        assert roles["train"] == set(SPEAKERS) - roles["test"] - roles["validation"]
        as_test += roles["test"]
        as_validation += roles["validation"]
    assert sorted(as_test) == sorted(as_validation) == sorted(SPEAKERS)
    # The validation speaker is the next one alphabetically, wrapping around.
    assert validation_speaker("george") == "jackson" and validation_speaker("yweweler") == "george"
    # Keeping fewer speakers rotates among those kept.
    kept = fsdd_files(
        recordings, ["one"], test_speaker="lucas", speakers=["george", "lucas", "theo"], takes=[0]
    )
    assert _speakers(kept) == {"test": {"lucas"}, "validation": {"theo"}, "train": {"george"}}


def test_bad_split_options_say_what_is_wrong():
    recordings = fsdd_recordings()
    with pytest.raises(ValueError, match="unknown FSDD split 'random'"):
        fsdd_files(recordings, split="random")
    with pytest.raises(ValueError, match="unknown test speaker 'alice'.*george"):
        fsdd_files(recordings, test_speaker="alice")
    with pytest.raises(ValueError, match="split='speakers' only"):
        fsdd_files(recordings, split="takes", test_speaker="theo")
    with pytest.raises(ValueError, match="at least 3 speakers.*split='takes'"):
        fsdd_files(recordings, speakers=["theo", "jackson"])


def test_load_records_the_split_and_its_speakers(tmp_path):
    recordings = fsdd_recordings()
    options = dict(
        root=recordings, cache_dir=tmp_path, takes=[0, 5, 10], num_workers=1, progress=False
    )
    data = load_dataset("fsdd", test_speaker="george", **options)
    assert data.info["split"] == "speakers"
    assert data.info["speakers"] == {
        "train": ["lucas", "nicolas", "theo", "yweweler"],
        "validation": ["jackson"],
        "test": ["george"],
    }
    assert (len(data.train), len(data.validation), len(data.test)) == (36, 9, 9)
    by_take = load_fsdd(split="takes", **options)
    assert by_take.info["split"] == "takes" and "speaker-dependent" in by_take.info["split_rule"]
    assert len(by_take.test) == 18 and by_take.info["speakers"]["test"] == sorted(SPEAKERS)


def test_missing_root_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        find_fsdd_root(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "recordings") in str(error.value)
    assert "GRADLAB_FSDD" in str(error.value)


def test_small_subset_loads_normalised_with_train_statistics(tmp_path):
    recordings = fsdd_recordings()
    raw = load_fsdd(root=recordings, cache_dir=tmp_path, normalise=False, **SMALL)
    normalised = load_dataset("fsdd", root=recordings, cache_dir=tmp_path, **SMALL)
    assert normalised.info["splits"]["train"]["cache_hit"]  # second load reads the cache
    assert (len(raw.train), len(raw.validation), len(raw.test)) == (
        18,
        12,
        12,
    )  # 3 words x 2 speakers x (3, 2, 2) takes
    assert raw.train.x.shape[1:] == (32, 20) and raw.train.y.dtype == torch.int64
    assert normalised.seq_len == 32 and normalised.input_size == 20 and normalised.num_outputs == 3
    assert normalised.class_names == ("one", "two", "three")
    frames = raw.train.x.numpy().reshape(-1, 20).astype(np.float64)
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    np.testing.assert_allclose(normalised.info["normalisation_mean"], mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(normalised.info["normalisation_std"], std, rtol=1e-5)
    for split in ("train", "validation", "test"):
        expected = (getattr(raw, split).x.numpy() - mean) / std
        np.testing.assert_allclose(
            getattr(normalised, split).x.numpy(), expected, rtol=1e-4, atol=1e-4
        )
        assert torch.equal(getattr(raw, split).y, getattr(normalised, split).y)
    train_frames = normalised.train.x.reshape(-1, 20)
    assert torch.allclose(train_frames.mean(0), torch.zeros(20), atol=1e-4)
    assert torch.allclose(train_frames.std(0, unbiased=False), torch.ones(20), atol=1e-3)
    # Statistics come from train only: the test split is not exactly standardised.
    assert not torch.allclose(normalised.test.x.reshape(-1, 20).mean(0), torch.zeros(20), atol=1e-3)
    # Raw MFCCs are in the hundreds, as in the coursework.
    assert raw.train.x[..., 0].abs().max() > 100


def test_full_one_two_three_build_and_reload(tmp_path):
    recordings = fsdd_recordings()
    first = load_fsdd(root=recordings, cache_dir=tmp_path, num_workers=2, progress=False)
    again = load_fsdd(root=recordings, cache_dir=tmp_path, num_workers=2, progress=False)
    assert (len(first.train), len(first.validation), len(first.test)) == (600, 150, 150)
    assert (
        not first.info["splits"]["train"]["cache_hit"]
        and again.info["splits"]["train"]["cache_hit"]
    )
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)
    assert torch.bincount(first.test.y).tolist() == [50, 50, 50]
    assert first.skipped == again.skipped == {}  # every real recording is usable


def test_wavs_named_outside_the_scheme_are_counted_and_reported(tmp_path):
    recordings = fsdd_recordings()
    copy = tmp_path / "fsdd"
    copy.mkdir()
    for path in recordings.glob("*.wav"):
        (copy / path.name).symlink_to(path)
    source = recordings / "1_theo_10.wav"
    bad = ["1_theo_x.wav", "One_theo_3.wav", "1-theo-3.WAV"]
    for name in bad:
        shutil.copyfile(source, copy / name)
    (copy / "README.md").write_text("not audio, not counted")
    with pytest.warns(RuntimeWarning, match=r"skipped 3 WAV files .* \(first: 1-theo-3.WAV\)"):
        data = load_fsdd(root=copy, cache_dir=tmp_path / "cache", **SMALL)
    assert data.skipped == {"bad_name": sorted(bad)}
    assert unmatched_wav_names(recordings) == []  # the real recordings are all well named


def test_train_fraction_keeps_a_nested_class_stratified_subset(tmp_path):
    options = dict(SMALL, split="speakers", speakers=None, takes=list(range(12)), root=fsdd_recordings(),
                   cache_dir=tmp_path, normalise=True)
    full = load_fsdd(**options)
    half = load_fsdd(**options, train_fraction=0.5)
    quarter = load_fsdd(**options, train_fraction=0.25)
    counts = torch.bincount(full.train.y)
    assert torch.equal(torch.bincount(half.train.y), torch.round(counts * 0.5).long())
    assert torch.equal(torch.bincount(quarter.train.y), torch.round(counts * 0.25).long())
    # Normalisation statistics come from the kept clips alone: undo it and compare the raw features.
    raw = load_fsdd(**dict(options, normalise=False))
    raw_half = load_fsdd(**dict(options, normalise=False), train_fraction=0.5)
    kept = [next(i for i in range(len(raw.train)) if torch.equal(raw.train.x[i], row)) for row in raw_half.train.x]
    assert len(set(kept)) == len(kept)
    raw_quarter = load_fsdd(**dict(options, normalise=False), train_fraction=0.25)
    in_half = {tuple(row.flatten()[:5].tolist()) for row in raw_half.train.x}
    assert all(tuple(row.flatten()[:5].tolist()) in in_half for row in raw_quarter.train.x)  # nested
    flat = raw_half.train.x.reshape(-1, raw_half.train.x.shape[-1]).double()
    mean, std = flat.mean(0), flat.std(0, unbiased=False)
    np.testing.assert_allclose(half.info["normalisation_mean"], mean.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(half.info["normalisation_std"], std.numpy(), rtol=1e-5, atol=1e-5)
    assert half.info["splits"]["train"] == {**half.info["splits"]["train"], "size": len(half.train), "fraction": 0.5}
    for split in ("validation", "test"):  # only the training split shrinks
        assert torch.equal(getattr(raw_half, split).x, getattr(raw, split).x)
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
        load_fsdd(**options, train_fraction=1.5)


def test_train_fraction_is_refused_for_synthetic_tasks():
    from gradlab.config import DataConfig

    with pytest.raises(ValueError, match="--n-train"):
        DataConfig("distance", train_fraction=0.5)
    with pytest.raises(ValueError, match="at most 1"):
        DataConfig("fsdd", train_fraction=2)
    assert DataConfig("fsdd", train_fraction=1).train_fraction == 1.0
