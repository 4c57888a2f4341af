"""The FSDD loader on the shared real recordings."""

import re
import shutil

import numpy as np
import pytest
import torch
from data_helpers import fsdd_recordings

from gradlab.data import load_dataset, load_fsdd
from gradlab.data.fsdd import find_fsdd_root, fsdd_files, unmatched_wav_names

SMALL = dict(
    speakers=["theo", "jackson"], takes=[0, 1, 5, 6, 10, 11, 12], num_workers=1, progress=False
)


def _take(path):
    return int(re.match(r"\d_[a-z]+_(\d+)\.wav", path.name)[1])


def test_split_by_take_and_sorted_lists():
    files = fsdd_files(fsdd_recordings())
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
    by_name = fsdd_files(recordings, ["three", "one"], speakers=["theo"])
    by_digit = fsdd_files(recordings, [3, "1"], speakers=["theo"])
    assert by_name == by_digit
    for path, label in zip(by_name["train"].paths, by_name["train"].labels, strict=True):
        assert {"3": 0, "1": 1}[path.name[0]] == label
    with pytest.raises(ValueError, match="unknown FSDD word"):
        fsdd_files(recordings, ["eleven"])
    with pytest.raises(ValueError, match="twice"):
        fsdd_files(recordings, ["one", 1])
    with pytest.raises(ValueError, match="no FSDD recordings.*one"):
        fsdd_files(recordings, ["one"], speakers=["nobody"])


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
    assert (len(first.train), len(first.validation), len(first.test)) == (720, 90, 90)
    assert (
        not first.info["splits"]["train"]["cache_hit"]
        and again.info["splits"]["train"]["cache_hit"]
    )
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)
    assert torch.bincount(first.test.y).tolist() == [30, 30, 30]
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
