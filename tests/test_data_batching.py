"""Tensor-backed batching."""

import pytest
import torch

from gradlab.data import SplitTensors, iterate_batches, to_device


def _split(n=10):
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1).expand(n, 3, 2).contiguous()
    return SplitTensors(x, torch.arange(n))


def test_batches_in_order_cover_everything():
    batches = list(iterate_batches(_split(), 4, shuffle=False))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([y for _, y in batches]), torch.arange(10))
    for x, y in batches:
        assert torch.equal(x[:, 0, 0].long(), y)  # pairs stay aligned


def test_drop_last():
    batches = list(iterate_batches(_split(), 4, shuffle=False, drop_last=True))
    assert [len(b[1]) for b in batches] == [4, 4]


def test_shuffle_is_reproducible_from_the_generator():
    split = _split(50)
    first = [
        y
        for _, y in iterate_batches(
            split, 8, shuffle=True, generator=torch.Generator().manual_seed(3)
        )
    ]
    again = [
        y
        for _, y in iterate_batches(
            split, 8, shuffle=True, generator=torch.Generator().manual_seed(3)
        )
    ]
    other = [
        y
        for _, y in iterate_batches(
            split, 8, shuffle=True, generator=torch.Generator().manual_seed(4)
        )
    ]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    seen = torch.cat(first)
    assert sorted(seen.tolist()) == list(range(50))
    assert not torch.equal(seen, torch.arange(50))
    for x, y in iterate_batches(split, 8, shuffle=True, generator=torch.Generator().manual_seed(3)):
        assert torch.equal(x[:, 0, 0].long(), y)


def test_shuffle_without_generator_is_refused():
    with pytest.raises(ValueError, match="Generator"):
        next(iterate_batches(_split(), 4, shuffle=True))


def test_split_validation_and_device_move():
    with pytest.raises(ValueError, match="N, T, F"):
        SplitTensors(torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match="number of samples"):
        SplitTensors(torch.zeros(3, 4, 1), torch.zeros(2))
    moved = to_device(_split(), "cpu")
    assert moved.x.device.type == "cpu" and torch.equal(moved.y, torch.arange(10))


def test_batches_can_be_moved_to_a_device():
    batches = list(iterate_batches(_split(), 4, shuffle=False, device="meta"))
    assert all(x.device.type == "meta" and y.device.type == "meta" for x, y in batches)
    assert [x.shape[0] for x, _ in batches] == [4, 4, 2]


def test_split_is_a_torch_dataset_a_dataloader_batches():
    from torch.utils.data import DataLoader, Dataset

    split = _split(10)
    assert isinstance(split, Dataset)
    x0, y0 = split[3]
    assert x0.shape == (3, 2) and int(y0) == 3 and torch.equal(x0, split.x[3])
    batches = list(DataLoader(split, batch_size=4, shuffle=False))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 3, 2), (4, 3, 2), (2, 3, 2)]
    assert torch.equal(torch.cat([y for _, y in batches]), split.y)
    assert torch.equal(torch.cat([x for x, _ in batches]), split.x)
    # Attribute access and the frozen dataclass behaviour are unchanged.
    assert split.x.shape == (10, 3, 2) and len(split) == 10
    with pytest.raises(AttributeError):
        split.x = split.x


def test_per_step_labels_come_out_per_sample():
    from torch.utils.data import DataLoader

    split = SplitTensors(torch.randn(5, 4, 2), torch.arange(20).reshape(5, 4))
    (x, y), = list(DataLoader(split, batch_size=5))
    assert torch.equal(y, split.y) and torch.equal(x, split.x)
