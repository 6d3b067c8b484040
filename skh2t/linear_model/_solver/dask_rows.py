"""A dask array as a row source of the solvers: products as dask reductions, never computed whole.

:class:`DaskRows` gives the solvers what :class:`~skh2t.linear_model._solver.rows.StackedRows`
gives them (``shape``, ``dtype``, ``tdot``, ``take``, ``chunks``,
``column_chunks``, ``column_extremes``) for a 2-D dask array chunked by rows:
``X.T @ R`` is one task per row block summed in the graph, so it runs where
the blocks are (threads, processes or a ``distributed`` cluster); gathered
columns and row chunks are computed one piece at a time.

dask is optional: nothing here imports it unless the caller already gave a
dask array (:func:`is_dask_array` looks at ``sys.modules``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np

from skh2t.linear_model._solver.design import thin_left_product

# Rows computed at a time by DaskRows.chunks: at most this many bytes of X per piece.
PIECE_BYTES = 4 * 2**20


def is_dask_array(X) -> bool:
    """Whether ``X`` is a dask array, without importing dask when nobody has."""
    array_module = sys.modules.get("dask.array")
    return array_module is not None and isinstance(X, array_module.Array)


def whole_rows(X):
    """``X`` (a 2-D dask array) with every row in one chunk: rechunked along the columns if
    needed (lazily); a ValueError if it is not 2-D or its chunk sizes are unknown."""
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2-D dask array of shape (n_samples, n_features), got {X.ndim}-D "
            f"of shape {X.shape}."
        )
    if any(np.isnan(size) for sizes in X.chunks for size in sizes):
        raise ValueError(
            "The dask array has unknown chunk sizes (e.g. after boolean indexing): call "
            "X.compute_chunk_sizes() first."
        )
    return X if len(X.chunks[1]) == 1 else X.rechunk({1: -1})


def _summed(parts: list) -> np.ndarray:
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


class DaskRows:
    """The rows of a 2-D dask array, chunked by rows (see :func:`whole_rows`).

    Parameters
    ----------
    array : dask.array.Array
        Float32 or float64, every row in one chunk.
    """

    out_of_core = True

    def __init__(self, array):
        self.array = array
        self.bounds = np.cumsum((0, *array.chunks[0]))

    @classmethod
    def of(cls, X) -> DaskRows:
        return cls(whole_rows(X))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(size) for size in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def subset(self, rows: np.ndarray) -> DaskRows:
        """The rows ``rows`` (lazily: a dask array of them, nothing computed)."""
        return DaskRows(self.array[np.asarray(rows, dtype=np.intp)])

    def tdot(self, residual: np.ndarray, dtype=None) -> np.ndarray:
        """``X.T @ residual``: one product per row block, summed, as one dask computation."""
        import dask

        blocks = self.array.to_delayed().ravel()
        parts = [
            dask.delayed(thin_left_product)(block, residual[start:stop], dtype=dtype)
            for block, start, stop in zip(blocks, self.bounds[:-1], self.bounds[1:], strict=True)
        ]
        return dask.delayed(_summed)(parts).compute()

    def take(self, columns: np.ndarray | slice, dtype=None) -> np.ndarray:
        """The columns ``columns`` of every row, computed (only those columns are gathered)."""
        return np.asarray(self.array[:, columns].compute(), dtype=dtype)

    def as_array(self) -> np.ndarray:
        """The whole matrix, computed: only for callers that would gather it anyway."""
        return np.asarray(self.array.compute())

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)`` for consecutive chunks of at most ``size`` rows; computed
        :data:`PIECE_BYTES` of X at a time."""
        row_bytes = max(1, self.shape[1] * self.dtype.itemsize)
        step = max(size, PIECE_BYTES // row_bytes)
        for first in range(0, self.shape[0], step):
            piece = np.asarray(self.array[first : first + step].compute())
            for offset in range(0, piece.shape[0], size):
                yield first + offset, piece[offset : offset + size]

    def column_chunks(
        self, columns: np.ndarray | None, size: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, X[rows, columns])`` for consecutive chunks of at most ``size`` rows
        (``columns=None``: all); computed :data:`PIECE_BYTES` at a time (fewer, larger tasks)."""
        width = self.shape[1] if columns is None else len(columns)
        step = max(size, PIECE_BYTES // max(1, width * self.dtype.itemsize))
        for first in range(0, self.shape[0], step):
            rows = self.array[first : first + step]  # rows first: no gather of a whole chunk
            piece = np.asarray((rows if columns is None else rows[:, columns]).compute())
            for offset in range(0, piece.shape[0], size):
                yield first + offset, piece[offset : offset + size]

    def column_extremes(self) -> tuple[np.ndarray, np.ndarray]:
        """The largest and the smallest value of every column (two dask reductions)."""
        import dask

        return dask.compute(self.array.max(axis=0), self.array.min(axis=0))

    def all_finite(self) -> bool:
        """Whether every entry is finite (a dask reduction)."""
        import dask.array as da

        return bool(da.isfinite(self.array).all().compute())
