"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Standard library only, so every layer of gradlab (data, training, analysis)
can use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

#: The temporary a write to ``<folder>/<name>`` goes through: ``<folder>/.<name>.<8 characters>.tmp``.
#: The 8 characters are ``tempfile.mkstemp``'s random part (lower-case letters, digits, underscore).
TEMPORARY_PATTERN = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


#: Called with the destination before every write in a :func:`checked_writes` block.
_WRITE_CHECK: contextvars.ContextVar[Callable[[Path], None] | None] = contextvars.ContextVar(
    "gradlab_write_check", default=None)


@contextlib.contextmanager
def checked_writes(check: Callable[[Path], None]) -> Iterator[None]:
    """Call ``check(path)`` before each :func:`write_atomic` inside this block; it raises to stop the write.

    A sweep uses it to make every write of its files first check that it
    still holds the sweep's lock (:func:`gradlab.store.locking.check_lock`).
    """
    token = _WRITE_CHECK.set(check)
    try:
        yield
    finally:
        _WRITE_CHECK.reset(token)


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

    Raises:
        Whatever the check of an enclosing :func:`checked_writes` raises, before anything is written.
    """
    path = Path(path)
    check = _WRITE_CHECK.get()
    if check is not None:
        check(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)  # the name is TEMPORARY_PATTERN's
    # mkstemp creates the file private (0600); give it the mode a plain open() would.
    os.chmod(temporary, 0o666 & ~_umask())
    try:
        write(Path(temporary))
        if fsync:
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename is not None:
            raise
        # Writers (pyarrow, torch, json) report a full disk without a path: name the file being written.
        raise _naming(error, path) from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_descriptor(descriptor: int, content: bytes, path: str | os.PathLike) -> None:
    """Write all of ``content`` through ``descriptor`` and flush it to disk; a failure names ``path``.

    ``os.write`` may write only part of ``content`` (a disk nearly full, a file-size limit) and reports the
    error on the next call, without a file name: this writes the rest, and raises ``OSError(errno, "...
    while writing", path)`` as :func:`write_atomic` does (its ``str`` names ``path`` once).
    """
    view = memoryview(content)
    try:
        while view:
            written = os.write(descriptor, view)
            if not written:  # never for a regular file, but a loop must not spin on it
                raise OSError(errno.EIO, "write() wrote nothing")
            view = view[written:]
        os.fsync(descriptor)
    except OSError as error:
        raise _naming(error, path) from error


def _naming(error: OSError, path: str | os.PathLike) -> OSError:
    """``error`` as an ``OSError`` whose ``filename`` is ``path``; its ``str`` names ``path`` once.

    ``str()`` of an ``OSError`` carrying a filename already appends ``: '<path>'``, so the message itself
    only says what was being done (``[Errno 28] No space left on device while writing: '<path>'``).
    """
    return OSError(error.errno, f"{error.strerror or error} while writing", str(path))


def clean_orphaned_temporaries(folder: str | os.PathLike, *, older_than: float = 0.0) -> list[Path]:
    """Delete the temporaries :func:`write_atomic` left under ``folder`` when a process was killed mid-write.

    Only regular files named the writer's way (:data:`TEMPORARY_PATTERN`) are
    removed, in ``folder`` and every folder below it (symbolic links are not
    followed); anything else, ``notes.tmp`` included, stays. Call it when no
    process writes there (a sweep folder under its lock), or pass ``older_than``
    for a folder other processes may be writing to (a shared cache).

    Args:
        folder: the folder to clean (a run or sweep folder).
        older_than: only remove temporaries last modified more than this many seconds ago.

    Returns:
        The removed files, sorted.

    Raises:
        NotADirectoryError: ``folder`` is not an existing folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot clean {folder}: it is not an existing folder")
    now = time.time()
    removed = []
    for parent, _, names in os.walk(folder):
        for name in names:
            if not TEMPORARY_PATTERN.fullmatch(name):
                continue
            path = Path(parent, name)
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < older_than:
                continue
            path.unlink(missing_ok=True)
            removed.append(path)
    return sorted(removed)
