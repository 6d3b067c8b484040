"""Thin products with a design matrix, written the way BLAS runs them fastest.

The solvers' products have as many columns as classes: ``X @ W`` and
``X.T @ R`` with ``W`` of shape (n_features, n_classes) and ``R`` of shape
(n_samples, n_classes). BLAS's general matrix product is much faster when the
thin operand comes first, ``(W.T @ X.T).T`` and ``(R.T @ X).T``, and when the
large operand is read in its own row order (``bench_solver.py`` prints the
ratio; the measurements are in docs/benchmarks.rst). :class:`Design` keeps a
working set's columns in both layouts for that (twice their memory, while the
working set is a small part of ``X``).
"""

from __future__ import annotations

import numpy as np


def thin_left_product(X: np.ndarray, residual: np.ndarray, dtype=None) -> np.ndarray:
    """``X.T @ residual`` as ``(residual.T @ X).T``, C-contiguous, in ``dtype`` (default: the
    product's)."""
    return np.asarray((residual.T @ X).T, dtype=dtype, order="C")


class Design:
    """A matrix ``X`` and its transpose, with the two thin products of the solvers.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Kept as a C-contiguous array (copied only if it is not one).
    dtype : numpy dtype, default=np.float64
        The dtype of the products; ``None`` keeps that of ``X``.

    Examples
    --------
    >>> X = np.arange(6.0).reshape(2, 3)
    >>> design = Design(X)
    >>> bool(np.allclose(design.dot(np.ones((3, 2))), X @ np.ones((3, 2))))
    True
    >>> bool(np.allclose(design.tdot(np.ones((2, 2))), X.T @ np.ones((2, 2))))
    True
    """

    def __init__(self, X: np.ndarray, dtype=np.float64):
        self.rows = np.ascontiguousarray(X, dtype=dtype)
        self.columns = np.ascontiguousarray(self.rows.T)

    @classmethod
    def of_transposed(cls, X_transposed: np.ndarray) -> Design:
        """The design of ``X_transposed.T``: ``X_transposed`` itself is kept as the column
        layout (not copied if it is C-contiguous float64), the row layout is a copy."""
        design = cls.__new__(cls)
        design.columns = np.ascontiguousarray(X_transposed, dtype=np.float64)
        design.rows = np.ascontiguousarray(design.columns.T)
        return design

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_samples, n_features)`` of ``X``."""
        return self.rows.shape

    def dot(self, coef: np.ndarray) -> np.ndarray:
        """``X @ coef`` for ``coef`` of shape (n_features,) or (n_features, k), in X's dtype."""
        coef = coef.astype(self.rows.dtype, copy=False)
        return np.ascontiguousarray((coef.T @ self.columns).T)

    def tdot(self, residual: np.ndarray) -> np.ndarray:
        """``X.T @ residual`` for ``residual`` of shape (n_samples,) or (n_samples, k), in X's
        dtype."""
        return thin_left_product(self.rows, residual.astype(self.rows.dtype, copy=False))
