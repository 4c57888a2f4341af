"""Synthetic long-range tasks: controlled probes of gradient flow over time.

Each task is generated deterministically from a seed at any length, in
seconds, so an experiment can sweep the sequence length ``T`` from 100 to
1,000 steps. The three splits are drawn from independent random streams
derived from ``seed`` (``numpy.random.SeedSequence(seed).spawn(3)``), so a
split does not change when another split's size does.

- ``adding_problem``: Hochreiter & Schmidhuber (1997), in the form of
  Le et al. (2015) and Arjovsky et al. (2016). Regression.
- ``copy_memory``: Arjovsky et al. (2016). One label per time step.
- ``distance_task``: one class per sequence, carried by a single event at
  an exact number of steps before the end (the gradient distance), over
  background noise that makes every sequence distinct.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from gradlab.data.splits import (
    TASK_CLASSIFICATION,
    TASK_REGRESSION,
    TASK_SEQUENCE_CLASSIFICATION,
    DataSplits,
    SplitTensors,
)

#: Default background noise of the distance task (see ``distance_task``).
DISTANCE_NOISE_STD = 0.1

#: Mean squared error of always predicting 1 on the adding problem: the sum of
#: two U(0, 1) values has mean 1 and variance 2/12.
ADDING_BASELINE_MSE = 1.0 / 6.0


def _split_generators(seed: int) -> list[torch.Generator]:
    """Three independent CPU generators (train, validation, test) from one seed."""
    children = np.random.SeedSequence(seed).spawn(3)
    return [
        torch.Generator().manual_seed(int(child.generate_state(1, dtype=np.uint64)[0] >> 1))
        for child in children
    ]


def _check_sizes(n_train: int, n_validation: int, n_test: int) -> None:
    for name, n in (("n_train", n_train), ("n_validation", n_validation), ("n_test", n_test)):
        if n < 1:
            raise ValueError(f"{name} must be >= 1, got {n}")


def adding_split(n: int, seq_len: int, generator: torch.Generator) -> SplitTensors:
    """Draws ``n`` adding-problem sequences.

    Channel 0 holds values drawn from U(0, 1); channel 1 marks two steps with
    1, one uniformly in the first half and one in the second half. The target
    is the sum of the two marked values.

    Args:
        n: Number of sequences.
        seq_len: Steps per sequence, ``T >= 2``.
        generator: Source of randomness.

    Returns:
        ``x`` ``(n, T, 2)`` float32 and ``y`` ``(n,)`` float32.
    """
    if seq_len < 2:
        raise ValueError(f"the adding problem needs seq_len >= 2, got {seq_len}")
    half = seq_len // 2
    values = torch.rand(n, seq_len, generator=generator)  # (n, T)
    first = torch.randint(0, half, (n,), generator=generator)  # (n,)
    second = torch.randint(half, seq_len, (n,), generator=generator)  # (n,)
    markers = torch.zeros(n, seq_len)  # (n, T)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)  # (n, T, 2)
    y = values[rows, first] + values[rows, second]  # (n,)
    return SplitTensors(x, y)


def adding_problem(
    *,
    seq_len: int = 100,
    n_train: int = 5000,
    n_validation: int = 1000,
    n_test: int = 1000,
    seed: int = 0,
) -> DataSplits:
    """The adding problem as a ``DataSplits`` (task ``"regression"``).

    Predicting the constant 1 gives MSE ``ADDING_BASELINE_MSE`` (about 0.167);
    a model has learned the task only when it beats that clearly.

    Args:
        seq_len: Steps per sequence.
        n_train: Training sequences.
        n_validation: Validation sequences.
        n_test: Test sequences.
        seed: Seed of all three splits.

    Returns:
        Splits with ``x`` ``(N, T, 2)`` and ``y`` ``(N,)`` float32.
    """
    _check_sizes(n_train, n_validation, n_test)
    g_train, g_validation, g_test = _split_generators(seed)
    return DataSplits(
        train=adding_split(n_train, seq_len, g_train),
        validation=adding_split(n_validation, seq_len, g_validation),
        test=adding_split(n_test, seq_len, g_test),
        task=TASK_REGRESSION,
        num_outputs=1,
        input_size=2,
        seq_len=seq_len,
        info={"dataset": "adding", "seed": seed, "baseline_mse": ADDING_BASELINE_MSE},
    )


def copy_split(
    n: int, delay: int, generator: torch.Generator, *, n_symbols: int = 8, memory_length: int = 10
) -> SplitTensors:
    """Draws ``n`` copy-memory sequences of length ``delay + 2 * memory_length``.

    Categories: 0 is blank, ``1..n_symbols`` are symbols, ``n_symbols + 1`` is
    the delimiter. The input is ``memory_length`` random symbols, then
    ``delay - 1`` blanks, the delimiter, and ``memory_length`` blanks, one-hot
    encoded. The target is blank for the first ``delay + memory_length``
    steps and then the original symbols, in order.

    Args:
        n: Number of sequences.
        delay: Steps between the end of the symbols and the delimiter plus
            one (Arjovsky et al.'s ``T``), ``>= 1``.
        generator: Source of randomness.
        n_symbols: Alphabet size.
        memory_length: Symbols to remember.

    Returns:
        ``x`` ``(n, L, n_symbols + 2)`` float32 and ``y`` ``(n, L)`` int64,
        ``L = delay + 2 * memory_length``.
    """
    if delay < 1:
        raise ValueError(f"copy memory needs delay >= 1, got {delay}")
    if n_symbols < 1 or memory_length < 1:
        raise ValueError("n_symbols and memory_length must be >= 1")
    length = delay + 2 * memory_length
    symbols = torch.randint(1, n_symbols + 1, (n, memory_length), generator=generator)  # (n, M)
    categories = torch.zeros(n, length, dtype=torch.long)  # (n, L)
    categories[:, :memory_length] = symbols
    categories[:, delay + memory_length - 1] = n_symbols + 1
    x = F.one_hot(categories, n_symbols + 2).float()  # (n, L, n_symbols + 2)
    y = torch.zeros(n, length, dtype=torch.long)  # (n, L)
    y[:, -memory_length:] = symbols
    return SplitTensors(x, y)


def copy_memory(
    *,
    delay: int | None = None,
    seq_len: int | None = None,
    n_symbols: int = 8,
    memory_length: int = 10,
    n_train: int = 2000,
    n_validation: int = 500,
    n_test: int = 500,
    seed: int = 0,
) -> DataSplits:
    """Copy memory as a ``DataSplits`` (task ``"sequence_classification"``).

    Give either ``delay`` (the paper's ``T``) or the total ``seq_len``
    (``delay + 2 * memory_length``); the default is ``delay=100``.

    Targets are per step, ``y`` ``(N, L)`` with ``num_outputs = n_symbols + 1``
    classes (blank and symbols): a model needs a per-step readout giving logits
    ``(B, L, n_symbols + 1)``, and the loss is
    ``cross_entropy(logits.reshape(-1, C), y.reshape(-1))``. Predicting blank
    everywhere and uniform symbols over the last ``memory_length`` steps gives
    ``info["baseline_loss"] = memory_length * log(n_symbols) / L``.

    Args:
        delay: Steps to remember across.
        seq_len: Total sequence length, instead of ``delay``.
        n_symbols: Alphabet size.
        memory_length: Symbols to remember.
        n_train: Training sequences.
        n_validation: Validation sequences.
        n_test: Test sequences.
        seed: Seed of all three splits.

    Returns:
        Splits with ``x`` ``(N, L, n_symbols + 2)`` and ``y`` ``(N, L)``.
    """
    if delay is not None and seq_len is not None:
        raise ValueError("give delay or seq_len for copy memory, not both")
    if seq_len is not None:
        delay = seq_len - 2 * memory_length
        if delay < 1:
            raise ValueError(
                f"seq_len must exceed 2 * memory_length = {2 * memory_length}, got {seq_len}"
            )
    elif delay is None:
        delay = 100
    _check_sizes(n_train, n_validation, n_test)
    length = delay + 2 * memory_length
    options = {"n_symbols": n_symbols, "memory_length": memory_length}
    g_train, g_validation, g_test = _split_generators(seed)
    return DataSplits(
        train=copy_split(n_train, delay, g_train, **options),
        validation=copy_split(n_validation, delay, g_validation, **options),
        test=copy_split(n_test, delay, g_test, **options),
        task=TASK_SEQUENCE_CLASSIFICATION,
        num_outputs=n_symbols + 1,
        input_size=n_symbols + 2,
        seq_len=length,
        class_names=("blank",) + tuple(str(s) for s in range(1, n_symbols + 1)),
        info={
            "dataset": "copy-memory",
            "seed": seed,
            "delay": delay,
            **options,
            "baseline_loss": memory_length * math.log(n_symbols) / length,
        },
    )


def distance_split(
    n: int,
    seq_len: int,
    distance: int,
    generator: torch.Generator,
    *,
    num_classes: int = 3,
    noise_std: float = DISTANCE_NOISE_STD,
) -> SplitTensors:
    """Draws ``n`` sequences whose class is shown once, ``distance`` steps from the end.

    Every step holds Gaussian noise of standard deviation ``noise_std`` on
    ``num_classes`` channels; at step ``seq_len - 1 - distance`` the channel
    of the sequence's class gets +1. Nothing else carries the label, so a
    last-step readout must carry it across exactly ``distance`` steps.

    Args:
        n: Number of sequences.
        seq_len: Steps per sequence.
        distance: Steps from the event to the last step, ``0 <= distance < seq_len``.
        generator: Source of randomness.
        num_classes: Number of classes (and input channels).
        noise_std: Standard deviation of the background noise; 0 gives
            noiseless sequences (and draws nothing for it from ``generator``).

    Returns:
        ``x`` ``(n, T, num_classes)`` float32 and ``y`` ``(n,)`` int64.
    """
    if not 0 <= distance < seq_len:
        raise ValueError(f"distance must be in [0, seq_len) = [0, {seq_len}), got {distance}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
    y = torch.randint(0, num_classes, (n,), generator=generator)  # (n,)
    x = torch.zeros(n, seq_len, num_classes)  # (n, T, C)
    if noise_std > 0:
        x += noise_std * torch.randn(n, seq_len, num_classes, generator=generator)
    x[torch.arange(n), seq_len - 1 - distance, y] += 1.0
    return SplitTensors(x, y)


def distance_task(
    *,
    seq_len: int = 100,
    distance: int | None = None,
    num_classes: int = 3,
    noise_std: float = DISTANCE_NOISE_STD,
    n_train: int = 5000,
    n_validation: int = 1000,
    n_test: int = 1000,
    seed: int = 0,
) -> DataSplits:
    """The distance task as a ``DataSplits`` (task ``"classification"``).

    Background noise is on by default (``DISTANCE_NOISE_STD = 0.1``). Without
    it the task has only ``num_classes`` distinct input sequences, shared by
    all three splits, so test accuracy would be training fit. With it every
    sequence is distinct (continuous noise never repeats), and the noise's
    total energy ``T * num_classes * 0.01`` exceeds the event's (1) from
    ``T = 34`` on (3 classes), so a test sequence is no near copy of a
    training one: a model has to find the event. The task stays as learnable
    as before: the event (+1) is 10 noise standard deviations high, so the
    event step alone names the class except with probability about 1e-12
    (a wrong channel beating the right one by 1 is a 7-sigma event at
    ``0.1 * sqrt(2)``); what is hard is still carrying it across the distance.
    ``noise_std=0`` reproduces the noiseless data of earlier versions exactly.

    Args:
        seq_len: Steps per sequence.
        distance: Steps between the informative event and the last step;
            default ``seq_len - 1`` (the event is the first step).
        num_classes: Number of classes; chance accuracy is ``1 / num_classes``.
        noise_std: Standard deviation of background noise on every step
            and channel (0: none).
        n_train: Training sequences.
        n_validation: Validation sequences.
        n_test: Test sequences.
        seed: Seed of all three splits.

    Returns:
        Splits with ``x`` ``(N, T, num_classes)`` and ``y`` ``(N,)`` int64.
    """
    if distance is None:
        distance = seq_len - 1
    _check_sizes(n_train, n_validation, n_test)
    options = {"num_classes": num_classes, "noise_std": noise_std}
    g_train, g_validation, g_test = _split_generators(seed)
    return DataSplits(
        train=distance_split(n_train, seq_len, distance, g_train, **options),
        validation=distance_split(n_validation, seq_len, distance, g_validation, **options),
        test=distance_split(n_test, seq_len, distance, g_test, **options),
        task=TASK_CLASSIFICATION,
        num_outputs=num_classes,
        input_size=num_classes,
        seq_len=seq_len,
        class_names=tuple(f"class_{k}" for k in range(num_classes)),
        info={"dataset": "distance", "seed": seed, "distance": distance, **options},
    )
