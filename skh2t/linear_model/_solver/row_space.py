"""The ridge refit in the row space of its columns, for fewer rows than columns.

With ``n`` rows and ``k > n`` columns, the minimiser of ``datafit(X W + b) +
l2 / 2 ||W||^2`` has every column of ``W`` in the row space of ``X``: the
gradient of the datafit, ``X.T @ R``, is in it, and a component orthogonal
to it changes no logit and only adds to the penalty. With ``K = X X.T = L
L.T`` (Cholesky) and ``W = X.T L^{-T} B``, ``X W = L B`` and ``||W|| =
||B||``: the same problem on the ``n x n`` matrix ``L``, solved by the same
L-BFGS, then mapped back. The Gram matrix costs one product of ``X`` with
itself; every L-BFGS iteration then costs ``n x n`` instead of ``n x k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, blas, cholesky, solve_triangular

from skh2t.linear_model._solver.datafits import MultinomialLogistic
from skh2t.linear_model._solver.lbfgs import RidgeResult, fit_ridge_multinomial

_GRAM_BLOCK = 4096  # columns of a float32 product before it is added to the float64 Gram matrix
# Directions of the eigen-decomposition (when the Gram matrix is singular) whose
# eigenvalue is below this fraction of the largest are rounding.
_RELATIVE_EIGENVALUE_FLOOR = 1e-10


def gram(X: np.ndarray) -> np.ndarray:
    """``X @ X.T`` in float64, ``_GRAM_BLOCK`` columns at a time.

    A block's product runs in the dtype of ``X`` (single precision for
    float32 features: half the memory traffic, twice the flops per cycle) and
    accumulates in float64. (BLAS's symmetric rank-k update, half the flops,
    measured slower than the general product here.)
    """
    total = np.zeros((X.shape[0], X.shape[0]))
    for start in range(0, X.shape[1], _GRAM_BLOCK):
        block = X[:, start : start + _GRAM_BLOCK]
        total += block @ block.T
    return total


@dataclass
class RowSpace:
    """Coordinates ``Z`` of the rows in the row space of ``X``, from the Gram matrix ``K``.

    ``Z Z.T = K``. Coefficients ``B`` fitted on ``Z`` are those of the
    columns of ``X`` through ``W = X.T @ row_weights(B)``. Cholesky when ``K``
    is positive definite with no negligible pivot; else the eigenvectors of
    its non-negligible eigenvalues (duplicate rows, fewer columns than rows).
    """

    Z: np.ndarray
    _lower: np.ndarray | None = None  # the Cholesky factor, when Z is it
    _basis: np.ndarray | None = None  # U / sqrt(eigenvalues), otherwise

    @classmethod
    def of(cls, K: np.ndarray) -> RowSpace:
        floor = _RELATIVE_EIGENVALUE_FLOOR * float(np.max(np.diag(K), initial=0.0))
        try:
            lower = cholesky(K, lower=True, check_finite=False)
        except LinAlgError:
            lower = None
        if lower is not None and floor > 0 and np.all(np.diag(lower) ** 2 > floor):
            return cls(lower, _lower=lower)
        eigenvalues, vectors = np.linalg.eigh(K)
        keep = eigenvalues > eigenvalues.max(initial=0.0) * _RELATIVE_EIGENVALUE_FLOOR
        if not keep.any():  # all-zero columns: one zero coordinate
            zero = np.zeros((K.shape[0], 1))
            return cls(zero, _basis=zero)
        root = np.sqrt(eigenvalues[keep])
        return cls(vectors[:, keep] * root, _basis=vectors[:, keep] / root)

    def row_weights(self, B: np.ndarray) -> np.ndarray:
        """``A`` with ``W = X.T @ A`` for the coefficients ``B`` of shape (n_coordinates, k)."""
        if self._lower is not None:
            return solve_triangular(self._lower, B, lower=True, trans="T", check_finite=False)
        return self._basis @ B


class LowerTriangular:
    """The products of the solvers (:class:`~skh2t.linear_model._solver.design.Design`'s
    ``dot`` and ``tdot``) with a lower-triangular float64 matrix, through BLAS's ``trmm``:
    half the flops of a general product, and no zeros multiplied."""

    def __init__(self, lower: np.ndarray):
        self.lower = np.asfortranarray(lower, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int]:
        return self.lower.shape

    def dot(self, coef: np.ndarray) -> np.ndarray:
        """``L @ coef``."""
        return blas.dtrmm(1.0, self.lower, np.asfortranarray(coef, dtype=np.float64), lower=1)

    def tdot(self, residual: np.ndarray) -> np.ndarray:
        """``L.T @ residual``."""
        residual = np.asfortranarray(residual, dtype=np.float64)
        return blas.dtrmm(1.0, self.lower, residual, lower=1, trans_a=1)


def fit_ridge_in_row_space(
    X: np.ndarray,
    datafit: MultinomialLogistic,
    l2: float,
    *,
    fit_intercept: bool = True,
    tol: float = 1e-4,
    max_iter: int = 1000,
    intercept_init: np.ndarray | None = None,
) -> RidgeResult:
    """:func:`fit_ridge_multinomial` for ``l2 > 0``, solved on the row-space coordinates of ``X``.

    The same minimiser (see the module docstring); ``tol`` applies to the
    gradient in the row space's orthonormal coordinates, whose norm is that
    of the gradient over the columns. The result's coefficients are those of
    the columns of ``X``.
    """
    space = RowSpace.of(gram(X))
    result = fit_ridge_multinomial(
        space.Z if space._lower is None else LowerTriangular(space._lower),
        datafit,
        l2,
        fit_intercept=fit_intercept,
        tol=tol,
        max_iter=max_iter,
        intercept_init=intercept_init,
    )
    row_coef = np.ascontiguousarray(space.row_weights(result.coef).T)
    coef = to_column_coefficients(row_coef, X).T
    return RidgeResult(coef, result.intercept, result.n_iter, result.converged)


def to_column_coefficients(row_coef: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``row_coef @ X`` in float64, ``_GRAM_BLOCK`` columns of ``X`` at a time: coefficients on
    the rows (shape (k, n_samples)) to coefficients on the columns (shape (k, n_features))."""
    coef = np.empty((row_coef.shape[0], X.shape[1]))
    for start in range(0, X.shape[1], _GRAM_BLOCK):
        block = slice(start, start + _GRAM_BLOCK)
        coef[:, block] = row_coef @ np.asarray(X[:, block], dtype=np.float64)
    return coef
