"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Standard library only, so every layer of gradlab (data, training, analysis)
can use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], *, fsync: bool = False) -> Path:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    Args:
        path: the destination; its folder is created.
        write: called with the temporary file's path; writes the whole content there.
        fsync: flush the temporary file to disk before the rename (for caches
            that must survive a power cut, not only a crash of this process).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    # mkstemp creates the file private (0600); give it the mode a plain open() would.
    os.chmod(temporary, 0o666 & ~_umask())
    try:
        write(Path(temporary))
        if fsync:
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
