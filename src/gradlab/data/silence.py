"""Where a word sits in its clip, and silence appended after it.

Two controls for experiments on real audio, applied to the waveform before
feature extraction, so a network sees the MFCC of silence rather than
made-up feature values:

- ``pad``: ``"end"`` puts the word first and the silence that fills the clip
  after it (the coursework's layout); ``"start"`` puts the silence first and
  the word at the end of the clip. A recording longer than the clip is cut to
  its first ``clip_samples`` either way, so the two differ only for shorter
  recordings.
- ``delay``: ``K`` extra frames of silence (``K * hop_length`` zero samples)
  appended after the clip. librosa centres frames, so a clip of ``S`` samples
  gives ``1 + S // hop`` frames and the delayed one ``1 + S // hop + K``:
  exactly ``K`` more (``T = 32 + K`` at the defaults). A last-step readout
  then has to carry the word across at least ``K`` steps of silence.

Silence is zero audio, nothing else. Its MFCC is not one constant vector,
though: librosa floors the dB mel spectrogram at 80 dB below the clip's
loudest bin (``top_db``), so a frame of silence has every mel band at that
floor, coefficient 0 equal to ``sqrt(n_mels) * floor`` and the others 0, with
a floor that differs from clip to clip. On FSDD one/two/three that floor
alone does not tell the classes apart (a logistic regression on it scores
chance on the held-out speakers), so the silent frames carry the clip's
loudness but not its word. Frames that overlap both the clip's last
``n_fft / 2`` samples and the appended zeros see both.
"""

from __future__ import annotations

import numpy as np

#: Where the word sits within its clip.
PADS = ("end", "start")


def check_silence(pad: str, delay: int) -> None:
    """Raises ``ValueError`` naming the problem for a bad ``pad`` or ``delay``."""
    if pad not in PADS:
        raise ValueError(f"pad must be one of {PADS}, got {pad!r}")
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"delay must be an int >= 0 (frames of silence), got {delay!r}")


def clip_with_silence(
    audio: np.ndarray, clip_samples: int, *, pad: str = "end", delay_samples: int = 0
) -> np.ndarray:
    """Cuts or pads ``audio`` with zeros to a clip, then appends ``delay_samples`` zeros.

    Args:
        audio: ``(S,)`` mono samples.
        clip_samples: Length of the clip before the delay.
        pad: ``"end"``: the word, then silence; ``"start"``: silence, then the word.
        delay_samples: Zero samples appended after the clip.

    Returns:
        ``(clip_samples + delay_samples,)`` float32.
    """
    check_silence(pad, 0)
    if delay_samples < 0:
        raise ValueError(f"delay_samples must be >= 0, got {delay_samples}")
    out = np.zeros(clip_samples + delay_samples, dtype=np.float32)  # (S_clip + S_delay,)
    kept = min(audio.shape[0], clip_samples)
    start = 0 if pad == "end" else clip_samples - kept
    out[start : start + kept] = audio[:kept]
    return out
