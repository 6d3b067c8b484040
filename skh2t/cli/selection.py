"""Head2Toe model selection: cross-validation over (target size, alpha, keep fraction).

On every fold and target size, the alphas (fractions of the fold's own
``alpha_max``) run as one warm-started regularisation path, the one of
:class:`~skh2t.GroupLassoClassifierCV`: the penalised group-lasso fit is solved
once per alpha, and every keep fraction only redoes the selection and the refit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import check_scoring

from skh2t import GroupLassoClassifier
from skh2t.group_lasso_cv import _score_path


@dataclass(frozen=True, order=True)
class Head2ToeConfig:
    """One grid point. ``alpha_fraction`` is relative to ``alpha_max`` of the training data."""

    target_size: int
    alpha_fraction: float
    keep_fraction: float

    def as_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return {
            "target_size": self.target_size,
            "alpha_fraction": self.alpha_fraction,
            "keep_fraction": self.keep_fraction,
        }


@dataclass
class SolverSettings:
    """Settings of every :class:`GroupLassoClassifier` fit."""

    max_iter: int = 5000
    tol: float = 1e-4

    def classifier(self) -> GroupLassoClassifier:
        """A fresh, unfitted classifier with these settings."""
        return GroupLassoClassifier(max_iter=self.max_iter, tol=self.tol)


def cv_scores(
    features: dict[int, np.ndarray],
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    alpha_fractions: list[float],
    keep_fractions: list[float],
    solver: SolverSettings,
    *,
    on_step: Callable[[], None] | None = None,
) -> tuple[dict[Head2ToeConfig, np.ndarray], int]:
    """Validation accuracy of every grid point on every fold.

    Parameters
    ----------
    features : dict of target size -> ndarray of shape (n, d_T)
        The training features for every target size.
    y : ndarray of shape (n,)
    folds : list of (train, validation) index arrays
    alpha_fractions : list of float
        Group-lasso strengths as fractions of ``alpha_max`` of each fold's training part.
    keep_fractions : list of float
    solver : SolverSettings
    on_step : callable, default=None
        Called after every (target size, fold, alpha) step (progress).

    Returns
    -------
    scores : dict of Head2ToeConfig -> ndarray of shape (len(folds),)
    n_not_converged : int
        Penalised fits or refits that stopped at ``max_iter``.
    """
    scores: dict[Head2ToeConfig, np.ndarray] = {}
    n_not_converged = 0
    alpha_fractions = sorted(alpha_fractions, reverse=True)  # the path runs downwards
    base = solver.classifier()
    accuracy = check_scoring(base)
    for target_size, X in features.items():
        for j, (train, valid) in enumerate(folds):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                fold_scores = _score_path(
                    base,
                    X,
                    y,
                    np.ones(len(y)),
                    train,
                    valid,
                    np.array(alpha_fractions),
                    keep_fractions,
                    accuracy,
                    relative_alphas=True,
                    on_alpha=on_step,
                )
            n_not_converged += _not_converged(caught)
            for i, alpha in enumerate(alpha_fractions):
                for k, keep in enumerate(keep_fractions):
                    config = Head2ToeConfig(target_size, alpha, keep)
                    scores.setdefault(config, np.zeros(len(folds)))[j] = fold_scores[i, k]
    return scores, n_not_converged


def best_config(scores: dict[Head2ToeConfig, np.ndarray]) -> Head2ToeConfig:
    """The grid point with the best mean validation accuracy.

    Ties go to the smaller keep fraction, then the larger alpha, then the
    smaller target size: the sparser, cheaper model.

    Examples
    --------
    >>> a = Head2ToeConfig(1024, 0.01, 0.1)
    >>> b = Head2ToeConfig(1024, 0.01, 0.05)
    >>> best_config({a: np.array([0.9, 0.8]), b: np.array([0.8, 0.9])}) == b
    True
    """
    return min(
        scores,
        key=lambda c: (-scores[c].mean(), c.keep_fraction, -c.alpha_fraction, c.target_size),
    )


def fit_final(
    X: np.ndarray, y: np.ndarray, config: Head2ToeConfig, solver: SolverSettings
) -> tuple[GroupLassoClassifier, int]:
    """Fit the chosen configuration on all training rows.

    Returns
    -------
    clf : GroupLassoClassifier
        Fitted, with ``alpha = config.alpha_fraction * alpha_max(X, y)``.
    n_not_converged : int
    """
    clf = solver.classifier()
    alpha = config.alpha_fraction * clf.alpha_max(X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.set_params(alpha=alpha, keep_fraction=config.keep_fraction)
        clf.fit(X, y)
    return clf, _not_converged(caught)


def _not_converged(caught: list[warnings.WarningMessage]) -> int:
    return sum(issubclass(w.category, ConvergenceWarning) for w in caught)
