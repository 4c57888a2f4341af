"""Configuration of one training run: frozen dataclasses, changed with ``dataclasses.replace``.

A run is a :class:`RunConfig`: what to build (:class:`ModelConfig`), what to
train on (:class:`DataConfig`) and how (:class:`TrainConfig`). Every field is
checked when the object is made, so a bad value (a learning rate of 0, an
unknown cell) fails before any data is read or any folder written.
``asdict(config)`` is what each run writes to its ``config.json``;
:meth:`RunConfig.from_dict` reads it back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gradlab.initialisation import parse_scheme
from gradlab.models import BIDIRECTIONAL_CHOICES, READOUTS, normalise_mode

#: Dataset names a run may train on (the keys of ``gradlab.data.DATASETS``).
DATASET_NAMES: tuple[str, ...] = ("speech-commands", "fsdd", "adding", "copy-memory", "distance")
AUDIO_DATASETS: tuple[str, ...] = ("speech-commands", "fsdd")
SYNTHETIC_DATASETS: tuple[str, ...] = ("adding", "copy-memory", "distance")
OPTIMISERS: tuple[str, ...] = ("adam", "sgd")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def _positive_int(owner: str, name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def _finite(owner: str, name: str, value: object, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")
    if not positive and value < 0:
        raise ValueError(f"{owner}.{name} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The network: a :class:`gradlab.models.RNNModel` (output size comes from the data)."""

    mode: str = "LSTM"  # RNN_TANH, RNN_RELU, RNN_<ACTIVATION>, LSTM or GRU; stored normalised
    hidden_size: int = 32
    num_layers: int = 2
    bidirectional: str = "none"  # none, separate or interleaved
    readout: str = "last"  # last, mean, or sequence (per-step logits, for copy-memory)
    init: str = "default"  # a gradlab.initialisation scheme, e.g. "orthogonal+forget_bias"
    forget_bias: float = 1.0  # for the forget_bias scheme
    bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", normalise_mode(self.mode))
        _positive_int("ModelConfig", "hidden_size", self.hidden_size)
        _positive_int("ModelConfig", "num_layers", self.num_layers)
        if self.bidirectional not in BIDIRECTIONAL_CHOICES:
            raise ValueError(
                f"unknown bidirectional choice {self.bidirectional!r}; expected one of {list(BIDIRECTIONAL_CHOICES)}"
            )
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; expected one of {list(READOUTS)}")
        parse_scheme(self.init)


@dataclass(frozen=True)
class DataConfig:
    """What to train on; see ``gradlab.data.load_dataset`` for each dataset's options.

    Audio options (``words`` ... ``takes``) apply to ``speech-commands`` and
    ``fsdd``; task options (``seq_len`` ... ``data_seed``) to the synthetic
    tasks. ``None`` means the loader's default.
    """

    dataset: str = "speech-commands"
    words: tuple[str, ...] = ("one", "two", "three")
    data_dir: str | None = None  # root of the dataset; None: gradlab's data folder (FSDD: $GRADLAB_FSDD, ...)
    download: bool | None = None  # Speech Commands download policy (see load_speech_commands)
    normalise: bool = True  # standardise MFCCs with training-split statistics
    n_mfcc: int = 20
    n_fft: int = 2048
    hop_length: int = 512  # sets the sequence length: T = 1 + 16000 // hop_length
    amplitude_scale: float = 1.0  # 32768.0 reproduces the coursework's int16 input
    cache_dir: str | None = None  # feature cache; None: gradlab's default
    takes: tuple[int, ...] | None = None  # FSDD only: keep these takes (a small subset for smoke tests)
    seq_len: int | None = None  # synthetic tasks: sequence length T
    distance: int | None = None  # distance task: steps from the event to the end (default T - 1)
    n_train: int | None = None
    n_validation: int | None = None
    n_test: int | None = None
    data_seed: int = 0  # synthetic tasks: every run of a sweep sees the same data

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {list(DATASET_NAMES)}")
        object.__setattr__(self, "words", tuple(str(word) for word in self.words))
        if self.dataset in AUDIO_DATASETS and not self.words:
            raise ValueError("DataConfig.words must name at least one word")
        if self.takes is not None:
            object.__setattr__(self, "takes", tuple(int(take) for take in self.takes))
        for name in ("n_mfcc", "n_fft", "hop_length"):
            _positive_int("DataConfig", name, getattr(self, name))
        for name in ("seq_len", "n_train", "n_validation", "n_test"):
            _positive_int("DataConfig", name, getattr(self, name), allow_none=True)
        _finite("DataConfig", "amplitude_scale", self.amplitude_scale, positive=True)

    @property
    def is_audio(self) -> bool:
        return self.dataset in AUDIO_DATASETS


#: Floating-point types a run can train in.
DTYPES: tuple[str, ...] = ("float32", "float64")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, evaluation, recording, device and randomness."""

    epochs: int = 10
    batch_size: int = 100
    lr: float = 3e-3
    optimiser: str = "adam"  # adam or sgd
    weight_decay: float = 0.0
    clip_grad_norm: float | None = None  # clip the global gradient norm to this; None: no clipping
    seed: int = 0  # derives the init, shuffle and diagnostics generators
    device: str = "auto"  # auto: CUDA when present, else CPU
    amp: bool = False  # bfloat16 autocast on CUDA (uses the plain autograd unroll)
    dtype: str = "float32"  # parameters and inputs; float64 keeps gradients that float32 underflows to 0
    deterministic: bool = False  # torch.use_deterministic_algorithms and CUBLAS_WORKSPACE_CONFIG
    record_every: int | None = 10  # gradient recording every k optimiser steps (plus init and end); None: off
    val_every: int | None = 50  # validate every k steps, besides every epoch end; None: epoch ends only
    diagnostics: bool = True  # gate statistics at init and every epoch end, Jacobian norms at init and end
    diagnostics_batch: int = 16  # validation samples the gate statistics run on
    jacobian_batch: int = 8  # validation samples the Jacobian norms run on (T^2/2 cell steps each)
    jacobian_every: int | None = None  # also compute Jacobian norms every k epochs; None: init and last epoch
    jacobian_max_len: int = 128  # skip the Jacobian (T^2 cost) for longer sequences
    max_steps_per_epoch: int | None = None  # cut epochs short (smoke runs)
    max_eval_batches: int | None = None  # evaluate on this many batches only (smoke runs; not an honest score)

    def __post_init__(self) -> None:
        _positive_int("TrainConfig", "epochs", self.epochs)
        _positive_int("TrainConfig", "batch_size", self.batch_size)
        _finite("TrainConfig", "lr", self.lr, positive=True)
        _finite("TrainConfig", "weight_decay", self.weight_decay, positive=False)
        if self.clip_grad_norm is not None:
            _finite("TrainConfig", "clip_grad_norm", self.clip_grad_norm, positive=True)
        if self.optimiser not in OPTIMISERS:
            raise ValueError(f"unknown optimiser {self.optimiser!r}; expected one of {list(OPTIMISERS)}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"unknown device {self.device!r}; expected one of {list(DEVICES)} or cuda:<index>")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {list(DTYPES)}")
        if self.amp and self.dtype != "float32":
            raise ValueError("amp (bfloat16 autocast) needs dtype float32; drop --amp or --dtype float64")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be an integer >= 0, got {self.seed!r}")
        for name in ("record_every", "val_every", "max_steps_per_epoch", "max_eval_batches", "jacobian_every"):
            _positive_int("TrainConfig", name, getattr(self, name), allow_none=True)
        _positive_int("TrainConfig", "diagnostics_batch", self.diagnostics_batch)
        _positive_int("TrainConfig", "jacobian_batch", self.jacobian_batch)
        _positive_int("TrainConfig", "jacobian_max_len", self.jacobian_max_len)


@dataclass(frozen=True)
class RunConfig:
    """One training run: model, data and training settings, and the run's name in its sweep."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_id: str = "run"

    def __post_init__(self) -> None:
        if not self.run_id or any(char in self.run_id for char in "/\\") or self.run_id.startswith("."):
            raise ValueError(f"run_id must be a plain folder name, got {self.run_id!r}")

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict`` of the config (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        parts = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in parts:
                sub = dict(value)
                for item in fields(parts[key]):
                    if item.name in sub and isinstance(sub[item.name], list):
                        sub[item.name] = tuple(sub[item.name])
                kwargs[key] = parts[key](**sub)
            else:
                kwargs[key] = value
        return cls(**kwargs)
