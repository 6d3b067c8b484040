"""Accelerated proximal gradient (FISTA) with adaptive step and restart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skh2t.linear_model._solver.anderson import AndersonExtrapolator
from skh2t.linear_model._solver.datafits import MultinomialLogistic
from skh2t.linear_model._solver.design import Design
from skh2t.linear_model._solver.penalties import GroupLasso

_STEP_GROWTH = 0.9  # after an accepted step, try a 10% larger one
_MAX_BACKTRACKS = 60  # 2**60: beyond that the step is lost in rounding


@dataclass
class FistaResult:
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    converged: bool
    lipschitz: float
    stalled: bool = False  # no step decreased the model: numerical precision is reached
    logits: np.ndarray | None = None  # X @ coef + intercept at the returned point


def lipschitz_estimate(X: Design, datafit: MultinomialLogistic, n_power: int = 15) -> float:
    """Power-iteration estimate of the gradient's Lipschitz constant (with intercept column)."""
    weight = datafit.weight
    vector = np.ones(X.shape[1] + 1) / np.sqrt(X.shape[1] + 1)
    eigenvalue = 1.0
    for _ in range(n_power):
        projected = weight * (X.dot(vector[:-1]) + vector[-1])
        image = np.append(X.tdot(projected), projected.sum())
        eigenvalue = float(np.linalg.norm(image))
        if eigenvalue == 0.0:
            return 1.0
        vector = image / eigenvalue
    return datafit.curvature_bound() * eigenvalue


def kkt_satisfied(
    penalty: GroupLasso,
    coef: np.ndarray,
    grad_coef: np.ndarray,
    grad_intercept: np.ndarray,
    group_thresholds: np.ndarray,
    intercept_threshold: float,
    fit_intercept: bool,
) -> bool:
    if fit_intercept and np.abs(grad_intercept).max() > intercept_threshold:
        return False
    return bool(np.all(penalty.kkt_violation(coef, grad_coef) <= group_thresholds))


def fista(
    X: Design,
    datafit: MultinomialLogistic,
    penalty: GroupLasso,
    coef: np.ndarray,
    intercept: np.ndarray,
    *,
    fit_intercept: bool,
    max_iter: int,
    group_thresholds: np.ndarray,
    intercept_threshold: float,
    lipschitz: float | None = None,
) -> FistaResult:
    """Minimise ``datafit(X @ coef + intercept) + penalty(coef)``.

    Backtracking doubles the Lipschitz estimate ``L`` until the quadratic upper
    bound holds, and shrinks it by 10% after every accepted step so that the
    step can grow back where the loss is flatter. Momentum restarts whenever
    the objective goes up (O'Donoghue & Candès, 2015). Stops as soon as every
    group and the intercept meet their KKT thresholds at the current point.

    Every few iterations an Anderson extrapolation of the last iterates is
    tried and kept if it lowers the objective (momentum then restarts). The
    logits of any combination of iterates are the same combination of their
    logits, so each iteration costs two products with ``X``.
    """
    lipschitz = lipschitz_estimate(X, datafit) if lipschitz is None else lipschitz
    coef, intercept = coef.copy(), intercept.copy()
    logits = X.dot(coef) + intercept
    objective = datafit.value(logits) + penalty.value(coef)
    point_coef, point_intercept, point_logits = coef, intercept, logits
    momentum = 1.0
    anderson = AndersonExtrapolator(memory=10)
    for iteration in range(1, max_iter + 1):
        loss, logit_gradient = datafit.value_and_logit_gradient(point_logits)
        grad_coef = X.tdot(logit_gradient)
        grad_intercept = logit_gradient.sum(axis=0) if fit_intercept else 0.0 * intercept
        # The optimality conditions can be checked at any point: at the current
        # one they cost no product, so every iteration can stop the solve.
        if kkt_satisfied(
            penalty,
            point_coef,
            grad_coef,
            grad_intercept,
            group_thresholds,
            intercept_threshold,
            fit_intercept,
        ):
            return FistaResult(
                point_coef, point_intercept, iteration - 1, True, lipschitz, logits=point_logits
            )
        # Rounding error of the loss, which a sufficient-decrease test cannot resolve.
        slack = 1e-12 * abs(loss) + 16 * np.finfo(float).eps * float(np.abs(point_logits).max())
        for _ in range(_MAX_BACKTRACKS):
            step = 1.0 / lipschitz
            new_coef = penalty.prox(point_coef - step * grad_coef, step)
            new_intercept = point_intercept - step * grad_intercept
            delta_coef = new_coef - point_coef
            delta_intercept = new_intercept - point_intercept
            new_logits = X.dot(new_coef) + new_intercept
            new_loss = datafit.value(new_logits)
            linear = np.vdot(grad_coef, delta_coef) + grad_intercept @ delta_intercept
            squared = np.vdot(delta_coef, delta_coef) + delta_intercept @ delta_intercept
            if new_loss <= loss + linear + 0.5 * lipschitz * squared + slack:
                break
            lipschitz *= 2.0
        else:
            return FistaResult(
                coef, intercept, iteration, False, lipschitz / 2**_MAX_BACKTRACKS, True, logits
            )
        new_objective = new_loss + penalty.value(new_coef)
        if new_objective > objective:
            momentum = 1.0
            point_coef, point_intercept, point_logits = new_coef, new_intercept, new_logits
        else:
            next_momentum = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * momentum**2))
            beta = (momentum - 1.0) / next_momentum
            point_coef = new_coef + beta * (new_coef - coef)
            point_intercept = new_intercept + beta * (new_intercept - intercept)
            point_logits = new_logits + beta * (new_logits - logits)
            momentum = next_momentum
        coef, intercept, logits, objective = new_coef, new_intercept, new_logits, new_objective
        lipschitz *= _STEP_GROWTH
        proposal = anderson.push((coef, intercept), (logits,))
        if proposal is not None:
            (acc_coef, acc_intercept), (acc_logits,) = proposal
            acc_objective = datafit.value(acc_logits) + penalty.value(acc_coef)
            if acc_objective < objective:
                coef, intercept, logits, objective = (
                    acc_coef,
                    acc_intercept,
                    acc_logits,
                    acc_objective,
                )
                point_coef, point_intercept, point_logits = coef, intercept, logits
        if squared == 0.0:  # a fixed point, although the momentum may move the next point
            _, logit_gradient = datafit.value_and_logit_gradient(logits)
            if kkt_satisfied(
                penalty,
                coef,
                X.tdot(logit_gradient),
                logit_gradient.sum(axis=0),
                group_thresholds,
                intercept_threshold,
                fit_intercept,
            ):
                return FistaResult(coef, intercept, iteration, True, lipschitz, logits=logits)
    return FistaResult(coef, intercept, max_iter, False, lipschitz, logits=logits)
