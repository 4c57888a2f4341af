"""gradlab's vocabulary (modes, activations, init schemes, datasets) and the checks every config field uses.

Torch-free, like the rest of :mod:`gradlab.config`, which re-exports every name here.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

#: RNN activations by name (``gradlab.nn.cells.ACTIVATIONS`` maps them to functions).
ACTIVATION_NAMES: tuple[str, ...] = ("tanh", "relu", "leaky_relu", "sigmoid", "gelu", "elu", "softplus", "identity")
BASE_MODES: tuple[str, ...] = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
#: Elementwise (diagonal) recurrences (:mod:`gradlab.nn.modern`, :mod:`gradlab.nn.lru`), and the activation each
#: reports: IndRNN's ReLU, the positive g of minGRU/minLSTM, none (identity) for the linear LRU and DIAGONAL.
MODERN_MODES: dict[str, str] = {"INDRNN": "relu", "MINGRU": "g", "MINLSTM": "g", "LRU": "identity",
                                "DIAGONAL": "identity"}
BIDIRECTIONAL_CHOICES: tuple[str, ...] = ("none", "separate", "interleaved")
READOUTS: tuple[str, ...] = ("last", "mean", "sequence")
DIRECTIONS: tuple[str, ...] = ("forward", "backward")
#: Initialisation schemes (see :mod:`gradlab.nn.initialisation`), and the cell kinds each applies to.
INIT_SCHEMES: tuple[str, ...] = ("default", "orthogonal", "identity", "forget_bias", "chrono")
INIT_APPLIES_TO: dict[str, tuple[str, ...]] = {
    "default": ("RNN", "LSTM", "GRU", *MODERN_MODES),
    "orthogonal": ("RNN", "LSTM", "GRU"),
    "identity": ("RNN",),
    "forget_bias": ("LSTM",),
    "chrono": ("LSTM", "GRU"),
}
#: Dataset names a run may train on (the keys of ``gradlab.data.DATASETS``).
DATASET_NAMES: tuple[str, ...] = ("speech-commands", "fsdd", "adding", "copy-memory", "distance")
AUDIO_DATASETS: tuple[str, ...] = ("speech-commands", "fsdd")
SYNTHETIC_DATASETS: tuple[str, ...] = ("adding", "copy-memory", "distance")
#: FSDD split schemes: by speaker (no test speaker is heard in training) or by take (speaker-dependent).
SPLITS: tuple[str, ...] = ("speakers", "takes")
#: Where the word sits in its one-second clip: first (silence after it) or last (silence before it).
PADS: tuple[str, ...] = ("end", "start")
OPTIMISERS: tuple[str, ...] = ("adam", "sgd")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DTYPES: tuple[str, ...] = ("float32", "float64")
#: Largest seed: torch's generators take up to 2**64 - 1, but every table stores the seed as int64.
SEED_MAX: int = 2**63 - 1


def check_integer(name: str, value: Any, low: int = 1, high: int | None = None, note: str = "") -> int:
    """Return ``value`` if it is an integer (not a bool) in [low, high].

    Raises:
        ValueError: naming ``name``, the allowed range (plus ``note``) and the value given.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        if high is not None:
            allowed = f"an integer in [{low}, {high}]"
        else:
            allowed = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {allowed}{note}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is an integer >= 1 (or None when allowed); else raise ``ValueError``."""
    return value if value is None and allow_none else check_integer(name, value)


def check_number(name: str, value: object, *, positive: bool | None) -> None:
    """Raise ``ValueError`` unless ``value`` is finite and > 0 (``positive``), >= 0 (False) or any (None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive is None:
        return
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if not positive and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the allowed values unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(choices)}")


def parse_mode(mode: str) -> tuple[str, str]:
    """Split a mode into (cell kind, activation), case-insensitively.

    ``RNN_TANH`` -> ("RNN", "tanh"), ``RNN_LEAKY_RELU`` -> ("RNN", "leaky_relu"),
    ``LSTM`` -> ("LSTM", "tanh"), ``GRU`` -> ("GRU", "tanh"); a modern mode is its own
    kind with the activation of :data:`MODERN_MODES` (``MINGRU`` -> ("MINGRU", "g")).

    Raises:
        ValueError: naming the valid modes.
    """
    if isinstance(mode, str):
        upper = mode.strip().upper()
        if upper in ("LSTM", "GRU"):
            return upper, "tanh"
        if upper in MODERN_MODES:
            return upper, MODERN_MODES[upper]
        if upper.startswith("RNN_") and upper[4:].lower() in ACTIVATION_NAMES:
            return "RNN", upper[4:].lower()
    valid = list(BASE_MODES) + [f"RNN_{name.upper()}" for name in ACTIVATION_NAMES if name not in ("tanh", "relu")]
    valid += list(MODERN_MODES)
    raise ValueError(f"unknown mode {mode!r}; expected one of {valid}")


def normalise_mode(mode: str) -> str:
    """The canonical spelling of ``mode`` (``rnn_tanh`` -> ``RNN_TANH``)."""
    kind, activation = parse_mode(mode)
    return kind if kind != "RNN" else f"RNN_{activation.upper()}"


def parse_scheme(scheme: str) -> tuple[str, ...]:
    """Split an init scheme ``"a+b"`` into its parts and check each one.

    Raises:
        ValueError: naming the unknown part and the valid names.
    """
    if not isinstance(scheme, str) or not scheme:
        raise ValueError(f"init scheme must be a non-empty string, got {scheme!r}")
    parts = tuple(part.strip() for part in scheme.split("+"))
    for part in parts:
        if part not in INIT_SCHEMES:
            raise ValueError(
                f"unknown init scheme {part!r} in {scheme!r}; expected one of {list(INIT_SCHEMES)} "
                "or several joined with '+'"
            )
    return parts


def check_scheme_applies(scheme: str, mode: str) -> None:
    """Raise ``ValueError`` (with a fix) when a part of ``scheme`` does not apply to ``mode``'s cell."""
    kind = parse_mode(mode)[0]
    for part in parse_scheme(scheme):
        if kind not in INIT_APPLIES_TO[part]:
            both = [name for name, kinds in INIT_APPLIES_TO.items() if kind in kinds and name != "default"]
            fix = (f"choose an init that applies to it ({', '.join(both)})" if both
                   else "use init 'default', the only scheme for it")
            raise ValueError(
                f"init scheme {part!r} applies to {' and '.join(INIT_APPLIES_TO[part])} cells, not {mode}; "
                f"run {mode} in a separate sweep, or {fix}"
            )


def option(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002 - argparse's word
    """A dataclass field with its command-line help (the one place an option is described).

    Metadata the command line reads: ``choices`` (the fixed values, checked when parsed), ``grid=False`` (no
    comma list), ``cli=False`` (no flag). A help that states its own ``(default: ...)`` keeps it; others get
    the field's default appended.
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed in a frozen config")
    return field(default=default, metadata={"help": help, **metadata})
