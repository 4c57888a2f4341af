"""MFCC extraction, the feature cache and normalisation."""

import dataclasses
import os
import warnings

import librosa
import numpy as np
import pytest
import soundfile
from data_helpers import fsdd_recordings, tone, write_wav
from scipy.signal import resample_poly

from gradlab.data import FeatureConfig
from gradlab.data import audio as audio_module
from gradlab.data.audio import LabelledFiles, cached_features
from gradlab.data.cache import load_arrays, make_key, save_arrays
from gradlab.data.features import UnusableAudio, extract_features, load_clip, mfcc


def test_default_config_gives_32_frames_of_20():
    config = FeatureConfig()
    assert (config.num_frames, config.n_mfcc, config.clip_samples) == (32, 20, 16000)
    assert dataclasses.replace(config, hop_length=128).num_frames == 126
    with pytest.raises(ValueError, match="hop_length"):
        FeatureConfig(hop_length=0)


def test_mfcc_equals_librosa_on_the_padded_clip(tmp_path):
    audio = tone(440, 0.6, 16000)
    path = write_wav(tmp_path / "a.wav", audio)
    config = FeatureConfig()
    ours = mfcc(load_clip(path, config), config)
    decoded, _ = soundfile.read(path, dtype="float32")
    padded = np.pad(decoded, (0, 16000 - decoded.size))
    reference = librosa.feature.mfcc(y=padded, sr=16000, n_mfcc=20, n_fft=2048, hop_length=512).T
    assert ours.shape == (32, 20) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-3)


def test_every_parameter_reaches_librosa(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(300, 0.4, 16000))
    config = FeatureConfig(
        sample_rate=16000, clip_seconds=0.5, n_mfcc=13, n_fft=512, hop_length=160, n_mels=40
    )
    ours = mfcc(load_clip(path, config), config)
    decoded, _ = soundfile.read(path, dtype="float32")
    padded = np.pad(decoded, (0, 8000 - decoded.size))
    reference = librosa.feature.mfcc(
        y=padded, sr=16000, n_mfcc=13, n_fft=512, hop_length=160, n_mels=40
    ).T
    assert ours.shape == (config.num_frames, 13) == (51, 13)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-3)


def test_resampling_keeps_the_pitch(tmp_path):
    path = write_wav(tmp_path / "low.wav", tone(500, 1.0, 8000), rate=8000)
    clip = load_clip(path, FeatureConfig())
    assert clip.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(clip[1000:15000]))
    peak_hz = np.argmax(spectrum) * 16000 / 14000
    assert abs(peak_hz - 500) < 2


def test_stereo_is_averaged_and_long_clips_are_cut(tmp_path):
    left = tone(440, 2.0, 16000)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="FLOAT")
    clip = load_clip(path, FeatureConfig())
    assert clip.shape == (16000,)  # 2 s cut to 1 s, no crash
    np.testing.assert_allclose(clip, 0.5 * left[:16000], atol=1e-6)


def test_amplitude_scale_reproduces_int16_reading(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(440, 0.5, 16000))
    scaled = load_clip(path, FeatureConfig(amplitude_scale=32768.0))
    as_int16, _ = soundfile.read(path, dtype="int16")
    np.testing.assert_allclose(scaled[: as_int16.size], as_int16, atol=1e-2)


def test_undecodable_file_is_skipped_counted_and_warned_once(tmp_path):
    good = [write_wav(tmp_path / f"g{i}.wav", tone(300 + i, 0.2, 16000)) for i in range(3)]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav file")
    paths = [good[0], bad, good[1], good[2]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = extract_features(paths, FeatureConfig(), num_workers=1, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "broken.wav" in messages[0] and "1 of 4" in messages[0]
    assert result.ok.tolist() == [True, False, True, True]
    assert [(f.path, f.reason) for f in result.failures] == [(str(bad), "unreadable")]
    assert np.all(result.features[1] == 0) and np.any(result.features[0] != 0)


def test_parallel_extraction_equals_serial():
    recordings = fsdd_recordings()
    paths = sorted(recordings.glob("1_theo_*.wav"))[:40]
    serial = extract_features(paths, FeatureConfig(), num_workers=1, progress=False)
    parallel = extract_features(paths, FeatureConfig(), num_workers=2, progress=False)
    np.testing.assert_array_equal(serial.features, parallel.features)


def test_array_store_round_trip_and_corruption(tmp_path):
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.array([1, 2, 3])}
    path = tmp_path / "entry.npz"
    save_arrays(path, "k1", arrays)
    loaded = load_arrays(path, "k1")
    assert loaded is not None and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    assert not list(tmp_path.glob("*.tmp"))  # temp file was moved into place
    with pytest.warns(UserWarning, match="another key"):
        assert load_arrays(path, "k2") is None
    # Same valid container, tampered values: only the checksum catches it.
    with np.load(path) as archive:
        tampered = {name: archive[name] for name in archive.files}
    tampered["x"] = tampered["x"] + 1
    np.savez(path, **tampered)
    with pytest.warns(UserWarning, match="checksum"):
        assert load_arrays(path, "k1") is None
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        assert load_arrays(path, "k1") is None
    assert make_key({"a": 1, "b": [1, 2]}) == make_key({"b": [1, 2], "a": 1})


@pytest.fixture()
def small_files(tmp_path):
    paths = tuple(
        write_wav(tmp_path / "audio" / f"c{i}.wav", tone(200 + 50 * i, 0.3, 16000))
        for i in range(4)
    )
    return tmp_path / "audio", LabelledFiles(paths, (0, 1, 0, 1))


def _counting_extractor(monkeypatch):
    calls = []
    real = audio_module.extract_features

    def counting(paths, config, **options):
        calls.append(len(paths))
        return real(paths, config, **options)

    monkeypatch.setattr(audio_module, "extract_features", counting)
    return calls


def test_cache_hit_is_identical_and_does_not_extract(tmp_path, small_files, monkeypatch):
    root, files = small_files
    calls = _counting_extractor(monkeypatch)
    options = dict(root=root, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    x1, y1, info1 = cached_features("toy", "train", files, ["a", "b"], FeatureConfig(), **options)
    x2, y2, info2 = cached_features("toy", "train", files, ["a", "b"], FeatureConfig(), **options)
    assert calls == [4]
    assert not info1["cache_hit"] and info2["cache_hit"]
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert y1.tolist() == [0, 1, 0, 1] and x1.shape == (4, 32, 20)


@pytest.mark.parametrize(
    "change",
    [
        "n_mfcc",
        "hop_length",
        "n_fft",
        "n_mels",
        "clip_seconds",
        "sample_rate",
        "split",
        "labels",
        "file",
    ],
)
def test_any_change_misses_the_cache(tmp_path, small_files, monkeypatch, change):
    root, files = small_files
    options = dict(root=root, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    cached_features("toy", "train", files, ["a", "b"], FeatureConfig(), **options)
    calls = _counting_extractor(monkeypatch)
    config, split = FeatureConfig(), "train"
    if change in ("n_mfcc", "hop_length", "n_fft", "n_mels"):
        config = dataclasses.replace(config, **{change: getattr(config, change) // 2})
    elif change == "clip_seconds":
        config = dataclasses.replace(config, clip_seconds=0.5)
    elif change == "sample_rate":
        config = dataclasses.replace(config, sample_rate=8000)
    elif change == "split":
        split = "test"
    elif change == "labels":
        files = LabelledFiles(files.paths, (1, 0, 1, 0))
    else:  # rewrite one file with different content and size
        write_wav(files.paths[2], tone(999, 0.5, 16000))
    x, _, info = cached_features("toy", split, files, ["a", "b"], config, **options)
    assert calls == [4] and not info["cache_hit"]
    assert x.shape == (4, config.num_frames, config.n_mfcc)


def test_corrupt_cache_file_is_rebuilt(tmp_path, small_files, monkeypatch):
    root, files = small_files
    options = dict(root=root, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    x1, _, info = cached_features("toy", "train", files, ["a", "b"], FeatureConfig(), **options)
    cache_file = info["cache_file"]
    with open(cache_file, "r+b") as handle:  # truncate it, as a crash mid-write would
        handle.truncate(200)
    calls = _counting_extractor(monkeypatch)
    with pytest.warns(UserWarning, match="rebuilding"):
        x2, _, info2 = cached_features(
            "toy", "train", files, ["a", "b"], FeatureConfig(), **options
        )
    assert calls == [4] and not info2["cache_hit"]
    np.testing.assert_array_equal(x1, x2)
    _, _, info3 = cached_features("toy", "train", files, ["a", "b"], FeatureConfig(), **options)
    assert info3["cache_hit"]


def _float_wav(path, audio, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, rate, subtype="FLOAT")
    return path


def test_loud_float_wav_is_skipped_as_non_finite_not_poisoning_the_rest(tmp_path):
    good = write_wav(tmp_path / "good.wav", tone(300, 0.5, 16000))
    loud = _float_wav(tmp_path / "loud.wav", tone(300, 0.5, 16000, amplitude=1e24))
    assert np.isfinite(soundfile.read(loud)[0]).all()  # the file itself is finite
    with pytest.warns(RuntimeWarning, match=r"1 non_finite.*loud\.wav"):
        result = extract_features([good, loud], FeatureConfig(), num_workers=1, progress=False)
    assert result.ok.tolist() == [True, False]
    assert [(f.path, f.reason) for f in result.failures] == [(str(loud), "non_finite")]
    assert "1e+24" in result.failures[0].detail  # says why: the amplitude
    assert np.isfinite(result.features).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_a_float_wav_holding_nan_or_inf_is_skipped_as_non_finite(tmp_path, bad):
    good = write_wav(tmp_path / "good.wav", tone(300, 0.5, 16000))
    audio = tone(300, 0.5, 16000)
    audio[100:110] = bad
    poisoned = _float_wav(tmp_path / "poisoned.wav", audio)
    with pytest.warns(RuntimeWarning, match=r"1 non_finite.*poisoned\.wav"):
        result = extract_features([good, poisoned], FeatureConfig(), num_workers=1, progress=False)
    assert [(f.path, f.reason) for f in result.failures] == [(str(poisoned), "non_finite")]
    assert "10 of 8000 samples are NaN or infinite" in result.failures[0].detail
    assert result.ok.tolist() == [True, False] and np.isfinite(result.features).all()


def test_silent_and_zero_length_clips_are_skipped_as_empty(tmp_path):
    good = write_wav(tmp_path / "good.wav", tone(300, 0.5, 16000))
    silent = write_wav(tmp_path / "silent.wav", np.zeros(8000, np.float32))
    no_frames = write_wav(tmp_path / "no_frames.wav", np.zeros(0, np.float32))
    paths = [silent, good, no_frames]
    with pytest.warns(RuntimeWarning, match="2 empty"):
        result = extract_features(paths, FeatureConfig(), num_workers=1, progress=False)
    assert result.ok.tolist() == [False, True, False]
    assert {f.path: f.reason for f in result.failures} == {
        str(silent): "empty",
        str(no_frames): "empty",
    }


def test_normalisation_refuses_non_finite_statistics():
    x = np.ones((3, 4, 2), dtype=np.float32)
    x[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"not finite \(1 of 3 examples"):
        audio_module.normalisation_stats(x)
    x[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        audio_module.normalisation_stats(x)


def test_absurd_sample_rate_is_refused_before_resampling(tmp_path):
    # A header claiming 1 Hz: resampling all of it to 16 kHz once asked for 11.9 GiB.
    path = _float_wav(tmp_path / "one_hz.wav", tone(0.1, 100.0, 1), rate=1)
    with pytest.raises(UnusableAudio, match=r"1 Hz; accepted rates are 1000-384000 Hz") as error:
        load_clip(path, FeatureConfig())
    assert error.value.reason == "unreadable"
    with pytest.warns(RuntimeWarning, match="1 unreadable"):
        result = extract_features([path], FeatureConfig(), num_workers=1, progress=False)
    assert [f.reason for f in result.failures] == ["unreadable"]


def test_only_the_clip_is_read_and_resampling_it_equals_resampling_the_whole_file(tmp_path):
    rate = 44100
    audio = tone(440, 30.0, rate) + tone(1234, 30.0, rate, amplitude=0.2)
    path = _float_wav(tmp_path / "long.wav", audio, rate=rate)
    reads = []
    real_read = soundfile.SoundFile.read

    def recording_read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return real_read(self, frames, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(soundfile.SoundFile, "read", recording_read)
        clip = load_clip(path, FeatureConfig())
    assert len(reads) == 1 and 0 < reads[0] < 2 * rate  # 1 s of 30, plus the filter's reach
    whole = resample_poly(audio.astype(np.float64), 160, 441)[:16000]
    np.testing.assert_allclose(clip, whole, rtol=0, atol=1e-6)


def test_same_size_and_mtime_but_new_content_misses_the_cache(tmp_path, small_files, monkeypatch):
    root, files = small_files
    options = dict(root=root, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    x1, _, _ = cached_features("toy", "train", files, ["a", "b"], FeatureConfig(), **options)
    target = files.paths[1]
    before = target.stat()
    write_wav(target, tone(777, 0.3, 16000))  # same length, so the same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    calls = _counting_extractor(monkeypatch)
    x2, _, info = cached_features("toy", "train", files, ["a", "b"], FeatureConfig(), **options)
    assert calls == [4] and not info["cache_hit"]
    fresh = mfcc(load_clip(target, FeatureConfig()), FeatureConfig())
    np.testing.assert_array_equal(x2[1], fresh)
    assert not np.array_equal(x1[1], x2[1])


def test_cache_hit_reports_and_warns_about_files_skipped_when_it_was_built(tmp_path, small_files):
    root, files = small_files
    loud = _float_wav(root / "loud.wav", tone(300, 0.3, 16000, amplitude=1e24))
    silent = write_wav(root / "silent.wav", np.zeros(4000, np.float32))
    files = LabelledFiles(files.paths + (loud, silent), files.labels + (0, 1))
    options = dict(root=root, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    with pytest.warns(RuntimeWarning, match="skipped 2 of 6"):
        _, _, first = cached_features("toy", "train", files, ["a", "b"], FeatureConfig(), **options)
    with pytest.warns(RuntimeWarning, match=r"built without 2 files \(1 empty, 1 non_finite\)"):
        x2, _, again = cached_features(
            "toy", "train", files, ["a", "b"], FeatureConfig(), **options
        )
    assert again["cache_hit"] and x2.shape[0] == 4 and np.isfinite(x2).all()
    expected = {"empty": ["silent.wav"], "non_finite": ["loud.wav"]}
    assert first["skipped_by_reason"] == again["skipped_by_reason"] == expected
    assert again["skipped"] == [str(loud), str(silent)]


def test_a_split_left_empty_by_skipping_is_an_error(tmp_path, small_files):
    root, files = small_files
    silent = write_wav(root / "silent.wav", np.zeros(4000, np.float32))
    splits = {
        "train": files,
        "validation": LabelledFiles((silent,), (0,)),
        "test": LabelledFiles(files.paths[:2], files.labels[:2]),
    }
    with (
        pytest.warns(RuntimeWarning, match="1 empty"),
        pytest.raises(ValueError, match=r"validation split is empty \(all 1 files .* skipped"),
    ):
        audio_module.build_audio_splits(
            "toy", splits, ["a", "b"], FeatureConfig(), root=root,
            cache_dir=tmp_path / "cache", num_workers=1, progress=False,
        )  # fmt: skip
