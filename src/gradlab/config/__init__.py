"""What a run is: gradlab's vocabulary and the frozen dataclasses of one run's configuration.

A run is a :class:`RunConfig`: what to build (:class:`ModelConfig`), what to
train on (:class:`DataConfig`) and how (:class:`TrainConfig`). Every field is
checked when the object is made, so a bad value (a learning rate of 0, an
unknown cell, an init scheme that does not apply to the cell) fails before any
data is read or any folder written. Change a config with
``dataclasses.replace``. ``RunConfig.to_dict()`` is what each run writes to its
``config.json``; :meth:`RunConfig.from_dict` reads it back.

Each field's ``help`` metadata is the one description of that option: the
command line (:mod:`gradlab.cli`) is generated from it, defaults included.

This package imports no torch: reading a config or a run folder is cheap. The vocabulary and the field checks
live in :mod:`gradlab.config.vocabulary`, the modern cells' init options in :mod:`gradlab.config.cell_options`;
both are re-exported here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gradlab.config.cell_options import (
    CELL_OPTIONS,
    cell_init_options,
    check_cell_options,
)
from gradlab.config.vocabulary import (  # noqa: F401 - re-exported: gradlab.config is where users import them
    ACTIVATION_NAMES,
    AUDIO_DATASETS,
    BASE_MODES,
    BIDIRECTIONAL_CHOICES,
    DATASET_NAMES,
    DEVICES,
    DIRECTIONS,
    DTYPES,
    INIT_APPLIES_TO,
    INIT_SCHEMES,
    MODERN_MODES,
    OPTIMISERS,
    PADS,
    READOUTS,
    SEED_MAX,
    SPLITS,
    SYNTHETIC_DATASETS,
    check_choice,
    check_integer,
    check_number,
    check_positive_int,
    check_scheme_applies,
    normalise_mode,
    option,
    parse_mode,
    parse_scheme,
)


@dataclass(frozen=True)
class ModelConfig:
    """The network: a :class:`gradlab.nn.models.RNNModel` (input and output sizes come from the data)."""

    mode: str = option("LSTM", "RNN_TANH, RNN_RELU, RNN_<ACTIVATION>, LSTM, GRU, INDRNN, MINGRU, "
                                      "MINLSTM, LRU or DIAGONAL (stored normalised)", cli=False)
    hidden_size: int = option(32, "hidden units per layer and direction")
    num_layers: int = option(2, "stacked layers")
    bidirectional: str = option("none", f"bidirectional design: {', '.join(BIDIRECTIONAL_CHOICES)}",
                                choices=BIDIRECTIONAL_CHOICES)
    readout: str = option("last", "head input: last state, mean over time, or per-step logits (sequence) "
                                  "(default: last; sequence for copy-memory)", choices=READOUTS)
    init: str = option("default", f"init scheme from {', '.join(INIT_SCHEMES)}, several joined with '+'")
    forget_bias: float = option(1.0, "LSTM forget-gate bias of the forget_bias init scheme")
    bias: bool = option(True, "bias terms in the cells")
    param_target: int | None = option(None, "the parameter count hidden_size was chosen to match "
                                            "(--match-params sets it; it changes nothing else)", cli=False)
    # The modern cells' init ranges (gradlab.config.cell_options); None keeps the cell's default.
    diagonal_lambda_min: float | None = option(None, "DIAGONAL: lambda ~ U(min, max) at init (default: 0)")
    diagonal_lambda_max: float | None = option(None, "DIAGONAL: upper end of the lambda range (default: 0.99)")
    lru_r_min: float | None = option(None, "LRU: inner radius of the ring |lambda| in [r_min, r_max] at init "
                                           "(default: 0)")
    lru_r_max: float | None = option(None, "LRU: outer radius of the init ring (default: 1)")
    lru_max_phase: float | None = option(None, "LRU: arg lambda ~ U(0, max_phase) at init (default: 2 pi)")
    indrnn_u_max: float | None = option(None, "INDRNN: u ~ U(0, u_max) at init (default: 1)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", normalise_mode(self.mode))
        check_positive_int("ModelConfig.hidden_size", self.hidden_size)
        check_positive_int("ModelConfig.num_layers", self.num_layers)
        check_choice("bidirectional choice", self.bidirectional, BIDIRECTIONAL_CHOICES)
        check_choice("readout", self.readout, READOUTS)
        check_number("ModelConfig.forget_bias", self.forget_bias, positive=None)
        check_positive_int("ModelConfig.param_target", self.param_target, allow_none=True)
        check_scheme_applies(self.init, self.mode)
        check_cell_options(self.mode, {name: getattr(self, name) for name in CELL_OPTIONS})
        if not self.bias and any(part in ("forget_bias", "chrono", "identity") for part in parse_scheme(self.init)):
            raise ValueError(f"init scheme {self.init!r} sets gate biases, but bias is off; drop --no-bias or the scheme")

    def cell_options(self) -> dict[str, Any]:
        """The keyword arguments of ``make_cell`` for the init ranges set (empty when none is)."""
        return cell_init_options(self.mode, {name: getattr(self, name) for name in CELL_OPTIONS})


@dataclass(frozen=True)
class DataConfig:
    """What to train on; see ``gradlab.data.load_dataset`` for each dataset's options.

    Audio options apply to ``speech-commands`` and ``fsdd``; task options to
    the synthetic tasks. ``None`` means the loader's default.
    """

    dataset: str = option("speech-commands", f"one of {', '.join(DATASET_NAMES)}", choices=DATASET_NAMES)
    words: tuple[str, ...] = option(("one", "two", "three"), "words (Speech Commands) or digits (FSDD)")
    data_dir: str | None = option(None, "dataset folder (FSDD recordings, or a Speech Commands tree) "
                                        "(default: $GRADLAB_DATA, else ~/.cache/gradlab; FSDD looks in "
                                        "$GRADLAB_FSDD first, then in fsdd/ of that folder)", grid=False)
    download: bool | None = option(None, "download Speech Commands when missing (default: yes, but no when "
                                         "--data-dir is given)", grid=False)
    normalise: bool = option(True, "standardise MFCCs with training-split statistics")
    n_mfcc: int = option(20, "MFCC coefficients per frame")
    n_fft: int = option(2048, "MFCC window in samples")
    hop_length: int = option(512, "MFCC hop in samples; sets T = 1 + 16000 // hop")
    amplitude_scale: float = option(1.0, "scale audio before the MFCC; 32768 reproduces the coursework's int16 input")
    cache_dir: str | None = option(None, "feature cache folder (default: features/ in $GRADLAB_DATA, else "
                                         "~/.cache/gradlab/features)", grid=False)
    split: str = option("speakers", "FSDD split: speakers (validation and test speakers never heard in training) "
                                    "or takes (speaker-dependent: every speaker in every split)", choices=SPLITS)
    test_speaker: str | None = option(None, "FSDD, split speakers: the test speaker (default: theo; the "
                                            "validation speaker is the next one alphabetically); rotate it to "
                                            "measure speaker variance")
    pad: str = option("end", "audio: where the silence filling the one-second clip goes: end (after the word) "
                             "or start (before it)", choices=PADS)
    delay: int = option(0, "audio: K frames of silence appended after the clip (T = 32 + K at the default hop); "
                           "the class is still read at the last step")
    takes: tuple[int, ...] | None = option(None, "FSDD: keep only these takes (default: all; a small subset for "
                                                 "smoke tests)")
    train_fraction: float = option(1.0, "audio: train on this fraction of the training clips (class-stratified, the "
                                        "same nested subset for every seed; validation and test unchanged)")
    seq_len: int | None = option(None, "synthetic tasks: sequence length T (default: 100 for adding and distance, "
                                       "120 for copy-memory)")
    distance: int | None = option(None, "distance task: steps from the event to the end (default: T - 1)")
    noise_std: float = option(0.1, "distance task: Gaussian noise on every step, so every sequence is distinct "
                                   "(0: the three noiseless sequences)")
    n_train: int | None = option(None, "synthetic tasks: training sequences (default: 5000, copy-memory 2000)")
    n_validation: int | None = option(None, "synthetic tasks: validation sequences (default: 1000, copy-memory 500)")
    n_test: int | None = option(None, "synthetic tasks: test sequences (default: 1000, copy-memory 500)")
    data_seed: int = option(0, "synthetic tasks: seed of the data (every run of a sweep sees the same data)")

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASET_NAMES)
        object.__setattr__(self, "words", tuple(str(word) for word in self.words))
        if self.dataset in AUDIO_DATASETS and not self.words:
            raise ValueError("DataConfig.words must name at least one word")
        if self.takes is not None:
            object.__setattr__(self, "takes", tuple(int(take) for take in self.takes))
        for name in ("n_mfcc", "n_fft", "hop_length"):
            check_positive_int(f"DataConfig.{name}", getattr(self, name))
        for name in ("seq_len", "distance", "n_train", "n_validation", "n_test"):
            check_positive_int(f"DataConfig.{name}", getattr(self, name), allow_none=True)
        check_number("DataConfig.amplitude_scale", self.amplitude_scale, positive=True)
        check_number("DataConfig.noise_std", self.noise_std, positive=False)
        check_choice("split", self.split, SPLITS)
        check_choice("pad", self.pad, PADS)
        check_integer("DataConfig.delay", self.delay, 0, note=" (frames of silence)")
        if self.test_speaker is not None and not (self.dataset == "fsdd" and self.split == "speakers"):
            raise ValueError("test_speaker applies to FSDD with split 'speakers' only; drop --test-speaker")
        check_integer("DataConfig.data_seed", self.data_seed, 0, SEED_MAX, note=" (2**63 - 1: tables store seeds as int64)")
        check_number("DataConfig.train_fraction", self.train_fraction, positive=True)
        object.__setattr__(self, "train_fraction", float(self.train_fraction))
        if self.train_fraction > 1.0:
            raise ValueError(f"DataConfig.train_fraction must be at most 1, got {self.train_fraction!r}")
        if self.train_fraction != 1.0 and not self.is_audio:
            raise ValueError("train_fraction applies to the audio datasets; synthetic tasks set --n-train instead")

    @property
    def is_audio(self) -> bool:
        """Whether the dataset is recorded speech (MFCC features)."""
        return self.dataset in AUDIO_DATASETS


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimiser, evaluation, recording, device and randomness."""

    epochs: int = option(30, "epochs per run")
    batch_size: int = option(100, "batch size")
    lr: float = option(3e-3, "learning rate")
    optimiser: str = option("adam", f"optimiser: {', '.join(OPTIMISERS)}", choices=OPTIMISERS)
    weight_decay: float = option(0.0, "weight decay")
    clip_grad_norm: float | None = option(None, "clip the global gradient norm to this ('none': no clipping)")
    seed: int = option(0, "derives the init, shuffle and diagnostics generators", cli=False)
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N", grid=False)
    amp: bool = option(False, "bfloat16 autocast (CUDA, or CPU); uses the plain autograd unroll")
    dtype: str = option("float32", "parameters and inputs; float64 measures gradients that float32 "
                                   "underflows to 0 over long sequences", choices=DTYPES)
    deterministic: bool = option(False, "deterministic kernels (torch.use_deterministic_algorithms)")
    record_every: int | None = option(10, "record per-timestep gradient norms every k steps, plus init and end "
                                          "(0 or 'none': off)")
    val_every: int | None = option(50, "validate every k steps besides every epoch end (0 or 'none': epoch ends only)")
    diagnostics: bool = option(True, "gate statistics every epoch, Jacobian norms at init and end")
    diagnostics_batch: int = option(16, "validation samples the gate statistics run on")
    jacobian_batch: int = option(8, "validation samples the Jacobian norms run on (T^2/2 cell steps each)")
    jacobian_every: int | None = option(None, "also compute Jacobian norms every k epochs ('none': init and last epoch)")
    jacobian_max_len: int = option(128, "skip the Jacobian (T^2 cost) for longer sequences")
    clip_grad_value: float | None = option(None, "clip every gradient entry to [-v, v] ('none': off), after "
                                                 "norm clipping")
    lyapunov_every: int | None = option(None, "record the Lyapunov spectrum of every layer every k steps, plus init "
                                              "and end ('none': off; costs 5-30 training steps each)")
    lyapunov_k: int | None = option(None, "exponents recorded per layer and direction ('none': all)")
    omega_weight: float = option(0.0, "weight of Pascanu et al.'s vanishing-gradient regulariser Omega (0: off)")
    floss_weight: float = option(0.0, "weight of gradient flossing (squared leading Lyapunov exponents; 0: off)")
    floss_k: int = option(1, "gradient flossing: leading exponents pushed towards zero")
    floss_every: int = option(1, "gradient flossing: on every k-th step")
    floss_until: int | None = option(None, "gradient flossing: only before this step ('none': throughout)")
    record_parameters: bool = option(False, "with the gradients, record per unit the gradient norm of the "
                                            "parameters that set its memory (lambda, u, nu/theta, gate rows) and "
                                            "its memory (|lambda|, |u|, mean retention): table parameter_gradients")
    max_steps_per_epoch: int | None = option(None, "cut epochs short (smoke runs)")
    max_eval_batches: int | None = option(None, "evaluate on this many batches only (smoke runs; not an honest score)")

    def __post_init__(self) -> None:
        check_positive_int("TrainConfig.epochs", self.epochs)
        check_positive_int("TrainConfig.batch_size", self.batch_size)
        check_number("TrainConfig.lr", self.lr, positive=True)
        check_number("TrainConfig.weight_decay", self.weight_decay, positive=False)
        if self.clip_grad_norm is not None:
            check_number("TrainConfig.clip_grad_norm", self.clip_grad_norm, positive=True)
        check_choice("optimiser", self.optimiser, OPTIMISERS)
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"unknown device {self.device!r}; expected one of {list(DEVICES)} or cuda:<index>")
        check_choice("dtype", self.dtype, DTYPES)
        if self.amp and self.dtype != "float32":
            raise ValueError("amp (bfloat16 autocast) needs dtype float32; drop --amp or --dtype float64")
        check_integer("TrainConfig.seed", self.seed, 0, SEED_MAX, note=" (2**63 - 1: tables store seeds as int64)")
        if self.clip_grad_value is not None:
            check_number("TrainConfig.clip_grad_value", self.clip_grad_value, positive=True)
        check_number("TrainConfig.omega_weight", self.omega_weight, positive=False)
        check_number("TrainConfig.floss_weight", self.floss_weight, positive=False)
        check_positive_int("TrainConfig.floss_k", self.floss_k)
        check_positive_int("TrainConfig.floss_every", self.floss_every)
        for name in ("record_every", "val_every", "max_steps_per_epoch", "max_eval_batches", "jacobian_every",
                     "lyapunov_every", "lyapunov_k", "floss_until"):
            check_positive_int(f"TrainConfig.{name}", getattr(self, name), allow_none=True)
        if self.record_parameters and self.record_every is None:
            raise ValueError("record_parameters is recorded on the gradient-recording steps, but record_every is "
                             "off; set --record-every or drop --record-parameters")
        for name in ("diagnostics_batch", "jacobian_batch", "jacobian_max_len"):
            check_positive_int(f"TrainConfig.{name}", getattr(self, name))


#: The parts of a run's configuration, by key in its dict.
CONFIG_PARTS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
#: Default seconds of training between a run's epoch checkpoints. Not a TrainConfig field: how often a run
#: is saved changes no result (see :class:`gradlab.training.epoch_checkpoint.EpochCheckpoint`).
CHECKPOINT_EVERY = 30.0


def check_checkpoint_every(every: float) -> float:
    """``every`` (seconds of training between epoch checkpoints) if it is a number >= 0; else ``ValueError``."""
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not every >= 0:
        raise ValueError(f"checkpoint_every must be a number of seconds >= 0 (0: every epoch), got {every!r}")
    return float(every)


@dataclass(frozen=True)
class RunConfig:
    """One training run: model, data and training settings, and the run's name in its sweep."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_id: str = "run"

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not self.run_id or any(char in self.run_id for char in "/\\") \
                or self.run_id.startswith("."):
            raise ValueError(f"run_id must be a plain folder name, got {self.run_id!r}")
        if (self.model.readout == "sequence") != (self.data.dataset == "copy-memory"):
            raise ValueError(
                f"readout {self.model.readout!r} does not fit dataset {self.data.dataset!r}: copy-memory's per-step "
                "targets need readout 'sequence', and the other datasets need 'last' or 'mean'"
            )

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict`` of the config (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: an unknown key (naming it), or an invalid value.
        """
        if not isinstance(values, dict):
            raise ValueError(f"a run config must be a JSON object, got {type(values).__name__}")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key in CONFIG_PARTS:
                part = CONFIG_PARTS[key]
                if not isinstance(value, dict):
                    raise ValueError(f"the {key} options must be a JSON object, got {value!r}")
                known = {item.name for item in fields(part)}
                unknown = sorted(set(value) - known)
                if unknown:
                    raise ValueError(f"unknown {key} option(s) {unknown}; this gradlab knows {sorted(known)}")
                kwargs[key] = part(**{name: tuple(item) if isinstance(item, list) else item
                                      for name, item in value.items()})
            elif key == "run_id":
                kwargs[key] = value
            else:
                raise ValueError(f"unknown run config key {key!r}; expected model, data, train, run_id")
        return cls(**kwargs)
