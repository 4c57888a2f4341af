"""A checksummed, atomically written store of numpy arrays keyed by a hash.

Feature arrays are expensive to compute and cheap to keep. Each entry is one
``.npz`` file holding the arrays, the key it was made for, and a SHA-256 of
the arrays' contents. A file whose key or checksum does not match, or that
cannot be read at all, is treated as missing (and reported), never trusted.
Files are written to a temporary name and moved into place with
``os.replace``, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gradlab.store.atomic import write_atomic

_KEY = "__key__"
_CHECKSUM = "__checksum__"


def make_key(parts: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of ``parts`` as canonical JSON.

    Args:
        parts: Everything the cached value depends on (JSON-serialisable).
    """
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_arrays(path: str | os.PathLike, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes ``arrays`` under ``key`` atomically.

    Args:
        path: Destination ``.npz`` file; its folder is created.
        key: The entry's key (``make_key``).
        arrays: Named arrays; names must not start with ``__``.
    """
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload[_KEY] = np.array(key)
    payload[_CHECKSUM] = np.array(_checksum(arrays))
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **payload)

    write_atomic(path, write, fsync=True)


def load_arrays(path: str | os.PathLike, key: str) -> dict[str, np.ndarray] | None:
    """Reads an entry written by ``save_arrays``, or ``None`` if it is not usable.

    Returns ``None`` without a warning when the file is absent, and with a
    warning when it exists but is unreadable, made for another key, or fails
    its checksum.

    Args:
        path: The ``.npz`` file.
        key: The key the caller expects.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        stored_key = str(arrays.pop(_KEY))
        stored_checksum = str(arrays.pop(_CHECKSUM))
    except Exception as error:
        warnings.warn(
            f"ignoring unreadable cache file {path} ({error}); rebuilding it", stacklevel=2
        )
        return None
    if stored_key != key:
        warnings.warn(
            f"ignoring cache file {path}: made for another key; rebuilding it", stacklevel=2
        )
        return None
    if _checksum(arrays) != stored_checksum:
        warnings.warn(
            f"ignoring corrupt cache file {path} (checksum mismatch); rebuilding it", stacklevel=2
        )
        return None
    return arrays
