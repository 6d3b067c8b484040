"""A matrix given as a vertical stack of row blocks: a fold's training rows without a copy.

A cross-validation fold trains on most rows of ``X``. Copying them
(``X[train]``) costs a pass over ``X`` and as much memory again per fold and
worker; yet when the rows of ``X`` are ordered by fold, the training rows of
every fold are at most two contiguous slices of ``X`` (the folds before and
after its validation block). :class:`StackedRows` holds such slices as views
and gives the solvers what they need of the stacked matrix: its thin
products ``X.T @ R``, gathered columns, and its rows in chunks.

When the rows do not fall into a few runs (:data:`MAX_BLOCKS`), the stack is
one block holding a copy: what ``X[rows]`` gave before.

:meth:`StackedRows.of` gives a dask array's rows as a
:class:`~skh2t.linear_model._solver.dask_rows.DaskRows` (the same interface,
its products dask reductions), and :attr:`StackedRows.out_of_core` tells the
solvers when the blocks are views of a file (a memmap), whose working set
they then read in row blocks rather than copy (:mod:`.streamed`).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from skh2t.linear_model._solver.dask_rows import DaskRows, is_dask_array
from skh2t.linear_model._solver.design import thin_left_product

# More runs than this and the rows are copied: each block costs one BLAS call per product.
MAX_BLOCKS = 8


@dataclass(frozen=True)
class StackedRows:
    """The matrix ``np.vstack(blocks)``, kept as its blocks.

    Parameters
    ----------
    blocks : tuple of ndarray
        2-D arrays (views or copies; C-contiguous unless one whole array was
        wrapped as it is) with the same number of columns and the same dtype.

    Examples
    --------
    >>> X = np.arange(12.0).reshape(4, 3)
    >>> rows = StackedRows.of(X, np.array([0, 1, 3]))
    >>> len(rows.blocks), rows.shape
    (2, (3, 3))
    >>> bool(np.shares_memory(rows.blocks[0], X))
    True
    >>> rows.take(np.array([0, 2]))
    array([[ 0.,  2.],
           [ 3.,  5.],
           [ 9., 11.]])
    """

    blocks: tuple[np.ndarray, ...]

    @classmethod
    def of(
        cls, X: np.ndarray | StackedRows | DaskRows, rows: np.ndarray | None = None
    ) -> StackedRows | DaskRows:
        """The rows ``rows`` of ``X`` (all rows for ``None``), as views where they form at most
        :data:`MAX_BLOCKS` runs of consecutive increasing indices, else as one copy. A dask
        array (or :class:`DaskRows`) gives a :class:`DaskRows` of those rows, nothing computed."""
        if is_dask_array(X):
            X = DaskRows.of(X)
        if isinstance(X, DaskRows):
            return X if rows is None else X.subset(rows)
        if isinstance(X, StackedRows):
            if rows is None:
                return X
            X = X.as_array()
        if rows is None:  # as it is: wrapping never copies
            return cls((np.asarray(X),))
        rows = np.asarray(rows, dtype=np.intp)
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
        if starts.shape[0] > MAX_BLOCKS or not X.flags.c_contiguous:
            return cls((np.ascontiguousarray(X[rows]),))
        ends = np.append(starts[1:], rows.shape[0])
        runs = zip(rows[starts], rows[ends - 1] + 1, strict=True)
        return cls(tuple(X[first:stop] for first, stop in runs))

    @property
    def shape(self) -> tuple[int, int]:
        return (sum(block.shape[0] for block in self.blocks), self.blocks[0].shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.blocks[0].dtype

    @property
    def out_of_core(self) -> bool:
        """Whether a block is a view of a file mapped in memory (a numpy memmap's rows)."""
        return any(out_of_core(block) for block in self.blocks)

    def as_array(self) -> np.ndarray:
        """The stacked matrix as one array: the block itself when there is one, else a copy."""
        return self.blocks[0] if len(self.blocks) == 1 else np.concatenate(self.blocks)

    def tdot(self, residual: np.ndarray, dtype=None) -> np.ndarray:
        """``X.T @ residual``, block by block (:func:`thin_left_product`); in ``dtype``
        (default: the product's), partial products added in that dtype."""
        total = None
        for start, block in self._offsets():
            part = thin_left_product(block, residual[start : start + block.shape[0]], dtype=dtype)
            total = part if total is None else total + part
        return total

    def take(self, columns: np.ndarray | slice, dtype=None) -> np.ndarray:
        """The columns ``columns`` of every row: a new array of shape (n_rows, n_taken), in
        ``dtype`` (default: X's)."""
        parts = [np.asarray(block[:, columns], dtype=dtype) for block in self.blocks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)`` for consecutive chunks of at most ``size`` rows (views)."""
        for start, block in self._offsets():
            for offset in range(0, block.shape[0], size):
                yield start + offset, block[offset : offset + size]

    def column_chunks(
        self, columns: np.ndarray | None, size: int
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, X[rows, columns])`` for consecutive chunks of at most ``size`` rows
        (``columns=None``: all, as views; else gathered copies)."""
        for start, chunk in self.chunks(size):
            yield start, chunk if columns is None else chunk[:, columns]

    def column_extremes(self) -> tuple[np.ndarray, np.ndarray]:
        """The largest and the smallest value of every column."""
        top = np.max([block.max(axis=0, initial=-np.inf) for block in self.blocks], axis=0)
        bottom = np.min([block.min(axis=0, initial=np.inf) for block in self.blocks], axis=0)
        return top, bottom

    def _offsets(self) -> Iterator[tuple[int, np.ndarray]]:
        start = 0
        for block in self.blocks:
            yield start, block
            start += block.shape[0]


def out_of_core(X) -> bool:
    """Whether ``X`` is not held in memory: a dask array, or a numpy memmap (or a view of
    one), whose rows the solvers stream and whose folds train by weight."""
    return is_dask_array(X) or (isinstance(X, np.ndarray) and _file_backed(X))


def _file_backed(array: np.ndarray) -> bool:
    """Whether ``array`` is, or views, a numpy memmap or a memory-mapped file."""
    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False
