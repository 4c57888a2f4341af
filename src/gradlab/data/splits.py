"""The dataset interface shared by every gradlab dataset: tensors per split.

Every loader (Speech Commands, FSDD, the synthetic tasks) returns a
``DataSplits``: three ``SplitTensors`` plus what a model needs to know to fit
the data (input size, number of outputs, sequence length, task kind).

Task kinds and their target layouts:

- ``"classification"``: one label per sequence. ``y`` is ``(N,)`` int64 in
  ``[0, num_outputs)``; a model reads out logits ``(B, num_outputs)``.
- ``"regression"``: one real target per sequence. ``y`` is ``(N,)`` float32;
  a model reads out ``(B, 1)`` and the loss compares ``output[:, 0]`` with
  ``y`` (comparing ``(B, 1)`` with ``(B,)`` directly would broadcast).
- ``"sequence_classification"``: one label *per time step*. ``y`` is
  ``(N, T)`` int64; a model needs a per-step readout giving logits
  ``(B, T, num_outputs)``, and the loss is
  ``cross_entropy(logits.reshape(-1, C), y.reshape(-1))``.

Files a loader left out are listed in ``DataSplits.skipped``: reason ->
sorted file names (relative to ``info["root"]``), with these reasons:

- ``"unreadable"``: the file cannot be decoded, or its header is outside
  what a speech clip can be (sample rate, channels).
- ``"empty"``: no samples, or only zeros, in the part the clip uses.
- ``"non_finite"``: its features are NaN or infinite (e.g. float audio at
  1e24); such a clip would poison training and the normalisation statistics.
- ``"bad_name"``: a WAV whose name does not follow the dataset's naming
  scheme, so it has no label.

A reason with no files is absent; synthetic datasets skip nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

TASK_CLASSIFICATION = "classification"
TASK_REGRESSION = "regression"
TASK_SEQUENCE_CLASSIFICATION = "sequence_classification"
TASKS = (TASK_CLASSIFICATION, TASK_REGRESSION, TASK_SEQUENCE_CLASSIFICATION)

SKIP_UNREADABLE = "unreadable"
SKIP_EMPTY = "empty"
SKIP_NON_FINITE = "non_finite"
SKIP_BAD_NAME = "bad_name"
SKIP_REASONS = (SKIP_UNREADABLE, SKIP_EMPTY, SKIP_NON_FINITE, SKIP_BAD_NAME)


@dataclass(frozen=True)
class SplitTensors(Dataset):
    """One split of a dataset as tensors; a map-style ``torch.utils.data.Dataset`` of ``(x[i], y[i])`` pairs.

    ``DataLoader(split, batch_size=32, shuffle=True)`` batches it like any torch
    dataset; gradlab's own loop slices ``x`` and ``y`` directly
    (:func:`gradlab.data.iterate_batches`), which is faster for in-memory tensors.

    Attributes:
        x: Inputs ``(N, T, F)`` float32, batch-first.
        y: Targets: ``(N,)`` int64 labels, ``(N,)`` float32 regression targets,
            or ``(N, T)`` int64 per-step labels (see the module docstring).
    """

    x: torch.Tensor  # (N, T, F)
    y: torch.Tensor  # (N,) or (N, T)

    def __post_init__(self) -> None:
        if self.x.ndim != 3:
            raise ValueError(f"x must be (N, T, F), got shape {tuple(self.x.shape)}")
        if self.y.shape[0] != self.x.shape[0]:
            raise ValueError(
                f"x and y disagree on the number of samples: {self.x.shape[0]} vs {self.y.shape[0]}"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index``: its inputs ``(T, F)`` and its target (a scalar, or ``(T,)`` per-step labels)."""
        return self.x[index], self.y[index]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> SplitTensors:
        """Returns a copy of this split on ``device`` (no copy if already there).

        With ``dtype``, inputs and floating-point targets are cast to it; integer
        labels stay int64.
        """
        y = self.y.to(device, dtype) if dtype is not None and self.y.is_floating_point() else self.y.to(device)
        return SplitTensors(self.x.to(device, dtype), y)


@dataclass(frozen=True)
class DataSplits:
    """Train, validation and test splits plus the facts a model needs.

    Attributes:
        train: Training split.
        validation: Validation split (model selection only).
        test: Test split (report once, at the end).
        task: One of ``TASKS``; fixes the target layout (module docstring).
        num_outputs: Number of classes, or 1 for regression.
        input_size: Features per time step, ``F``.
        seq_len: Time steps per sequence, ``T``.
        class_names: Class names in label order (empty for regression).
        info: Provenance: dataset name, paths, feature config, normalisation
            statistics, cache hits, skipped files, task parameters.
        skipped: Files left out, reason -> sorted names relative to
            ``info["root"]`` (module docstring); empty when none were.
    """

    train: SplitTensors
    validation: SplitTensors
    test: SplitTensors
    task: str
    num_outputs: int
    input_size: int
    seq_len: int
    class_names: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        unknown = sorted(set(self.skipped) - set(SKIP_REASONS))
        if unknown:
            raise ValueError(f"unknown skip reasons {unknown}; valid reasons: {SKIP_REASONS}")

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> DataSplits:
        """Returns a copy with all three splits moved to ``device`` (and cast, see ``SplitTensors.to``)."""
        return DataSplits(
            train=self.train.to(device, dtype),
            validation=self.validation.to(device, dtype),
            test=self.test.to(device, dtype),
            task=self.task,
            num_outputs=self.num_outputs,
            input_size=self.input_size,
            seq_len=self.seq_len,
            class_names=self.class_names,
            info=self.info,
            skipped=self.skipped,
        )
