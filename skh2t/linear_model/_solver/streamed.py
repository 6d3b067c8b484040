"""The working set of an out-of-core ``X`` (a memmap, a dask array), read in row blocks.

In memory, a working-set round gathers its columns of ``X`` in float64,
centred, and keeps them in two layouts (:class:`~.design.Design`): about four
times ``n_samples x working set x 8`` bytes, which for a weak penalty on a
float32 ``X`` is several times ``X`` itself. When ``X`` is on disk (or on a
cluster) that defeats the point of not loading it, so there the subproblem
runs on a :class:`BlockDesign`: the working set's columns gathered once per
round in ``X``'s own dtype, and only if they take at most
:data:`WORKING_SET_FRACTION` of ``X``'s bytes, else gathered from ``X``
block by block at every product; either way converted to float64, centred
and scaled one block of rows at a time (:data:`BLOCK_FRACTION` of ``X``'s
bytes). The centring and scaling are applied to the coefficients and the
products rather than to the columns: the same matrix, without a centred copy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from skh2t.linear_model._solver.design import thin_left_product
from skh2t.linear_model._solver.rows import StackedRows

# The working set's columns are kept (in X's dtype) only when they take at most this fraction
# of X's bytes; past it they are gathered from X block by block at every product.
WORKING_SET_FRACTION = 0.125
# Each block of rows converted to float64 takes at most this fraction of X's bytes.
BLOCK_FRACTION = 1 / 64
_MIN_BLOCK_ROWS = 256


def block_rows(X, width: int) -> int:
    """Rows per float64 block of ``width`` columns: :data:`BLOCK_FRACTION` of ``X``'s bytes,
    at least ``_MIN_BLOCK_ROWS``."""
    n_samples, n_features = X.shape
    budget = BLOCK_FRACTION * n_samples * n_features * X.dtype.itemsize
    return max(_MIN_BLOCK_ROWS, int(budget // (8 * max(1, width))))


class BlockDesign:
    """``Z = (X[:, features] - center) * factor``, its products computed in row blocks.

    ``factor`` is zero for the columns that are constant once centred.
    Products are in ``dtype`` (float64 unless asked):
    ``Z @ coef = X_f @ (factor * coef) - offset @ coef`` and
    ``Z.T @ R = factor * (X_f.T @ R) - outer(offset, sum(R))``, with
    ``offset = center * factor``.

    Parameters
    ----------
    source : StackedRows or DaskRows
        Where the rows come from (``X`` itself, or the working set's gathered columns).
    columns : ndarray of int or None
        The columns of ``source`` to read (``None``: all).
    factor, offset : ndarray of shape (n_columns,)
    rows_per_block : int
    dtype : numpy dtype, default=np.float64
        Of the blocks and the products.

    Examples
    --------
    >>> X = np.arange(6, dtype=np.float32).reshape(3, 2)
    >>> design = BlockDesign.of_rows(X)
    >>> design.dot(np.ones((2, 1))).ravel()
    array([1., 5., 9.])
    >>> design.tdot(np.ones((3, 1))).ravel()
    array([6., 9.])
    """

    def __init__(self, source, columns, factor, offset, rows_per_block: int, dtype=np.float64):
        self.source, self.columns = source, columns
        self.factor, self.offset = factor, offset
        self.rows_per_block = rows_per_block
        self.dtype = np.dtype(dtype)

    @classmethod
    def of_rows(cls, X, columns: np.ndarray | None = None, *, dtype=np.float64) -> BlockDesign:
        """The columns ``columns`` (``None``: all) of ``X`` (an array, a memmap, its
        StackedRows or DaskRows), neither centred nor scaled: no copy of ``X``, products
        in ``dtype``, gathering and converting a block of rows at a time."""
        width = X.shape[1] if columns is None else columns.shape[0]
        ones, zeros = np.ones(width), np.zeros(width)
        return cls(StackedRows.of(X), columns, ones, zeros, block_rows(X, width), dtype)

    @classmethod
    def of(
        cls,
        X: StackedRows,
        features: np.ndarray,
        center: np.ndarray | None,
        constant: np.ndarray,
    ) -> BlockDesign:
        """The centred columns ``features`` of ``X``, gathered once if they fit
        :data:`WORKING_SET_FRACTION` of ``X``'s bytes."""
        n_samples, n_features = X.shape
        gathered = n_samples * features.shape[0] * X.dtype.itemsize
        source, columns = X, features
        if gathered <= WORKING_SET_FRACTION * n_samples * n_features * X.dtype.itemsize:
            source, columns = StackedRows.of(X.take(features)), None
        factor = np.where(constant[features], 0.0, 1.0)
        offset = np.zeros(features.shape[0]) if center is None else center[features] * factor
        return cls(source, columns, factor, offset, block_rows(X, features.shape[0]))

    def scaled(self, column_scale: np.ndarray) -> BlockDesign:
        """The design of ``Z / column_scale`` (columns divided), sharing the rows."""
        return BlockDesign(
            self.source,
            self.columns,
            self.factor / column_scale,
            self.offset / column_scale,
            self.rows_per_block,
            self.dtype,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.source.shape[0], self.factor.shape[0])

    def _blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        for start, block in self.source.column_chunks(self.columns, self.rows_per_block):
            yield start, np.asarray(block, dtype=self.dtype)

    def dot(self, coef: np.ndarray) -> np.ndarray:
        """``Z @ coef`` for ``coef`` of shape (n_columns,) or (n_columns, k), in ``dtype``."""
        matrix = coef if coef.ndim == 2 else coef[:, None]  # (0, k) when no column is read
        scaled = (matrix * self.factor[:, None]).astype(self.dtype, copy=False)
        out = np.empty((self.shape[0], matrix.shape[1]), dtype=self.dtype)
        for start, block in self._blocks():
            out[start : start + block.shape[0]] = block @ scaled
        out -= self.offset @ matrix
        return out.reshape((self.shape[0], *coef.shape[1:]))

    def tdot(self, residual: np.ndarray) -> np.ndarray:
        """``Z.T @ residual`` for ``residual`` of shape (n_samples,) or (n_samples, k), in
        ``dtype``."""
        matrix = residual if residual.ndim == 2 else residual[:, None]
        matrix = matrix.astype(self.dtype, copy=False)
        total = np.zeros((self.shape[1], matrix.shape[1]), dtype=self.dtype)
        for start, block in self._blocks():
            total += thin_left_product(block, matrix[start : start + block.shape[0]])
        total *= self.factor[:, None]
        total -= np.outer(self.offset, matrix.sum(axis=0))
        return total.reshape((self.shape[1], *residual.shape[1:]))

    def weighted_squares(self, weight: np.ndarray) -> np.ndarray:
        """``sum_i weight_i Z_ij^2`` of every column."""
        total = np.zeros(self.shape[1])
        for start, block in self._blocks():
            part = block * self.factor - self.offset  # never in place: a block may be a view
            total += (part * part).T @ weight[start : start + block.shape[0]]
        return total
