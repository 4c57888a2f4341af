"""The table rows of a run's epoch checkpoints, kept in append-only files beside ``checkpoint.pt``.

Until a run ends its table rows live in its callbacks' state
(:mod:`gradlab.training.table_rows`), and the epoch checkpoint must hold them
so a resumed run starts with exactly the rows an uninterrupted one had.
Saving them all inside ``checkpoint.pt`` rewrote every earlier row at every
epoch end (about 2.5 MB of gate rows by the end of a 30-epoch FSDD run, a
sixth of its time). Instead each epoch's new chunks go into one file,
``checkpoint-rows/epoch-<epochs done>-<lineage>.pt``, written once
(atomically), and the checkpoint holds a reference ``{"rows_file": name,
"index": i}`` in place of each chunk. An epoch's cost is that of its own rows.

A resumed run reads exactly the files its checkpoint references. A file
written for an epoch whose checkpoint was never written (the run stopped in
between) is referenced by no checkpoint: it is ignored, and deleted after the
next checkpoint is in place. The ``lineage`` (random, chosen when a run starts
from scratch, kept across resumes) makes a file of an older attempt at the run
in the same folder unmistakable for one of this attempt.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import torch

from gradlab.store.atomic import write_atomic
from gradlab.store.io import RunFolderError
from gradlab.training.table_rows import is_encoded

#: Folder of a run folder holding the rows files of its epoch checkpoints.
ROWS_FOLDER = "checkpoint-rows"
#: Name of a rows file: epochs done when it was written, then the lineage of the run that wrote it.
ROWS_FILE = re.compile(r"epoch-(?P<epoch>\d+)-(?P<lineage>[0-9a-f]+)\.pt")


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path``; a failed write (a full disk) raises its ``OSError``.

    Given a path, torch's zip writer turns a failed write into a ``RuntimeError`` ("unexpected pos
    ...") that names neither the cause nor the file. Through a Python file object the ``OSError``
    (ENOSPC) is raised, or, when the writer swallowed it and failed on its next write, is that
    ``RuntimeError``'s context: it is raised again here, and
    :func:`gradlab.store.atomic.write_atomic` names the file.
    """
    with open(path, "wb") as handle:
        try:
            torch.save(obj, handle)
        except RuntimeError as error:
            cause = error.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror or str(cause)) from error


def _has_containers(items: list | tuple) -> bool:
    """Whether any of ``items`` is a dict, list or tuple (which may hold encoded chunks or references)."""
    return any(isinstance(item, (dict, list, tuple)) for item in items)


def _is_reference(value: dict) -> bool:
    return len(value) == 2 and "rows_file" in value and "index" in value


class RowsFiles:
    """Writes each encoded chunk of a checkpoint's callback states once, and reads them back on resume."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = Path(run_dir) / ROWS_FOLDER
        self.lineage = uuid.uuid4().hex[:12]
        # id(encoding) -> (encoding, its reference); the encoding is held so that its id stays its own
        self._written: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._swept = False

    def externalise(self, states: Any, epochs_done: int) -> tuple[Any, dict[str, Any]]:
        """``states`` with each encoded chunk replaced by its reference, and the checkpoint's ``rows`` entry.

        Chunks no earlier call saw are written to this epoch's rows file (one
        file, atomically) before this returns, so a checkpoint written after it
        references only files already in place.
        """
        name = f"epoch-{epochs_done:05d}-{self.lineage}.pt"
        new: list[dict[str, Any]] = []
        files: set[str] = set()

        def replace(value: Any) -> Any:
            if isinstance(value, dict):
                if not is_encoded(value):
                    return {key: replace(item) for key, item in value.items()}
                known = self._written.get(id(value))
                if known is None or known[0] is not value:
                    known = (value, {"rows_file": name, "index": len(new)})
                    new.append(value)
                    self._written[id(value)] = known
                files.add(known[1]["rows_file"])
                return known[1]
            if isinstance(value, (list, tuple)) and _has_containers(value):
                return type(value)(replace(item) for item in value)
            return value  # a leaf, or a list of leaves (a history column: not copied)

        replaced = replace(states)
        if new:
            file_content = {"lineage": self.lineage, "epochs_done": epochs_done, "chunks": new}
            write_atomic(self.folder / name, lambda temporary: save_torch(file_content, temporary))
        return replaced, {"lineage": self.lineage, "files": sorted(files)}

    def sweep(self, referenced: list[str]) -> None:
        """Delete the rows files no checkpoint references (once a process has written its first checkpoint)."""
        if self._swept or not self.folder.is_dir():
            return
        self._swept = True
        for path in self.folder.iterdir():
            if ROWS_FILE.fullmatch(path.name) and path.name not in referenced:
                path.unlink(missing_ok=True)

    def internalise(self, states: Any, rows: dict[str, Any] | None, checkpoint: Path) -> Any:
        """``states`` of a checkpoint with every reference replaced by the chunk it names.

        ``rows`` is the checkpoint's ``rows`` entry (None for formats 2 and 3,
        whose chunks are inline). Afterwards chunks read here are not written again.

        Raises:
            RunFolderError: a referenced file is missing, damaged or of another
                attempt at the run (naming it and the fix).
        """
        if rows is None:
            return states
        self.lineage = rows["lineage"]
        loaded: dict[str, list[dict[str, Any]]] = {}
        fix = (f"delete {checkpoint} and {self.folder} to train that run from the start on --resume, "
               "or use --overwrite")

        def chunks(name: str) -> list[dict[str, Any]]:
            if name not in loaded:
                path = self.folder / name
                if not path.is_file():
                    raise RunFolderError(f"{path} is missing, and {checkpoint} needs its table rows; {fix}")
                try:
                    content = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged file
                    raise RunFolderError(f"{path} is damaged ({type(error).__name__}); {checkpoint} needs its "
                                         f"table rows; {fix}") from None
                if not isinstance(content, dict) or content.get("lineage") != self.lineage:
                    raise RunFolderError(f"{path} was not written by the run attempt {checkpoint} belongs to; {fix}")
                loaded[name] = content["chunks"]
            return loaded[name]

        def restore(value: Any) -> Any:
            if isinstance(value, dict):
                if not _is_reference(value):
                    return {key: restore(item) for key, item in value.items()}
                found = chunks(value["rows_file"])
                if not 0 <= value["index"] < len(found):
                    raise RunFolderError(f"{self.folder / value['rows_file']} holds {len(found)} chunks, and "
                                         f"{checkpoint} needs chunk {value['index']}; {fix}")
                chunk = found[value["index"]]
                self._written[id(chunk)] = (chunk, value)
                return chunk
            if isinstance(value, (list, tuple)) and _has_containers(value):
                return type(value)(restore(item) for item in value)
            return value

        return restore(states)
