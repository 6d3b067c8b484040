"""L2-penalised logistic-regression probes on wide features, through the Gram matrix.

With ``n`` training rows and ``d >> n`` features, an L2-penalised linear model
only ever uses weights in the row space of ``X``: writing ``X = U S V^T``
(thin SVD), ``X w = (U S) (V^T w)`` and ``||V^T w|| <= ||w||``, so fitting
scikit-learn's ``LogisticRegression`` on the ``n x r`` matrix ``Z = U S`` and
mapping its coefficients back by ``w = V b`` gives the same model as fitting it
on ``X``, at a fraction of the cost. ``U`` and ``S`` come from the eigenvectors
of the Gram matrix ``X X^T``, computed once per feature matrix; every
cross-validation fold then only needs the eigen-decomposition of its own block.
Directions whose singular value is below ``1e-5`` of the largest are dropped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

_GRAM_BLOCK = 8192  # columns per block of the float64 Gram product
_RELATIVE_EIGENVALUE_FLOOR = 1e-10  # singular values below 1e-5 of the largest are dropped


def gram_matrix(X: np.ndarray) -> np.ndarray:
    """``X @ X.T`` in float64, computed in column blocks (bounded memory).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)

    Returns
    -------
    ndarray of shape (n_samples, n_samples), float64

    Examples
    --------
    >>> X = np.arange(6, dtype=np.float32).reshape(2, 3)
    >>> gram_matrix(X)
    array([[ 5., 14.],
           [14., 50.]])
    """
    gram = np.zeros((X.shape[0], X.shape[0]))
    for start in range(0, X.shape[1], _GRAM_BLOCK):
        block = np.asarray(X[:, start : start + _GRAM_BLOCK], dtype=np.float64)
        gram += block @ block.T
    return gram


@dataclass
class RowSpace:
    """Coordinates of training rows in the row space of their feature matrix.

    Attributes
    ----------
    basis : ndarray of shape (n_train, r)
        ``U / s``: maps Gram columns ``K[:, train]`` to coordinates ``Z``.
    Z : ndarray of shape (n_train, r)
        ``U s``, the training rows' coordinates.
    """

    basis: np.ndarray
    Z: np.ndarray

    @classmethod
    def from_gram(cls, gram: np.ndarray) -> RowSpace:
        """Eigen-decompose the training rows' Gram block ``gram`` (n_train x n_train)."""
        eigenvalues, vectors = np.linalg.eigh(gram)
        top = eigenvalues.max(initial=0.0)
        keep = eigenvalues > top * _RELATIVE_EIGENVALUE_FLOOR
        if not keep.any():  # all-zero features: one zero coordinate
            return cls(np.zeros((gram.shape[0], 1)), np.zeros((gram.shape[0], 1)))
        root = np.sqrt(eigenvalues[keep])
        return cls(vectors[:, keep] / root, vectors[:, keep] * root)

    def coordinates(self, cross_gram: np.ndarray) -> np.ndarray:
        """Coordinates of other rows from their Gram block with the training rows."""
        return cross_gram @ self.basis


@dataclass
class LinearHead:
    """A fitted linear classifier in the full feature space (or on a column subset).

    Attributes
    ----------
    coef : ndarray of shape (n_classes, n_columns)
    intercept : ndarray of shape (n_classes,)
    classes : ndarray of shape (n_classes,)
    columns : ndarray of int or None
        The feature columns it reads; ``None`` for all.
    """

    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    columns: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        """Number of features the model reads."""
        return self.coef.shape[1]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class of every row of the full feature matrix ``X``."""
        if self.columns is not None:
            X = X[:, self.columns]
        scores = X @ self.coef.T.astype(X.dtype) + self.intercept
        if scores.shape[1] == 1:  # binary: one score, of classes[1]
            return self.classes[(scores[:, 0] > 0).astype(int)]
        return self.classes[np.argmax(scores, axis=1)]


def logistic(C: float, max_iter: int) -> LogisticRegression:
    """The multinomial L2 logistic regression used by both probes."""
    return LogisticRegression(C=C, max_iter=max_iter)


def cv_scores(
    gram: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    Cs: list[float],
    *,
    max_iter: int = 1000,
    on_fold=None,
) -> tuple[np.ndarray, int]:
    """Validation accuracy of every ``C`` on every fold, from the Gram matrix of all rows.

    Parameters
    ----------
    gram : ndarray of shape (n, n)
        ``X @ X.T`` of all training rows.
    y : ndarray of shape (n,)
    folds : list of (train, validation) index arrays
    Cs : list of float
        Inverse L2 strengths, as in ``LogisticRegression``.
    max_iter : int, default=1000
    on_fold : callable, default=None
        Called after every fold (progress).

    Returns
    -------
    scores : ndarray of shape (len(Cs), len(folds))
    n_not_converged : int
        Fits that stopped at ``max_iter``.
    """
    scores = np.zeros((len(Cs), len(folds)))
    n_not_converged = 0
    for j, (train, valid) in enumerate(folds):
        space = RowSpace.from_gram(gram[np.ix_(train, train)])
        Z_valid = space.coordinates(gram[np.ix_(valid, train)])
        for i, C in enumerate(Cs):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model = logistic(C, max_iter).fit(space.Z, y[train])
            n_not_converged += _count_convergence(caught)
            scores[i, j] = model.score(Z_valid, y[valid])
        if on_fold is not None:
            on_fold()
    return scores, n_not_converged


def fit_head(
    X: np.ndarray, y: np.ndarray, C: float, *, max_iter: int = 1000, columns=None
) -> tuple[LinearHead, int]:
    """Fit the L2 probe on all rows and express it in the space of ``X``'s columns.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The features the probe reads (already restricted to ``columns``).
    y : ndarray of shape (n,)
    C : float
    max_iter : int, default=1000
    columns : ndarray of int, default=None
        Recorded in the head: the columns of the full matrix that ``X`` holds.

    Returns
    -------
    head : LinearHead
    n_not_converged : int
        1 if the fit stopped at ``max_iter``, else 0.
    """
    space = RowSpace.from_gram(gram_matrix(X))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = logistic(C, max_iter).fit(space.Z, y)
    coef = _to_feature_space(model.coef_ @ space.basis.T, X)
    head = LinearHead(coef, model.intercept_.copy(), model.classes_, columns)
    return head, _count_convergence(caught)


def _to_feature_space(row_coef: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``w = V b = X^T (U / s) b``: coefficients on the rows to coefficients on the columns."""
    coef = np.empty((row_coef.shape[0], X.shape[1]))
    for start in range(0, X.shape[1], _GRAM_BLOCK):
        block = slice(start, start + _GRAM_BLOCK)
        coef[:, block] = row_coef @ np.asarray(X[:, block], dtype=np.float64)
    return coef


def _count_convergence(caught: list[warnings.WarningMessage]) -> int:
    return int(any(issubclass(w.category, ConvergenceWarning) for w in caught))
