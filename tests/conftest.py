"""Shared test settings."""

import os

# MKL picks its kernels by CPU (AVX2, AVX-512, ...), and its float64 matmuls round differently on each: the
# reference runs (test_reference_runs.py) compare at 1e-12, and on an AVX-512 machine one of them moved by 2e-10.
# Set before torch loads MKL: MKL's results that do not depend on the CPU, for every test and its subprocesses.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny models: on a shared 2-core machine, intra-op threads only add contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
