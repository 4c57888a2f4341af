"""Padding the word to the start or end of its clip, and silence appended after it."""

import librosa
import numpy as np
import pytest
import scipy.fft
import soundfile
import torch
from data_helpers import build_speech_commands_tree, fsdd_recordings
from scipy.signal import resample_poly

from gradlab.data import FeatureConfig, load_dataset, load_speech_commands
from gradlab.data.features import load_clip, mfcc
from gradlab.data.silence import clip_with_silence

HOP, N_FFT, CLIP = 512, 2048, 16_000
#: With centred frames, frame t sees samples [t*HOP - N_FFT/2, t*HOP + N_FFT/2): the
#: first frame wholly after a clip of CLIP samples is ceil((CLIP + N_FFT/2) / HOP).
FIRST_SILENT_FRAME = -(-(CLIP + N_FFT // 2) // HOP)  # 34


def _audio(name: str) -> np.ndarray:
    """An FSDD recording at 16 kHz, read and resampled independently of gradlab."""
    audio, rate = soundfile.read(fsdd_recordings() / name, dtype="float32")
    assert rate == 8000
    return resample_poly(audio, 2, 1).astype(np.float32)


def _silence_mfcc(clip: np.ndarray) -> np.ndarray:
    """The MFCC of a frame of zeros within ``clip``: librosa floors the dB mel
    spectrogram at 80 dB below the clip's loudest bin (top_db), so every mel band
    sits at that floor and the orthonormal DCT keeps only coefficient 0."""
    power = librosa.feature.melspectrogram(y=clip, sr=16000, n_fft=N_FFT, hop_length=HOP)
    floor = max(-100.0, 10 * np.log10(max(power.max(), 1e-10)) - 80.0)
    return scipy.fft.dct(np.full(128, floor), type=2, norm="ortho")[:20]


def test_pad_end_and_start_place_the_word_and_delay_appends_zeros():
    audio = _audio("2_nicolas_7.wav")
    length = audio.shape[0]
    assert length < CLIP
    end = clip_with_silence(audio, CLIP, pad="end")
    start = clip_with_silence(audio, CLIP, pad="start")
    np.testing.assert_array_equal(end[:length], audio)
    assert not end[length:].any()
    np.testing.assert_array_equal(start[CLIP - length :], audio)
    assert not start[: CLIP - length].any()
    delayed = clip_with_silence(audio, CLIP, pad="start", delay_samples=16 * HOP)
    assert delayed.shape == (CLIP + 16 * HOP,)
    np.testing.assert_array_equal(delayed[:CLIP], start)
    assert not delayed[CLIP:].any()
    # A recording longer than the clip is cut to its start, wherever the padding goes.
    long = _audio("3_lucas_7.wav")  # 1.31 s
    assert long.shape[0] > CLIP
    np.testing.assert_array_equal(clip_with_silence(long, CLIP, pad="start"), long[:CLIP])
    np.testing.assert_array_equal(clip_with_silence(long, CLIP, pad="end"), long[:CLIP])
    with pytest.raises(ValueError, match="pad must be one of"):
        clip_with_silence(audio, CLIP, pad="middle")


def test_delay_adds_exactly_k_frames_and_bad_values_are_refused():
    for delay in (0, 1, 16, 128):
        assert FeatureConfig(delay=delay).num_frames == 32 + delay
    assert FeatureConfig(hop_length=128, delay=10).num_frames == 126 + 10
    assert FeatureConfig(delay=7).clip_frames == 32
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="delay must be an int >= 0"):
            FeatureConfig(delay=bad)
    with pytest.raises(ValueError, match=r"pad must be one of \('end', 'start'\)"):
        FeatureConfig(pad="both")


@pytest.mark.parametrize("pad", ["end", "start"])
def test_delayed_mfcc_on_a_real_clip(pad):
    path = fsdd_recordings() / "1_jackson_12.wav"
    length = _audio(path.name).shape[0]
    plain_config, delayed_config = FeatureConfig(pad=pad), FeatureConfig(pad=pad, delay=24)
    clip = load_clip(path, plain_config)
    plain = mfcc(clip, plain_config)  # (32, 20)
    delayed = mfcc(load_clip(path, delayed_config), delayed_config)  # (56, 20)
    assert plain.shape == (32, 20) and delayed.shape == (56, 20)
    # The clip's own frames do not change: librosa already pads a clip's end with zeros.
    np.testing.assert_allclose(delayed[:32], plain, rtol=1e-6, atol=1e-4)
    # Frames wholly inside the appended silence are the MFCC of silence for this clip.
    silence = _silence_mfcc(clip)
    assert abs(silence[0]) > 100 and not silence[1:].any()
    np.testing.assert_allclose(
        delayed[FIRST_SILENT_FRAME:], np.tile(silence, (56 - FIRST_SILENT_FRAME, 1)), atol=1e-3
    )
    last_audio = length - 1 if pad == "end" else CLIP - 1
    # Frames 32 and 33 overlap the clip's last 1,024 samples: silence only if those are.
    for frame in (32, 33):
        sees_audio = frame * HOP - N_FFT // 2 <= last_audio
        assert sees_audio == (not np.allclose(delayed[frame], silence, atol=1e-3))
    if pad == "start":
        # Silence first: frames wholly before the word are silence, the loudest frame is late.
        first_audio = CLIP - length
        before = [t for t in range(32) if t * HOP + N_FFT // 2 <= first_audio]
        assert before, "the recording should be short enough to leave silent frames"
        np.testing.assert_allclose(plain[before], np.tile(silence, (len(before), 1)), atol=1e-3)
        assert plain[:, 0].argmax() * HOP >= first_audio
    else:
        assert plain[:, 0].argmax() * HOP <= length


def test_load_fsdd_delay_keeps_the_normalisation_and_caches_each_delay(tmp_path):
    options = dict(
        root=fsdd_recordings(), cache_dir=tmp_path, takes=[3, 9], num_workers=1, progress=False
    )
    plain = load_dataset("fsdd", **options)
    delayed = load_dataset("fsdd", delay=16, **options)
    assert delayed.seq_len == 48 and delayed.train.x.shape[1:] == (48, 20)
    assert delayed.info["features"]["delay"] == 16 and delayed.info["features"]["pad"] == "end"
    assert delayed.info["normalisation_mean"] == plain.info["normalisation_mean"]
    assert delayed.info["normalisation_std"] == plain.info["normalisation_std"]
    for split in ("train", "validation", "test"):
        cached = (plain.info["splits"][split], delayed.info["splits"][split])
        assert cached[0]["cache_file"] != cached[1]["cache_file"] and not cached[1]["cache_hit"]
        np.testing.assert_allclose(
            getattr(delayed, split).x[:, :32], getattr(plain, split).x, rtol=1e-5, atol=1e-5
        )
        assert torch.equal(getattr(delayed, split).y, getattr(plain, split).y)
    # The silent tail, undone from the normalisation, is each clip's silence MFCC.
    mean = np.array(plain.info["normalisation_mean"], dtype=np.float32)
    std = np.array(plain.info["normalisation_std"], dtype=np.float32)
    raw_tail = delayed.test.x[:, FIRST_SILENT_FRAME:].numpy() * std + mean  # (N, 14, 20)
    config = FeatureConfig()
    test_files = sorted(
        p for p in fsdd_recordings().glob("[123]_theo_*.wav") if p.stem.split("_")[2] in {"3", "9"}
    )
    assert len(test_files) == len(delayed.test)
    for tail, path in zip(raw_tail, test_files, strict=True):
        expected = np.tile(_silence_mfcc(load_clip(path, config)), (tail.shape[0], 1))
        np.testing.assert_allclose(tail, expected, rtol=1e-4, atol=2e-3)
    # Padding at the start changes the features and is recorded.
    started = load_dataset("fsdd", pad="start", **options)
    assert started.info["features"]["pad"] == "start" and started.seq_len == 32
    assert not started.info["splits"]["test"]["cache_hit"]  # pad is part of the cache key
    assert not torch.allclose(started.train.x, plain.train.x)


def test_speech_commands_takes_pad_and_delay(tmp_path):
    root = tmp_path / "sc"
    build_speech_commands_tree(root, {"one": 4, "two": 4}, validation=1, test=1)
    data = load_speech_commands(
        root=root, words=["one", "two"], cache_dir=tmp_path / "cache", pad="start", delay=5,
        download=False, num_workers=1, progress=False,
    )  # fmt: skip
    assert data.seq_len == 37 and data.train.x.shape[1:] == (37, 20)
    assert data.info["features"]["pad"] == "start" and data.info["split"] == "official"
