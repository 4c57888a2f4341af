"""A run's table rows kept in memory, and in its epoch checkpoint, until the run writes its tables.

A run's callbacks collect rows as they measure, and the run folder's tables
are written once, when the run ends (:func:`gradlab.training.run.finish_run`).
Until then each epoch checkpoint holds the rows so far (:meth:`TableRows.state_dict`),
so a resumed run starts with exactly the rows an uninterrupted one had at
that epoch. A checkpoint column is a tensor (numbers and booleans, every bit
kept) or integer codes into a list of strings, so ``torch.load(...,
weights_only=True)`` reads it. Rows arrive in chunks (one measurement each)
and every chunk is encoded once: an epoch's checkpoint encodes only that
epoch's new rows. Rewriting every table at every epoch end cost a third of a
small run's time (most of it casting columns that already had their dtype).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from gradlab.instruments.frames import columns_frame
from gradlab.store import schema

#: numpy dtype kinds stored as tensors (integers, floats, booleans).
_NUMERIC_KINDS = "iufb"


def encode_frame(frame: pd.DataFrame) -> dict[str, Any]:
    """``frame``'s columns in a form ``torch.load(weights_only=True)`` reads back exactly (see :func:`decode_frame`).

    Columns of one numpy dtype share one tensor, and string columns one tensor of codes: a checkpoint's
    cost grows with its number of tensors more than with their size.

    Raises:
        TypeError: a column holds values other than numbers, booleans and strings (with missing values).
    """
    numbers: dict[str, list[str]] = {}
    texts: dict[str, tuple[np.ndarray, list[str]]] = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, np.dtype) and column.dtype.kind in _NUMERIC_KINDS:
            numbers.setdefault(column.dtype.str, []).append(name)
            continue
        values = column.to_numpy(dtype=object)
        kinds = sorted({type(value).__name__ for value in values if not (isinstance(value, str) or _missing(value))})
        if kinds:
            raise TypeError(f"column {name!r} holds {', '.join(kinds)} values; a checkpoint keeps numbers, booleans "
                            "and strings only")
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        strings = list(uniques)
        texts[name] = (codes.astype(np.int64), strings)
    rows = len(frame)
    blocks = [{"names": names, "values": torch.from_numpy(np.stack([frame[name].to_numpy() for name in names]))}
              for names in numbers.values()]
    codes = np.stack([code for code, _ in texts.values()]) if texts else np.zeros((0, rows), dtype=np.int64)
    return {"rows": rows, "order": list(frame.columns), "numbers": blocks,
            "strings": {"names": list(texts), "codes": torch.from_numpy(codes),
                        "values": [strings for _, strings in texts.values()]}}


#: The keys of an :func:`encode_frame` encoding.
_ENCODED_KEYS = frozenset({"rows", "order", "numbers", "strings"})


def is_encoded(value: object) -> bool:
    """Whether ``value`` is an :func:`encode_frame` encoding (a checkpoint keeps these in rows files)."""
    return isinstance(value, dict) and value.keys() == _ENCODED_KEYS


def _missing(value: object) -> bool:
    """Whether ``value`` marks a missing string (None, NaN or pandas' NA)."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def decode_frame(encoded: dict[str, Any], kind: str) -> pd.DataFrame:
    """The table of ``kind`` that :func:`encode_frame` encoded (conformed to its schema)."""
    columns = {}
    for block in encoded["numbers"]:
        values = block["values"].numpy()
        columns.update({name: values[index] for index, name in enumerate(block["names"])})
    strings = encoded["strings"]
    codes = strings["codes"].numpy()
    for index, (name, values) in enumerate(zip(strings["names"], strings["values"])):
        # code -1 (a missing value) picks the None appended last
        columns[name] = np.array([*values, None], dtype=object)[codes[index]]
    frame = pd.DataFrame({name: columns[name] for name in encoded["order"]}, index=pd.RangeIndex(encoded["rows"]))
    return schema.conform(frame, kind)


def combine(frames: list[pd.DataFrame], kind: str) -> pd.DataFrame:
    """The non-empty ``frames`` as one table of ``kind`` (empty, with its columns, when there are none)."""
    frames = [frame for frame in frames if len(frame)]
    return schema.conform(pd.concat(frames, ignore_index=True), kind) if frames else schema.empty(kind)


class TableRows:
    """The rows of one table (``kind`` of :mod:`gradlab.store.schema`) a callback has collected, in chunks."""

    def __init__(self, kind: str) -> None:
        schema.columns(kind)  # an unknown kind fails here, not at the first checkpoint
        self.kind = kind
        self.chunks: list[pd.DataFrame] = []
        self._encoded: list[dict[str, Any]] = []  # encodings of the first len(_encoded) chunks
        # Measurements as numpy columns, built into one chunk when the rows are asked for: a pandas table per
        # measurement cost as much as an LSTM's gate statistics themselves (31 a run).
        self._pending: list[dict[str, np.ndarray]] = []

    def add(self, frame: pd.DataFrame) -> None:
        """Append a chunk of rows (nothing for an empty one)."""
        self._build_pending()
        if len(frame):
            self.chunks.append(schema.conform(frame, self.kind))

    def add_columns(self, columns: dict[str, np.ndarray]) -> None:
        """Append rows given as every column of the table (:func:`gradlab.instruments.frames.measurement_columns`).

        They become a table with the other pending columns only when the rows are read or checkpointed.
        """
        if len(next(iter(columns.values()))):
            self._pending.append(columns)

    def _build_pending(self) -> None:
        if self._pending:
            self.chunks.append(columns_frame(self._pending, self.kind))
            self._pending = []

    def frame(self) -> pd.DataFrame:
        """Every row so far, as one table."""
        self._build_pending()
        return combine(self.chunks, self.kind)

    def state_dict(self) -> list[dict[str, Any]]:
        """The chunks, encoded for a checkpoint (each chunk encoded once)."""
        self._build_pending()
        self._encoded += [encode_frame(chunk) for chunk in self.chunks[len(self._encoded):]]
        return list(self._encoded)

    def load_state_dict(self, saved: list[dict[str, Any]]) -> None:
        """Restore the chunks of :meth:`state_dict`."""
        self.chunks = [decode_frame(encoded, self.kind) for encoded in saved]
        self._encoded, self._pending = list(saved), []

    def replace(self, frame: pd.DataFrame) -> None:
        """Hold ``frame`` as the only chunk (rows read from an older checkpoint's table files)."""
        self.chunks, self._encoded, self._pending = [], [], []
        self.add(frame)
