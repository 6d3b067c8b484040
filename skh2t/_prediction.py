"""Prediction from a fitted linear softmax model, shared by the group-lasso classifiers."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import log_softmax, softmax
from sklearn.utils.validation import check_is_fitted, validate_data


def renormalize_columns(X: np.ndarray, group_index: np.ndarray) -> np.ndarray:
    """Divide every group of columns of ``X`` by its L2 norm, per row, in place.

    The official Head2Toe refit's normalisation of the kept columns of each
    tap; all-zero parts stay zero. Norms accumulate in float64.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_columns), float
        Modified in place.
    group_index : ndarray of int, shape (n_columns,)
        The group of every column.

    Returns
    -------
    ndarray
        ``X``.

    Examples
    --------
    >>> X = np.array([[3.0, 4.0, 2.0], [0.0, 0.0, -5.0]])
    >>> renormalize_columns(X, np.array([0, 0, 1]))
    array([[ 0.6,  0.8,  1. ],
           [ 0. ,  0. , -1. ]])
    """
    for group in np.unique(group_index):
        columns = np.flatnonzero(group_index == group)
        part = X[:, columns]
        norms = np.sqrt(np.einsum("ij,ij->i", part, part, dtype=np.float64))
        norms[norms == 0] = 1.0
        X[:, columns] = part / norms[:, None].astype(X.dtype)
    return X


class LinearSoftmaxMixin:
    """``decision_function``, ``predict``, ``predict_proba``, ``predict_log_proba`` and
    ``get_support`` from the fitted ``coef_``, ``intercept_``, ``classes_`` and ``support_``
    (and ``renormalize_index_``, the official Head2Toe refit's groups, when not ``None``).
    """

    def get_support(self, indices: bool = False) -> np.ndarray:
        """Mask (or indices) of the features used by the final model.

        Parameters
        ----------
        indices : bool, default=False
            Return integer indices instead of a boolean mask.

        Returns
        -------
        support : ndarray
            Boolean mask of shape (n_features,), or the indices of the kept features.
        """
        check_is_fitted(self)
        return np.flatnonzero(self.support_) if indices else self.support_.copy()

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Class scores ``X @ coef_.T + intercept_``; 1-D for binary problems.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            Confidence scores; for binary problems, of ``classes_[1]``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        coef = self.coef_
        groups = getattr(self, "renormalize_index_", None)
        if groups is not None:  # only the kept columns, each group re-normalised
            kept = np.flatnonzero(self.support_)
            X, coef = renormalize_columns(X[:, kept], groups[kept]), coef[:, kept]
        scores = X @ coef.T.astype(X.dtype) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Most probable class of every sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted class labels.
        """
        scores = self.decision_function(X)
        indices = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[indices]

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities (softmax of the scores).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities, columns in the order of ``classes_``.
        """
        scores = np.asarray(self.decision_function(X), dtype=np.float64)
        if scores.ndim == 1:
            scores = np.column_stack([np.zeros_like(scores), scores])
        return softmax(scores, axis=1)

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`, computed stably.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities, columns in the order of ``classes_``.
        """
        scores = np.asarray(self.decision_function(X), dtype=np.float64)
        if scores.ndim == 1:
            scores = np.column_stack([np.zeros_like(scores), scores])
        return log_softmax(scores, axis=1)
