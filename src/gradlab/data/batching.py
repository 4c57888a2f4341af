"""Mini-batches served straight from tensors.

The feature sets are small (12 MB for Speech Commands one/two/three), so
batches are index slices of tensors already in memory, ideally already on the
training device, instead of a per-item ``Dataset`` that decodes audio.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from gradlab.data.splits import DataSplits, SplitTensors


def iterate_batches(
    split: SplitTensors,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields ``(x, y)`` mini-batches of a split.

    Args:
        split: The tensors to batch; batches live on the split's device.
        batch_size: Samples per batch (the last may be smaller).
        shuffle: Visit samples in a random order drawn from ``generator``.
        generator: A CPU ``torch.Generator``; required when ``shuffle`` is true,
            so that the order is reproducible from a seed the caller owns.
        drop_last: Skip a final batch smaller than ``batch_size``.
        device: Move each batch there; best is to move the whole split once
            (``to_device``) when it fits, and leave this None.

    Yields:
        ``x`` ``(B, T, F)`` and ``y`` ``(B,)`` or ``(B, T)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle and generator is None:
        raise ValueError(
            "shuffle=True needs a torch.Generator: pass "
            "generator=torch.Generator().manual_seed(seed)"
        )
    n = len(split)
    if shuffle:
        order = torch.randperm(n, generator=generator).to(split.x.device)  # (N,)
    else:
        order = None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            x, y = split.x[start : start + batch_size], split.y[start : start + batch_size]
        else:
            index = order[start : start + batch_size]  # (B,)
            x, y = split.x[index], split.y[index]  # (B, T, F), (B,) or (B, T)
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        yield x, y


def to_device(data: SplitTensors | DataSplits, device: torch.device | str):
    """Moves a split or a whole ``DataSplits`` to ``device``.

    Args:
        data: A ``SplitTensors`` or ``DataSplits``.
        device: Target device, e.g. ``"cuda"``.

    Returns:
        The same kind of object with its tensors on ``device``.
    """
    return data.to(device)
