"""The group-lasso path and Head2Toe's select-and-refit, as functions of arrays.

As scikit-learn's ``_logistic_regression_path`` is shared by
``LogisticRegression`` and ``LogisticRegressionCV``, these functions are
shared by :class:`~skh2t.GroupLassoClassifier` (one alpha),
:class:`~skh2t.GroupLassoClassifierCV` and :class:`~skh2t.Head2ToeClassifier`
(a path per fold): they take validated arrays and a datafit, and return
typed records; no estimator is built or changed here.

- :func:`group_lasso_path`: the penalised solves along a decreasing alpha
  path, each warm-started from the previous ones (secant predictor).
- :func:`select_features`: the Head2Toe ranking of one solution, top ``n_keep``.
- :func:`refit_kept`: the ridge softmax on the kept (re-normalised) columns;
  in the row space of the kept columns when there are fewer rows than
  columns (the same minimiser, at the cost of an ``n x n`` problem).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from skh2t._prediction import renormalize_columns
from skh2t.linear_model._solver import (
    GroupLasso,
    MultinomialLogistic,
    fit_ridge_multinomial,
    solve_group_lasso,
)
from skh2t.linear_model._solver.row_space import fit_ridge_in_row_space
from skh2t.linear_model._solver.rows import StackedRows
from skh2t.linear_model._solver.working_set import ColumnSummary, constant_columns, full_gradient


@dataclass(frozen=True)
class GroupStructure:
    """The groups of the penalty: the group of every feature and the weight of every group."""

    group_index: np.ndarray  # (n_features,) int
    group_weights: np.ndarray  # (n_groups,)

    def penalty(self, alpha: float) -> GroupLasso:
        """The group-lasso penalty of strength ``alpha``."""
        return GroupLasso(alpha, self.group_index, self.group_weights)


@dataclass(frozen=True)
class SolverSettings:
    """How the penalised problem and the refit are solved."""

    fit_intercept: bool = True
    tol: float = 1e-4
    max_iter: int = 5000
    verbose: int = 0


@dataclass(frozen=True)
class PenalisedFit:
    """The solution of the penalised problem at one alpha, in the solver's layout.

    Attributes
    ----------
    alpha : float
        The absolute strength.
    coef : ndarray of shape (n_features, n_classes)
    intercept : ndarray of shape (n_classes,)
    dual_scores : ndarray of shape (n_features,)
        ``||grad_g|| / (alpha w_g)`` of every feature's group.
    n_iter, n_outer : int
        FISTA iterations and working-set rounds.
    converged, stalled, outer_limit : bool
        As in the solver's result.
    kkt_violation, objective : float
    seconds : float
        Wall time of the solve.
    """

    alpha: float
    coef: np.ndarray
    intercept: np.ndarray
    dual_scores: np.ndarray
    n_iter: int
    n_outer: int
    converged: bool
    stalled: bool
    outer_limit: bool
    kkt_violation: float
    objective: float
    seconds: float

    @property
    def feature_scores(self) -> np.ndarray:
        """Head2Toe relevance of every feature: the sum of squares of its row of ``coef``."""
        return np.einsum("ij,ij->i", self.coef, self.coef)


@dataclass(frozen=True)
class Refit:
    """The ridge softmax refitted on the kept columns.

    Attributes
    ----------
    kept : ndarray of int
        The kept columns, increasing.
    coef : ndarray of shape (n_kept, n_classes)
        Coefficients of the kept (re-normalised) columns.
    intercept : ndarray of shape (n_classes,)
    n_iter : int
        L-BFGS iterations.
    converged : bool
    in_row_space : bool
        Whether it was solved in the row space of the kept columns.
    seconds : float
    """

    kept: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    converged: bool
    in_row_space: bool
    seconds: float


def alpha_max(
    X: np.ndarray | StackedRows,
    datafit: MultinomialLogistic,
    groups: GroupStructure,
    fit_intercept: bool,
    columns: ColumnSummary | None = None,
) -> float:
    """Smallest ``alpha`` whose solution is all zero: ``max_g ||grad_g|| / w_g`` at zero.

    With an intercept, numerically constant columns have a zero gradient
    (``columns``: their summary, when known).
    """
    coef = np.zeros((X.shape[1], datafit.n_classes))
    intercept = np.zeros(datafit.n_classes)
    if fit_intercept:
        intercept = datafit.optimal_intercept_at_zero()
    _, gradient, _ = full_gradient(X, datafit, coef, intercept)
    if fit_intercept:  # their gradient is rounding: exactly zero once centred
        gradient[constant_columns(X) if columns is None else columns.constant] = 0.0
    penalty = groups.penalty(1.0)
    return float(np.max(penalty.group_norms(gradient) / penalty.group_weights, initial=0.0))


def zero_start(datafit: MultinomialLogistic, n_features: int, fit_intercept: bool):
    """Zero coefficients and the optimal intercept at zero (or zero): the cold start."""
    intercept = (
        datafit.optimal_intercept_at_zero() if fit_intercept else np.zeros(datafit.n_classes)
    )
    return np.zeros((n_features, datafit.n_classes)), intercept


def group_lasso_path(
    X: np.ndarray | StackedRows,
    datafit: MultinomialLogistic,
    groups: GroupStructure,
    alphas: Sequence[float],
    settings: SolverSettings,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    columns: ColumnSummary | None = None,
) -> Iterator[PenalisedFit]:
    """Solve the group-lasso problem at every alpha, in the order given; yield each solution.

    The first solve starts from ``start`` (``(coef, intercept)`` in the
    solver's layout) or from zero; every later one from the secant predictor
    of the previous two solutions (:func:`predicted_start`). Decreasing
    alphas make every start close to its solution.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64, C-contiguous, or StackedRows
        The rows to fit (a :class:`StackedRows` holds a fold's rows without a copy).
    datafit : MultinomialLogistic
    groups : GroupStructure
    alphas : sequence of float
        Absolute strengths, ``>= 0``.
    settings : SolverSettings
    start : tuple of ndarray, default=None
    columns : ColumnSummary, default=None
        The summary of ``X``'s columns for ``datafit``, when known; else
        computed here, once for all the alphas.

    Yields
    ------
    PenalisedFit
    """
    if columns is None:
        columns = ColumnSummary.of(X, datafit, settings.fit_intercept)
    solved: list[PenalisedFit] = []
    for alpha in alphas:
        if solved:
            start = predicted_start(solved, alpha)
        elif start is None:
            start = zero_start(datafit, X.shape[1], settings.fit_intercept)
        fit = _solve(X, datafit, groups.penalty(float(alpha)), start, settings, columns)
        solved = [*solved[-1:], fit]
        yield fit


def _solve(X, datafit, penalty: GroupLasso, start, settings, columns) -> PenalisedFit:
    started = time.perf_counter()
    result = solve_group_lasso(
        X,
        datafit,
        penalty,
        *start,
        fit_intercept=settings.fit_intercept,
        tol=settings.tol,
        max_iter=settings.max_iter,
        verbose=settings.verbose,
        columns=columns,
    )
    return PenalisedFit(
        alpha=penalty.alpha,
        coef=result.coef,
        intercept=result.intercept,
        dual_scores=result.dual_scores[penalty.group_index],
        n_iter=result.n_iter,
        n_outer=result.n_outer,
        converged=result.converged,
        stalled=result.stalled,
        outer_limit=result.outer_limit,
        kkt_violation=result.kkt_violation,
        objective=result.objective,
        seconds=time.perf_counter() - started,
    )


def predicted_start(solved: Sequence[PenalisedFit], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Start of the solve at ``alpha`` from the solutions at the previous alphas.

    The solution path is piecewise smooth in ``log(alpha)``: rows that are
    non-zero at the last two alphas are extrapolated linearly (a secant
    predictor, which leaves less for the solver to correct than the last
    solution alone); rows that just entered, whose kink lies between them, and
    the zero rows keep their last value.
    """
    last = solved[-1]
    if len(solved) < 2 or min(alpha, last.alpha, solved[-2].alpha) <= 0:
        return last.coef, last.intercept
    older = solved[-2]
    if last.alpha == older.alpha:
        return last.coef, last.intercept
    step = np.log(alpha / last.alpha) / np.log(last.alpha / older.alpha)
    both = np.any(last.coef != 0, axis=1) & np.any(older.coef != 0, axis=1)
    coef = last.coef.copy()
    coef[both] += step * (last.coef[both] - older.coef[both])
    return coef, last.intercept + step * (last.intercept - older.intercept)


def n_to_keep(
    n_features: int, keep_fraction: float | None, n_features_to_select: int | None
) -> int | None:
    """Number of kept features: ``n_features_to_select``, or ``floor(n_features *
    keep_fraction)`` (at least one); ``None`` when neither is set (no selection)."""
    if n_features_to_select is not None:
        return n_features_to_select
    if keep_fraction is not None:
        return max(1, math.floor(n_features * keep_fraction))
    return None


def select_features(fit: PenalisedFit, n_keep: int | None) -> np.ndarray:
    """Mask of the top ``n_keep`` features of a solution (all non-zero ones for ``None``).

    Ranked by weight (:attr:`PenalisedFit.feature_scores`); features with zero
    weight by how close they are to entering (their dual score); the lower
    index breaks exact ties.
    """
    scores = fit.feature_scores
    if n_keep is None:
        return scores > 0
    n_features = scores.shape[0]
    ranking = np.lexsort((np.arange(n_features), -fit.dual_scores, -scores))
    support = np.zeros(n_features, dtype=bool)
    support[ranking[:n_keep]] = True
    return support


def refit_kept(
    X: np.ndarray | StackedRows,
    datafit: MultinomialLogistic,
    support: np.ndarray,
    l2: float,
    settings: SolverSettings,
    *,
    renormalize_index: np.ndarray | None = None,
    intercept_init: np.ndarray | None = None,
) -> Refit:
    """Fit the ridge softmax on the kept columns of ``X`` (re-normalised per group if asked).

    Minimises ``datafit(X_kept W + b) + l2 / 2 ||W||^2``. With fewer rows than
    kept columns and ``l2 > 0``, in the row space of the kept columns
    (:mod:`~skh2t.linear_model._solver.row_space`): the same minimiser, at the
    cost of one Gram matrix and an ``n x n`` problem. Stops when no entry of
    the gradient exceeds ``settings.tol`` (in the row space: of the gradient in
    its orthonormal coordinates).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features) or StackedRows
    datafit : MultinomialLogistic
    support : ndarray of bool, shape (n_features,)
    l2 : float
    settings : SolverSettings
    renormalize_index : ndarray of int, shape (n_features,), default=None
        The official Head2Toe refit's groups: the kept columns of every group
        are divided by their norm per row.
    intercept_init : ndarray of shape (n_classes,), default=None
        Start of the intercept (e.g. the penalised fit's).

    Returns
    -------
    Refit
    """
    started = time.perf_counter()
    kept = np.flatnonzero(support)
    rows = StackedRows.of(X)
    X_kept = rows.take(kept)
    if renormalize_index is not None:
        renormalize_columns(X_kept, renormalize_index[kept])
    # Out of core, X_kept is the one copy of the kept columns: the refit makes no other.
    refit = refit_columns(
        X_kept, datafit, l2, settings, intercept_init=intercept_init, copy=not rows.out_of_core
    )
    return dataclasses.replace(refit, kept=kept, seconds=time.perf_counter() - started)


def refit_columns(
    X_kept: np.ndarray,
    datafit: MultinomialLogistic,
    l2: float,
    settings: SolverSettings,
    *,
    intercept_init: np.ndarray | None = None,
    copy: bool = True,
    on_iteration: Callable[[], None] | None = None,
) -> Refit:
    """:func:`refit_kept` on columns already taken (and re-normalised): ``X_kept`` is all of
    them (``kept`` is every column). ``copy=False``: with more rows than columns, the
    ridge fit uses ``X_kept`` as it is, without the centred copy and the second layout
    (``fit_ridge_multinomial(copy=False)``), for a large refit that only just fits.
    ``on_iteration``: called after every L-BFGS iteration (not in the row space)."""
    started = time.perf_counter()
    in_row_space = l2 > 0 and X_kept.shape[0] < X_kept.shape[1]
    options = {}
    if not in_row_space:
        options = {"copy": copy, "on_iteration": on_iteration}
    fit = fit_ridge_in_row_space if in_row_space else fit_ridge_multinomial
    result = fit(
        X_kept,
        datafit,
        l2,
        fit_intercept=settings.fit_intercept,
        tol=settings.tol,
        max_iter=settings.max_iter,
        intercept_init=intercept_init,
        **options,
    )
    return Refit(
        kept=np.arange(X_kept.shape[1]),
        coef=result.coef,
        intercept=result.intercept,
        n_iter=result.n_iter,
        converged=result.converged,
        in_row_space=in_row_space,
        seconds=time.perf_counter() - started,
    )
