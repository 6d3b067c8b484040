"""The non-smooth part of the objective: a weighted group-lasso penalty on rows of W."""

from __future__ import annotations

import numpy as np


class GroupLasso:
    """``alpha * sum_g w_g * ||W_g||_F``, where group ``g`` is a set of rows of ``W``.

    Every operation is vectorised over groups with ``np.bincount`` on the
    per-row squared norms: no Python loop over groups and no per-group masks.

    Parameters
    ----------
    alpha : float
        Regularisation strength (>= 0).
    group_index : ndarray of shape (n_features,)
        Group of every row of ``W``, integers in ``[0, n_groups)``.
    group_weights : ndarray of shape (n_groups,)
        Positive weight of every group.
    """

    def __init__(self, alpha: float, group_index: np.ndarray, group_weights: np.ndarray):
        self.alpha = float(alpha)
        self.group_index = np.asarray(group_index, dtype=np.intp)
        self.group_weights = np.asarray(group_weights, dtype=np.float64)
        self.n_groups = self.group_weights.shape[0]

    def group_norms(self, coef: np.ndarray) -> np.ndarray:
        """Frobenius norm of every group of rows, shape (n_groups,)."""
        row_squares = np.einsum("ij,ij->i", coef, coef)
        return np.sqrt(np.bincount(self.group_index, row_squares, minlength=self.n_groups))

    def value(self, coef: np.ndarray) -> float:
        return self.alpha * float(self.group_weights @ self.group_norms(coef))

    def prox(self, coef: np.ndarray, step: float) -> np.ndarray:
        """Block soft-thresholding: the proximal operator of ``step * penalty``."""
        norms = self.group_norms(coef)
        threshold = step * self.alpha * self.group_weights
        with np.errstate(divide="ignore", invalid="ignore"):
            shrink = np.where(norms > threshold, 1.0 - threshold / norms, 0.0)
        return coef * shrink[self.group_index][:, None]

    def kkt_violation(self, coef: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        """Distance of ``-gradient_g`` to the subdifferential of the penalty, per group.

        For a zero group it is ``max(0, ||G_g|| - alpha w_g)``; for a non-zero
        group ``||G_g + alpha w_g W_g / ||W_g|| ||``. All zeros means optimal.
        """
        norms = self.group_norms(coef)
        gradient_norms = self.group_norms(gradient)
        scaled = self.alpha * self.group_weights
        zero_violation = np.maximum(gradient_norms - scaled, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            direction = np.where(norms > 0, scaled / norms, 0.0)
        shifted = gradient + coef * direction[self.group_index][:, None]
        nonzero_violation = self.group_norms(shifted)
        return np.where(norms > 0, nonzero_violation, zero_violation)

    def restricted(self, features: np.ndarray) -> tuple[GroupLasso, np.ndarray]:
        """The penalty on a subset of rows, with groups renumbered; and the kept group ids."""
        kept_groups, local_index = np.unique(self.group_index[features], return_inverse=True)
        return GroupLasso(self.alpha, local_index, self.group_weights[kept_groups]), kept_groups
