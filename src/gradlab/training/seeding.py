"""Where a run's randomness and device come from, and how a checkpoint saves and restores them.

Randomness comes from the run's seed only: it derives the init, shuffle and
diagnostics generators (and seeds torch, numpy and ``random`` globally for
anything else). On CPU the same seed gives the same numbers bit for bit, and a
run resumed from its epoch checkpoint (which holds every generator's state)
ends with the same numbers as one that was never interrupted.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

#: The generators every run derives from its seed.
GENERATORS: tuple[str, ...] = ("init", "shuffle", "diagnostics")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU.

    Raises:
        ValueError: CUDA (or a CUDA index) asked for where it is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def set_deterministic(deterministic: bool) -> None:
    """Ask torch for deterministic kernels (and set what cuBLAS needs for them), or leave the defaults."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` (``init``, ``shuffle``, ``diagnostics``) derived from the run's seed."""
    entropy = [seed] + [ord(char) for char in purpose]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seed_everything(seed: int) -> dict[str, torch.Generator]:
    """Seed python's, numpy's and torch's global generators; return the run's own generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return {name: torch.Generator().manual_seed(derive_seed(seed, name)) for name in GENERATORS}


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every generator's state, in types ``torch.load(weights_only=True)`` reads back."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": [python_state[0], list(python_state[1]), python_state[2]],
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """The inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])
