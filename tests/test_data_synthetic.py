"""Synthetic long-range tasks: shapes, determinism and known baselines."""

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from gradlab.data import (
    ADDING_BASELINE_MSE,
    DISTANCE_NOISE_STD,
    adding_problem,
    copy_memory,
    distance_task,
    load_dataset,
)


def test_adding_problem_layout_and_targets():
    data = adding_problem(seq_len=50, n_train=64, n_validation=8, n_test=8, seed=1)
    x, y = data.train.x, data.train.y
    assert x.shape == (64, 50, 2) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.float32
    markers = x[..., 1]
    assert torch.all(markers.sum(dim=1) == 2)
    # One marker in each half.
    assert torch.all(markers[:, :25].sum(dim=1) == 1)
    assert torch.all(markers[:, 25:].sum(dim=1) == 1)
    # Target is the sum of the marked values, recomputed independently.
    for i in range(64):
        marked = x[i, markers[i] == 1, 0]
        assert math.isclose(float(marked.sum()), float(y[i]), rel_tol=1e-6)
    assert data.task == "regression" and data.num_outputs == 1 and data.input_size == 2


def test_adding_problem_baseline_mse_is_one_sixth():
    data = adding_problem(seq_len=20, n_train=200_000, n_validation=1, n_test=1, seed=0)
    mse = torch.mean((data.train.y - 1.0) ** 2).item()
    assert abs(mse - ADDING_BASELINE_MSE) < 0.003
    assert abs(ADDING_BASELINE_MSE - 0.1667) < 1e-4


def test_synthetic_tasks_are_deterministic_and_splits_independent():
    a = adding_problem(seq_len=30, n_train=16, n_validation=4, n_test=4, seed=7)
    b = adding_problem(seq_len=30, n_train=16, n_validation=4, n_test=4, seed=7)
    c = adding_problem(seq_len=30, n_train=16, n_validation=4, n_test=4, seed=8)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    assert not torch.equal(a.train.x[:4], a.validation.x)
    # The test split does not depend on how many training samples were drawn.
    d = adding_problem(seq_len=30, n_train=99, n_validation=4, n_test=4, seed=7)
    assert torch.equal(a.test.x, d.test.x)


def test_copy_memory_layout():
    data = copy_memory(delay=15, n_train=32, n_validation=4, n_test=4, seed=0)
    x, y = data.train.x, data.train.y
    length = 15 + 20
    assert data.seq_len == length
    assert x.shape == (32, length, 10) and y.shape == (32, length)
    assert y.dtype == torch.int64
    categories = x.argmax(dim=-1)  # (N, L)
    assert torch.all(x.sum(dim=-1) == 1)  # one-hot
    symbols = categories[:, :10]
    assert torch.all((symbols >= 1) & (symbols <= 8))
    assert torch.all(categories[:, 10 + 15 - 1] == 9)  # delimiter
    assert torch.all(categories[:, 10 : 10 + 15 - 1] == 0)
    assert torch.all(categories[:, -10:] == 0)
    assert torch.all(y[:, :-10] == 0)
    assert torch.equal(y[:, -10:], symbols)
    assert data.num_outputs == 9 and data.input_size == 10
    # The documented baseline: blank for sure, then uniform over symbols.
    logits = torch.full((32, length, 9), -1e9)
    logits[:, :-10, 0] = 0.0
    logits[:, -10:, 1:] = 0.0
    loss = F.cross_entropy(logits.reshape(-1, 9), y.reshape(-1))
    assert math.isclose(loss.item(), data.info["baseline_loss"], rel_tol=1e-5)


def test_copy_memory_seq_len_alternative():
    data = copy_memory(seq_len=120, n_train=2, n_validation=1, n_test=1)
    assert data.info["delay"] == 100 and data.train.x.shape[1] == 120
    with pytest.raises(ValueError, match="not both"):
        copy_memory(seq_len=120, delay=100)


@pytest.mark.parametrize("distance", [0, 7, 49])
def test_distance_task_event_is_at_the_requested_distance(distance):
    data = distance_task(
        seq_len=50, distance=distance, noise_std=0, n_train=64, n_validation=4, n_test=4
    )
    x, y = data.train.x, data.train.y
    assert x.shape == (64, 50, 3) and y.shape == (64,)
    nonzero_steps = (x.abs().sum(dim=-1) > 0).nonzero()[:, 1]
    assert torch.all(nonzero_steps == 50 - 1 - distance)
    assert torch.equal(x[:, 50 - 1 - distance].argmax(dim=-1), y)
    assert set(y.tolist()) == {0, 1, 2}


def test_distance_task_noise_and_bad_distance():
    data = distance_task(seq_len=40, noise_std=0.5, n_train=500, n_validation=4, n_test=4)
    x = data.train.x
    assert abs(x[:, 1:].std().item() - 0.5) < 0.02
    with pytest.raises(ValueError, match="distance"):
        distance_task(seq_len=10, distance=10)


def test_distance_task_default_noise_makes_every_sequence_distinct():
    data = distance_task(seq_len=50, n_train=2000, n_validation=500, n_test=500, seed=0)
    assert data.info["noise_std"] == DISTANCE_NOISE_STD > 0
    rows = {
        split: getattr(data, split).x.reshape(len(getattr(data, split)), -1)
        for split in ("train", "validation", "test")
    }
    everything = torch.cat(list(rows.values()))  # (N_all, T * C)
    # No sequence is repeated within a split or shared between splits.
    assert torch.unique(everything, dim=0).shape[0] == everything.shape[0] == 3000
    # Without noise the same call has only one sequence per class in all splits.
    noiseless = distance_task(seq_len=50, noise_std=0, n_train=2000, n_validation=500, n_test=500)
    assert torch.unique(noiseless.train.x.reshape(2000, -1), dim=0).shape[0] == 3
    # The event still names the class at its step, in every sequence, at the default noise.
    for split in ("train", "validation", "test"):
        tensors = getattr(data, split)
        assert torch.equal(tensors.x[:, 0].argmax(dim=-1), tensors.y)  # default distance: step 0
        assert tensors.x[:, 0].max(dim=-1).values.min() > 0.5
    # Background steps carry noise of the documented size.
    assert abs(data.train.x[:, 1:].std().item() - DISTANCE_NOISE_STD) < 0.002


def test_distance_task_without_noise_reproduces_the_earlier_data_exactly():
    # SHA-256 of x and y bytes, computed with the noiseless version this default replaced.
    expected = {
        "train": "afdf74ec171a3457c173545efb663b4262b5826c80ccca7dba388293c7191b7b",
        "validation": "8b2e3dd5cbf283b3478b7c2570358515231187ac3eb662cdf46c71973da72880",
        "test": "87c1f4b821802d4681eb0e109e66c24930d382f63331fbf4ea2aeb8e3cddf5a6",
    }
    data = distance_task(
        seq_len=20, distance=13, noise_std=0.0, n_train=64, n_validation=8, n_test=16, seed=5
    )
    for split, digest in expected.items():
        tensors = getattr(data, split)
        content = tensors.x.numpy().tobytes() + tensors.y.numpy().tobytes()
        assert hashlib.sha256(content).hexdigest() == digest, split
    with pytest.raises(ValueError, match="noise_std"):
        distance_task(seq_len=10, noise_std=-0.1)
    with pytest.raises(ValueError, match="noise_std"):
        distance_task(seq_len=10, noise_std=float("nan"))


def test_long_sequences_generate_quickly():
    data = load_dataset("adding", seq_len=1000, n_train=1000, n_validation=10, n_test=10)
    assert data.train.x.shape == (1000, 1000, 2)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="adding.*copy-memory"):
        load_dataset("mnist")
