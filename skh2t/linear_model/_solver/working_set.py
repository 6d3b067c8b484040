"""Outer working-set loop around FISTA for the group-lasso multinomial problem."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skh2t.linear_model._solver.datafits import MultinomialLogistic
from skh2t.linear_model._solver.design import Design
from skh2t.linear_model._solver.fista import fista
from skh2t.linear_model._solver.penalties import GroupLasso
from skh2t.linear_model._solver.rows import StackedRows
from skh2t.linear_model._solver.streamed import BlockDesign
from skh2t.threads import single_blas_thread

_MIN_WORKING_SET = 100  # groups in the first working set
# Subproblems are solved to this fraction of the outer violation: loosely while
# the support grows, tightly once it has settled (fewer restarts of FISTA).
_INNER_TOL_FRACTION = 0.3
_SETTLED_TOL_FRACTION = 0.03
_MAX_OUTER = 200
_FLOAT64_BLOCK = 4096  # columns converted at a time by full_gradient(in_float64=True)
_ROW_BLOCK = 64  # rows centred at a time by rms_column_norm


@dataclass
class WorkingSetResult:
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    converged: bool
    kkt_violation: float
    objective: float
    dual_scores: np.ndarray  # per group, ||grad_g|| / (alpha w_g) at the solution
    stalled: bool = False  # stopped because rounding errors prevent progress
    n_outer: int = 0  # working-set rounds run
    outer_limit: bool = False  # stopped at the limit of working-set rounds, not of max_iter


def full_gradient(
    X: np.ndarray | StackedRows,
    datafit: MultinomialLogistic,
    coef: np.ndarray,
    intercept: np.ndarray,
    center: np.ndarray | None = None,
    *,
    in_float64: bool = False,
    logits: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss and gradients over all features, touching only the non-zero rows of ``coef``.

    With ``center`` (the weighted column means), the model is parametrised on
    centred data, ``logits = (X - center) @ coef + intercept``: the same
    problem with a shifted intercept, much better conditioned. The product
    ``X.T @ residual`` runs in the dtype of ``X`` (single precision BLAS for
    float32 data): it only ranks groups and checks optimality, while the
    subproblems that set the coefficients run in float64. ``in_float64=True``
    runs it in float64 whatever the data, ``_FLOAT64_BLOCK`` columns at a time.
    ``logits``, when known (from the subproblem), saves recomputing them.
    ``X`` may be a :class:`StackedRows` (a fold's rows, not copied) or a dask
    array's rows; out of core, the non-zero columns and the float64 conversion
    are taken one block of rows at a time (:mod:`.streamed`).
    """
    X = StackedRows.of(X)
    if logits is None:
        nonzero = np.flatnonzero(np.any(coef != 0.0, axis=1))
        if X.out_of_core:
            logits = BlockDesign.of_rows(X, nonzero).dot(coef[nonzero]) + intercept
        else:
            logits = X.take(nonzero) @ coef[nonzero] + intercept
        if center is not None:
            logits -= center[nonzero] @ coef[nonzero]
    loss, logit_gradient = datafit.value_and_logit_gradient(logits)
    grad_intercept = logit_gradient.sum(axis=0)
    if in_float64 and X.out_of_core:
        grad_coef = BlockDesign.of_rows(X).tdot(logit_gradient)
    elif in_float64:
        grad_coef = np.empty((X.shape[1], logit_gradient.shape[1]))
        for start in range(0, X.shape[1], _FLOAT64_BLOCK):
            block = slice(start, start + _FLOAT64_BLOCK)
            grad_coef[block] = X.take(block, dtype=np.float64).T @ logit_gradient
    else:
        residual = logit_gradient.astype(X.dtype, copy=False)
        grad_coef = X.tdot(residual, dtype=np.float64)
    if center is not None:
        grad_coef -= np.outer(center, grad_intercept)
    return loss, grad_coef, grad_intercept


def constant_columns(X: np.ndarray | StackedRows) -> np.ndarray:
    """Mask of the columns of ``X`` that are constant to the rounding unit of their dtype.

    A column whose values span at most ``eps * max|x_j|`` (``eps`` of X's
    dtype) is numerically constant: next to an intercept its gradient
    ``(x_j - c_j)^T R`` is at most ``ptp(x_j) * ||R||_1``, no more than the
    rounding error of computing ``x_j^T R``, so any non-zero value the
    arithmetic gives it is rounding. The solvers treat such columns as zero
    once centred (their exact centred value when all entries are equal).
    """
    X = StackedRows.of(X)
    top, bottom = X.column_extremes()
    magnitude = np.maximum(np.abs(top), np.abs(bottom)).astype(np.float64)
    return top.astype(np.float64) - bottom <= np.finfo(X.dtype).eps * magnitude


def rms_column_norm(
    X: np.ndarray | StackedRows,
    weight: np.ndarray,
    center: np.ndarray | None,
    constant: np.ndarray,
) -> float:
    """Root mean square, over the columns not in ``constant``, of their weighted norms
    ``sqrt(sum_i weight_i (x_ij - center_j)^2)`` (centred when ``center`` is given); 1 if
    there is none or it is zero.

    The natural scale of the gradient of a coefficient: it sets the stopping
    criterion of the intercept (and of everything when ``alpha == 0``), so
    that the criteria do not change when ``X`` is multiplied by a constant.
    A scale, not a result: it is computed in the dtype of ``X``, ``_ROW_BLOCK``
    rows at a time.
    """
    X = StackedRows.of(X)
    shift = np.zeros(X.shape[1], X.dtype) if center is None else center.astype(X.dtype)
    total = 0.0
    for start, chunk in X.chunks(_ROW_BLOCK):
        part = chunk - shift
        part[:, constant] = 0.0
        weights = weight[start : start + chunk.shape[0]]
        total += float(weights @ np.einsum("ij,ij->i", part, part))
    count = int(np.count_nonzero(~constant))
    scale = np.sqrt(total / count) if count else 0.0
    return float(scale) if scale > 0 else 1.0


@dataclass(frozen=True)
class Tolerance:
    """The scales of the KKT criteria: ``violation_g <= tol * group_scale * w_g`` for
    every group and ``|grad_intercept| <= tol * intercept_scale``.

    ``group_scale`` is ``alpha`` (the column scale ``s`` when ``alpha == 0``),
    ``intercept_scale`` is ``group_scale / s``: the criterion of a column of
    unit scale, in the same units as the intercept's.
    """

    group_scale: float
    intercept_scale: float

    @classmethod
    def of(cls, alpha: float, scale: float) -> Tolerance:
        group_scale = alpha if alpha > 0 else scale
        return cls(group_scale, group_scale / scale)


def relative_kkt_violation(
    penalty: GroupLasso,
    coef: np.ndarray,
    grad_coef: np.ndarray,
    grad_intercept: np.ndarray,
    fit_intercept: bool,
    tolerance: Tolerance,
) -> tuple[float, np.ndarray]:
    """Largest KKT violation relative to the criteria's scales (see :class:`Tolerance`), and
    the per-group violations."""
    violation = penalty.kkt_violation(coef, grad_coef)
    worst = float(np.max(violation / (tolerance.group_scale * penalty.group_weights), initial=0.0))
    if fit_intercept:
        worst = max(worst, float(np.abs(grad_intercept).max()) / tolerance.intercept_scale)
    return worst, violation


@dataclass(frozen=True)
class ColumnSummary:
    """What the solver needs of the columns of ``X`` that does not depend on ``alpha``.

    Computed once per data set and datafit (e.g. once for a whole path) and
    passed to every :func:`solve_group_lasso`.

    Attributes
    ----------
    center : ndarray of shape (n_features,) or None
        Weighted column means (``None`` without an intercept).
    constant : ndarray of bool, shape (n_features,)
        The :func:`constant_columns` (none without an intercept): zero once centred.
    scale : float
        :func:`rms_column_norm` of the centred columns, the scale of the
        intercept's stopping criterion (see :class:`Tolerance`).
    """

    center: np.ndarray | None
    constant: np.ndarray
    scale: float

    @classmethod
    def of(
        cls, X: np.ndarray | StackedRows, datafit: MultinomialLogistic, fit_intercept: bool
    ) -> ColumnSummary:
        X = StackedRows.of(X)
        with single_blas_thread():
            if not fit_intercept:
                constant = np.zeros(X.shape[1], dtype=bool)
                return cls(None, constant, rms_column_norm(X, datafit.weight, None, constant))
            constant = constant_columns(X)
            weight = datafit.weight[:, None].astype(X.dtype)
            center = X.tdot(weight, dtype=np.float64)[:, 0]
            return cls(center, constant, rms_column_norm(X, datafit.weight, center, constant))


def _start_gradient(X, datafit, coef, intercept, columns: ColumnSummary):
    """``(loss, grad_coef, grad_intercept)`` at a cold start (zero coefficients), else ``None``.

    From zero the logits do not depend on the centre: one product ``X.T @ R``.
    """
    if columns.center is None or np.any(coef):
        return None
    loss, logit_gradient = datafit.value_and_logit_gradient(
        np.broadcast_to(intercept, (X.shape[0], intercept.shape[0]))
    )
    grad_intercept = logit_gradient.sum(axis=0)
    grad_coef = X.tdot(logit_gradient.astype(X.dtype), dtype=np.float64)
    grad_coef -= np.outer(columns.center, grad_intercept)
    grad_coef[columns.constant] = 0.0
    return loss, grad_coef, grad_intercept


class _CentredColumns:
    """The working set's columns of ``X`` in float64, centred, kept from one round to the next.

    Each round gathers from ``X`` only the columns that are new to the working
    set: in a row-major ``X`` a gather reads every cache line its columns
    touch, which for a scattered working set is most of ``X``.
    """

    def __init__(self, X: StackedRows, center: np.ndarray | None, constant: np.ndarray):
        self.X, self.center, self.constant = X, center, constant
        self.features = np.empty(0, dtype=np.intp)
        self.transposed = np.empty((0, X.shape[0]))  # one row per feature: cheap to gather

    def take(self, features: np.ndarray) -> np.ndarray:
        """The centred float64 columns of ``features`` (sorted), transposed: a new array of
        shape (n_features_taken, n_samples)."""
        position = np.searchsorted(self.features, features)
        known = position < self.features.shape[0]
        known[known] = self.features[position[known]] == features[known]
        transposed = np.empty((features.shape[0], self.X.shape[0]))
        transposed[known] = self.transposed[position[known]]
        new = features[~known]
        if new.size:
            fresh = np.asarray(self.X.take(new).T, dtype=np.float64)
            if self.center is not None:
                fresh -= self.center[new][:, None]
            fresh[self.constant[new]] = 0.0
            transposed[~known] = fresh
        self.features, self.transposed = features, transposed
        return transposed


def _select_working_set(penalty: GroupLasso, coef: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Features of the groups to optimise next: all non-zero groups, then the worst violators.

    Up to twice as many groups as are non-zero (the set doubles while the
    model grows), but no more zero groups than violate their KKT condition:
    near the solution few do, and every product then costs half as much.
    """
    active = penalty.group_norms(coef) > 0
    n_active = int(active.sum())
    n_violating = int(np.count_nonzero(~active & (violation > 0)))
    size = max(_MIN_WORKING_SET, min(2 * n_active, n_active + n_violating))
    if size >= penalty.n_groups:
        return np.arange(coef.shape[0])
    priority = np.where(active, np.inf, violation / penalty.group_weights)
    chosen = np.argpartition(-priority, size - 1)[:size]
    in_working_set = np.zeros(penalty.n_groups, dtype=bool)
    in_working_set[chosen] = True
    return np.flatnonzero(in_working_set[penalty.group_index])


def _group_column_scale(
    X_transposed: np.ndarray, datafit: MultinomialLogistic, penalty: GroupLasso
) -> np.ndarray:
    """Per-feature scale, constant within each group: the group's RMS weighted column norm.

    ``X_transposed`` holds one feature per row. Dividing the columns by it
    (and the coefficients' rows by its inverse, the group weights by it) is an
    exact change of variables that keeps the group-lasso form and equalises
    the curvature across groups, which FISTA's single step size needs when
    features come from layers of different widths.
    """
    return group_scale_of_squares((X_transposed * X_transposed) @ datafit.weight, penalty)


def group_scale_of_squares(column_squares: np.ndarray, penalty: GroupLasso) -> np.ndarray:
    """:func:`_group_column_scale` from the weighted squared norms of the columns."""
    group_sizes = np.bincount(penalty.group_index, minlength=penalty.n_groups)
    group_mean = np.bincount(penalty.group_index, column_squares, minlength=penalty.n_groups)
    group_scale = np.sqrt(group_mean / group_sizes)
    group_scale[group_scale == 0] = 1.0
    return group_scale[penalty.group_index]


def _subproblem_design(
    X: StackedRows,
    gathered: _CentredColumns | None,
    features: np.ndarray,
    center: np.ndarray | None,
    constant: np.ndarray,
    datafit: MultinomialLogistic,
    penalty: GroupLasso,
) -> tuple[Design | BlockDesign, np.ndarray]:
    """The working set's design, its columns scaled per group (:func:`_group_column_scale`),
    and that scale per feature: in memory from the ``gathered`` columns, out of core
    (``gathered`` is ``None``) a :class:`BlockDesign`, which holds no float64 copy."""
    if gathered is None:
        design = BlockDesign.of(X, features, center, constant)
        column_scale = group_scale_of_squares(design.weighted_squares(datafit.weight), penalty)
        return design.scaled(column_scale), column_scale
    X_transposed = gathered.take(features)
    column_scale = _group_column_scale(X_transposed, datafit, penalty)
    return Design.of_transposed(X_transposed / column_scale[:, None]), column_scale


def _first_feature_of_groups(penalty: GroupLasso) -> np.ndarray:
    """Index of one feature of every group, in group order."""
    first = np.empty(penalty.n_groups, dtype=np.intp)
    first[penalty.group_index[::-1]] = np.arange(penalty.group_index.shape[0])[::-1]
    return first


def solve_group_lasso(
    X: np.ndarray | StackedRows,
    datafit: MultinomialLogistic,
    penalty: GroupLasso,
    coef: np.ndarray,
    intercept: np.ndarray,
    *,
    fit_intercept: bool = True,
    tol: float = 1e-4,
    max_iter: int = 1000,
    verbose: int = 0,
    columns: ColumnSummary | None = None,
) -> WorkingSetResult:
    """Solve the group-lasso multinomial logistic problem to a relative KKT tolerance.

    Each outer iteration computes the full gradient, stops if every group's
    KKT violation is below ``tol * alpha * w_g`` (and every entry of the
    intercept gradient below ``tol * alpha / s``, ``s`` the
    :func:`rms_column_norm` of the centred columns; see :class:`Tolerance`), and
    otherwise solves the problem restricted to a working set of groups with
    FISTA, warm-started, to a looser tolerance. With an intercept, the
    :func:`constant_columns` are zero once centred and keep zero coefficients.
    ``max_iter`` bounds the total number of FISTA iterations. BLAS runs on
    one thread (see :mod:`skh2t.threads`). ``columns``: the
    :class:`ColumnSummary` of ``X`` and ``datafit``, when known (a path computes
    it once for all its alphas). ``X`` may be a :class:`StackedRows` (a fold's rows).
    """
    X = StackedRows.of(X)
    if columns is None:
        columns = ColumnSummary.of(X, datafit, fit_intercept)
    with single_blas_thread():
        return _solve_group_lasso(
            X,
            datafit,
            penalty,
            coef,
            intercept,
            fit_intercept=fit_intercept,
            tol=tol,
            max_iter=max_iter,
            verbose=verbose,
            columns=columns,
        )


def _solve_group_lasso(
    X, datafit, penalty, coef, intercept, *, fit_intercept, tol, max_iter, verbose, columns
) -> WorkingSetResult:
    coef = np.array(coef, dtype=np.float64)
    intercept = np.array(intercept, dtype=np.float64)
    center, constant = columns.center, columns.constant
    start_gradient = _start_gradient(X, datafit, coef, intercept, columns)
    if center is not None:
        intercept += center @ coef  # to the centred parametrisation
    coef[constant] = 0.0  # columns that are zero once centred: their rows change no logit
    tolerance = Tolerance.of(penalty.alpha, columns.scale)
    n_iter, lipschitz, stalled = 0, None, False
    previous_active = int(np.count_nonzero(penalty.group_norms(coef)))
    logits = None
    # Out of core, the working set is read in row blocks each round, never kept in float64.
    gathered = None if X.out_of_core else _CentredColumns(X, center, constant)

    def gradient(**options):
        loss, grad_coef, grad_intercept = full_gradient(
            X, datafit, coef, intercept, center, logits=logits, **options
        )
        grad_coef[constant] = 0.0
        return loss, grad_coef, grad_intercept

    for outer in range(_MAX_OUTER + 1):
        if outer == 0 and start_gradient is not None:
            loss, grad_coef, grad_intercept = start_gradient
        else:
            loss, grad_coef, grad_intercept = gradient()
        worst, violation = relative_kkt_violation(
            penalty, coef, grad_coef, grad_intercept, fit_intercept, tolerance
        )
        if stalled and worst > tol and X.dtype != np.float64:
            # The subproblem (float64) saw no violation the single-precision full
            # gradient reports: settle the disagreement with a float64 gradient.
            loss, grad_coef, grad_intercept = gradient(in_float64=True)
            worst, violation = relative_kkt_violation(
                penalty, coef, grad_coef, grad_intercept, fit_intercept, tolerance
            )
        objective = loss + penalty.value(coef)
        n_active = int(np.count_nonzero(penalty.group_norms(coef)))
        if verbose:
            print(
                f"[GroupLasso] outer {outer}: objective {objective:.8g}, "
                f"relative KKT violation {worst:.2e}, active groups {n_active}, "
                f"FISTA iterations {n_iter}"
            )
        if worst <= tol or n_iter >= max_iter or outer == _MAX_OUTER or stalled:
            break
        features = _select_working_set(penalty, coef, violation)
        sub_penalty, _ = penalty.restricted(features)
        covers_all = sub_penalty.n_groups == penalty.n_groups
        settled = n_active > 0 and abs(n_active - previous_active) <= 0.1 * n_active
        previous_active = n_active
        fraction = _SETTLED_TOL_FRACTION if settled else _INNER_TOL_FRACTION
        inner_tol = tol if covers_all else max(tol, fraction * worst)
        design, column_scale = _subproblem_design(
            X, gathered, features, center, constant, datafit, sub_penalty
        )
        scaled_penalty = GroupLasso(
            penalty.alpha,
            sub_penalty.group_index,
            sub_penalty.group_weights / column_scale[_first_feature_of_groups(sub_penalty)],
        )
        result = fista(
            design,
            datafit,
            scaled_penalty,
            coef[features] * column_scale[:, None],
            intercept,
            fit_intercept=fit_intercept,
            max_iter=max_iter - n_iter,
            group_thresholds=inner_tol * tolerance.group_scale * scaled_penalty.group_weights,
            intercept_threshold=inner_tol * tolerance.intercept_scale,
            lipschitz=lipschitz,
        )
        lipschitz = result.lipschitz
        coef[features] = result.coef / column_scale[:, None]
        intercept, logits = result.intercept, result.logits
        n_iter += result.n_iter
        # A subproblem solved where it starts cannot move the next one either: the
        # full gradient (float32 for float32 data) disagrees within rounding.
        stalled = result.stalled or result.n_iter == 0
    if center is not None:
        intercept -= center @ coef
    dual_scores = penalty.group_norms(grad_coef) / (tolerance.group_scale * penalty.group_weights)
    converged = worst <= tol
    return WorkingSetResult(
        coef,
        intercept,
        n_iter,
        converged,
        worst,
        objective,
        dual_scores,
        stalled,
        n_outer=outer,
        outer_limit=not converged and not stalled and n_iter < max_iter,
    )
