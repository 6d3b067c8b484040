"""L-BFGS for the smooth refit: softmax cross-entropy plus a small ridge penalty."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from skh2t.linear_model._solver.datafits import MultinomialLogistic
from skh2t.linear_model._solver.design import Design
from skh2t.linear_model._solver.streamed import BlockDesign
from skh2t.threads import single_blas_thread


@dataclass
class RidgeResult:
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    converged: bool


def fit_ridge_multinomial(
    X: np.ndarray | Design,
    datafit: MultinomialLogistic,
    l2: float,
    *,
    fit_intercept: bool = True,
    tol: float = 1e-4,
    max_iter: int = 1000,
    intercept_init: np.ndarray | None = None,
    copy: bool = True,
    on_iteration: Callable[[], None] | None = None,
) -> RidgeResult:
    """Minimise ``datafit(X @ W + b) + l2 / 2 * ||W||_F^2`` with L-BFGS (intercept unpenalised).

    Stops when no gradient entry exceeds ``tol`` (scikit-learn's ``gtol``).
    For ``float32`` data the two products per iteration run in single
    precision, about twice as fast; the gradient at the end is then recomputed
    in ``float64``, and L-BFGS goes on in ``float64`` if it is above ``tol``
    (single-precision rounding can stall it short of a tight ``tol``).

    ``X`` may also be a float64 design given by its products (:class:`Design`'s
    ``shape``, ``dot`` and ``tdot``; e.g. a triangular factor multiplied through
    BLAS's ``trmm``): it is then centred implicitly, the same parametrisation
    without a centred copy.

    ``copy=False`` uses an array ``X`` as it is, centred implicitly
    (:meth:`BlockDesign.of_rows <skh2t.linear_model._solver.streamed.BlockDesign.of_rows>`:
    no centred copy, no second layout), for data
    that only just fits in memory; float32 data gets the same float64
    check and polish, its products then converted a block of rows at a time.
    ``on_iteration`` is called after every L-BFGS iteration (progress bars).
    """
    if not isinstance(X, np.ndarray):
        return _fit_on_design(
            X, datafit, l2, fit_intercept, tol, max_iter, intercept_init, None, on_iteration
        )
    if not copy:
        return _fit_without_copy(
            X, datafit, l2, fit_intercept, tol, max_iter, intercept_init, on_iteration
        )
    data = X
    dtype = np.float32 if data.dtype == np.float32 else np.float64
    X, center = _centred(data, datafit, dtype, fit_intercept)
    n_features, n_classes = X.shape[1], datafit.n_classes
    n_coef = n_features * n_classes
    start = _start(n_features, datafit, fit_intercept, intercept_init)
    with single_blas_thread():  # L-BFGS-B calls SciPy's BLAS, NumPy's does the products
        objective = _ridge_objective(X, datafit, l2, fit_intercept)
        solution = _lbfgs(objective, start, tol, max_iter, on_iteration)
        n_iter, params = int(solution.nit), solution.x
        if dtype != np.float64:
            # Certified on the data centred in float64: the rounding of the float32
            # centring is not part of the problem.
            X, center64 = _centred(data, datafit, np.float64, fit_intercept)
            params = params.copy()
            if fit_intercept:
                params[n_coef:] += (center64 - center) @ params[:n_coef].reshape(n_features, -1)
            center = center64
            objective = _ridge_objective(X, datafit, l2, fit_intercept)
            if np.abs(objective(params)[1]).max() > tol and n_iter < max_iter:
                solution = _lbfgs(objective, params, tol, max_iter - n_iter, on_iteration)
                n_iter, params = n_iter + int(solution.nit), solution.x
    return _result(params, n_features, center, datafit, fit_intercept, n_iter, solution.success)


def _fit_on_design(
    design,
    datafit,
    l2,
    fit_intercept,
    tol,
    max_iter,
    intercept_init,
    start=None,
    on_iteration=None,
) -> RidgeResult:
    """:func:`fit_ridge_multinomial` on a design given by its products, centred implicitly;
    from ``start`` (a :class:`RidgeResult` of the same problem), when given."""
    n_features = design.shape[1]
    center = None
    if fit_intercept:
        center = np.ascontiguousarray(design.tdot(datafit.weight[:, None]), dtype=float)[:, 0]
    if start is None:
        params = _start(n_features, datafit, fit_intercept, intercept_init)
    else:  # to the centred parametrisation of this design
        intercept = start.intercept + center @ start.coef if fit_intercept else []
        params = np.concatenate([start.coef.ravel(), intercept])
    objective = _ridge_objective(design, datafit, l2, fit_intercept, center)
    with single_blas_thread():
        if start is not None and np.abs(objective(params)[1]).max() <= tol:
            return start
        solution = _lbfgs(objective, params, tol, max_iter, on_iteration)
    return _result(
        solution.x, n_features, center, datafit, fit_intercept, int(solution.nit), solution.success
    )


def _fit_without_copy(X, datafit, l2, fit_intercept, tol, max_iter, intercept_init, on_iteration):
    """``fit_ridge_multinomial(copy=False)``: on ``BlockDesign.of_rows(X)``; float32
    data first in float32, then checked and polished in float64."""
    design = BlockDesign.of_rows(X, dtype=np.float32 if X.dtype == np.float32 else np.float64)
    result = _fit_on_design(
        design, datafit, l2, fit_intercept, tol, max_iter, intercept_init, None, on_iteration
    )
    if design.dtype == np.float64 or result.n_iter >= max_iter:
        return result
    polished = _fit_on_design(
        BlockDesign.of_rows(X),
        datafit,
        l2,
        fit_intercept,
        tol,
        max_iter - result.n_iter,
        intercept_init,
        start=result,
        on_iteration=on_iteration,
    )
    if polished is result:
        return result
    polished.n_iter += result.n_iter
    return polished


def _start(
    n_features: int,
    datafit: MultinomialLogistic,
    fit_intercept: bool,
    intercept_init: np.ndarray | None,
) -> np.ndarray:
    """Zero coefficients and the given intercept (default: the optimal one at zero)."""
    n_coef = n_features * datafit.n_classes
    start = np.zeros(n_coef + (datafit.n_classes if fit_intercept else 0))
    if fit_intercept:
        start[n_coef:] = (
            datafit.optimal_intercept_at_zero() if intercept_init is None else intercept_init
        )
    return start


def _result(params, n_features, center, datafit, fit_intercept, n_iter, success) -> RidgeResult:
    """Coefficients and the intercept of the uncentred data from L-BFGS's parameters
    (``center`` is only read with an intercept)."""
    n_classes = datafit.n_classes
    coef = params[: n_features * n_classes].reshape(n_features, n_classes)
    intercept = (
        params[n_features * n_classes :] - center @ coef if fit_intercept else np.zeros(n_classes)
    )
    return RidgeResult(coef, intercept, n_iter, bool(success))


def _centred(
    data: np.ndarray, datafit: MultinomialLogistic, dtype, fit_intercept: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``data`` in ``dtype`` minus its weighted column means (zero without intercept):
    an exact reparametrisation of the intercept, better conditioned."""
    X = np.array(data, dtype=dtype)
    if not fit_intercept:
        return X, np.zeros(X.shape[1], dtype)
    center = datafit.weight.astype(dtype) @ X
    X -= center
    return X, center


def _lbfgs(
    objective: Callable,
    start: np.ndarray,
    tol: float,
    max_iter: int,
    on_iteration: Callable[[], None] | None = None,
):
    options = {"maxiter": max_iter, "gtol": tol, "ftol": 64 * np.finfo(float).eps}
    callback = None if on_iteration is None else (lambda *_: on_iteration())
    return minimize(
        objective, start, jac=True, method="L-BFGS-B", options=options, callback=callback
    )


def _ridge_objective(
    X: np.ndarray | Design,
    datafit: MultinomialLogistic,
    l2: float,
    fit_intercept: bool,
    center: np.ndarray | None = None,
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """Value and gradient of the refit objective; the products run in the dtype of ``X``.

    ``X`` is an array or anything with :class:`Design`'s ``shape``, ``dot`` and
    ``tdot``. With ``center``, the logits are ``(X - center) @ coef +
    intercept``, computed without forming ``X - center``.
    """
    design = Design(X, dtype=None) if isinstance(X, np.ndarray) else X
    n_features, n_classes = design.shape[1], datafit.n_classes
    n_coef = n_features * n_classes

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        coef = params[:n_coef].reshape(n_features, n_classes)
        intercept = params[n_coef:] if fit_intercept else 0.0
        logits = design.dot(coef).astype(np.float64, copy=False)
        if center is not None:
            logits = logits - center @ coef
        value, logit_gradient = datafit.value_and_logit_gradient(logits + intercept)
        grad_coef = design.tdot(logit_gradient) + l2 * coef
        if center is not None:
            grad_coef -= np.outer(center, logit_gradient.sum(axis=0))
        gradient = [grad_coef.ravel()]
        if fit_intercept:
            gradient.append(logit_gradient.sum(axis=0))
        return value + 0.5 * l2 * float(np.vdot(coef, coef)), np.concatenate(gradient)

    return objective
