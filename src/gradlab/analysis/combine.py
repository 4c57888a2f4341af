"""Combine many runs' tables into one frame, one column at a time, without holding two copies.

A sweep of thousands of runs has tens of millions of gradient and gate rows.
``pd.concat`` of per-run frames (or ``pyarrow.concat_tables`` followed by
``to_pandas``) holds the pieces and the result at once, twice the memory of
the result. Here each run's table is kept as compact column arrays (strings
as category codes, integers in the narrowest type that holds them), and the
result is built one column at a time, each column's pieces dropped as soon as
it is built, so the peak stays well under two copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa


class ColumnPieces:
    """Per-run pieces of one table, collected run by run and combined once by :meth:`frame`."""

    def __init__(self, categorical: Sequence[str]) -> None:
        self._categorical = set(categorical)
        self._pieces: list[dict[str, object]] = []
        self._rows: list[int] = []
        self._dtypes: dict[str, np.dtype] = {}  # integer columns: the type they were read with

    def add(self, table: pa.Table) -> None:
        """Keep one run's table: string columns as (codes, categories), others as numpy arrays."""
        if not table.num_rows:
            return
        columns: dict[str, object] = {}
        for name, column in zip(table.column_names, table.columns):
            if name in self._categorical:
                values = column.combine_chunks()
                if not pa.types.is_dictionary(values.type):
                    values = values.dictionary_encode()
                categories = np.asarray(values.dictionary.to_pylist(), dtype=object)
                codes = values.indices.to_numpy(zero_copy_only=False)
                # A missing value has a null index; code it -1, pandas' missing category.
                codes = np.where(values.indices.is_null().to_numpy(zero_copy_only=False), -1, codes)
                columns[name] = (codes.astype(np.int8 if len(categories) < 127 else np.int32), categories)
            else:
                columns[name] = self._narrow(name, column.to_numpy())
        self._pieces.append(columns)
        self._rows.append(table.num_rows)

    def _narrow(self, name: str, values: np.ndarray) -> np.ndarray:
        """Integers in the narrowest type that holds them; their type is restored when combined."""
        if values.dtype.kind not in "iu" or not len(values):
            return values
        self._dtypes[name] = np.result_type(self._dtypes.get(name, values.dtype), values.dtype)
        narrow = np.result_type(np.min_scalar_type(int(values.min())), np.min_scalar_type(int(values.max())))
        return values.astype(narrow) if narrow.itemsize < values.dtype.itemsize else values

    def __len__(self) -> int:
        return sum(self._rows)

    def frame(self) -> pd.DataFrame:
        """Every piece as one frame (columns in first-seen order); empties this collection."""
        names: list[str] = []
        for piece in self._pieces:
            names += [name for name in piece if name not in names]
        result = {}
        for name in names:
            result[name] = self._combine(name)
        self._pieces, self._rows, self._dtypes = [], [], {}
        return pd.DataFrame(result, copy=False)

    def _combine(self, name: str) -> object:
        parts = [piece.pop(name, None) for piece in self._pieces]
        if name in self._categorical:
            categories = sorted({value for part in parts if part is not None for value in part[1]
                                 if value is not None})
            position = {value: index for index, value in enumerate(categories)}
            codes = []
            for part, rows in zip(parts, self._rows):
                if part is None:
                    codes.append(np.full(rows, -1, dtype=np.int32))
                    continue
                piece_codes, piece_categories = part
                mapping = np.array([position.get(value, -1) for value in piece_categories] + [-1], dtype=np.int32)
                codes.append(mapping[piece_codes])  # code -1 picks the appended -1
            return pd.Categorical.from_codes(np.concatenate(codes), categories=categories)
        if any(part is None for part in parts):
            # A column only some runs have (an extra setting): missing values elsewhere.
            parts = [np.full(rows, None, dtype=object) if part is None else part.astype(object)
                     for part, rows in zip(parts, self._rows)]
        if name in self._dtypes and all(part.dtype.kind in "iu" for part in parts):
            return np.concatenate(parts, dtype=self._dtypes[name])
        return np.concatenate(parts)
