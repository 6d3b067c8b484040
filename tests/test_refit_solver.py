"""The L-BFGS refit: float32 data gets the float64 answer, certified by a float64 gradient."""

import numpy as np
import pytest

from skh2t.linear_model._solver.datafits import MultinomialLogistic
from skh2t.linear_model._solver.lbfgs import fit_ridge_multinomial


@pytest.fixture(scope="module")
def wide_problem():
    """More features than samples, like a Head2Toe refit (a near-separable problem)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 400)).astype(np.float32) / 20.0
    y = (X[:, :3] @ rng.standard_normal((3, 4))).argmax(axis=1)
    return X, MultinomialLogistic(y, 4, np.ones(150))


def float64_gradient(X, datafit, l2, result):
    X = X.astype(np.float64)
    _, logit_gradient = datafit.value_and_logit_gradient(X @ result.coef + result.intercept)
    return np.concatenate(
        [(X.T @ logit_gradient + l2 * result.coef).ravel(), logit_gradient.sum(0)]
    )


@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-8])
def test_float32_refit_meets_tol_in_float64(wide_problem, tol):
    # At 1e-8 single-precision products stall L-BFGS above tol: the
    # float64 check must catch that and let it finish in float64.
    X, datafit = wide_problem
    result = fit_ridge_multinomial(X, datafit, 1e-4, tol=tol, max_iter=10_000)
    assert result.converged
    assert np.abs(float64_gradient(X, datafit, 1e-4, result)).max() <= tol


def test_float32_refit_matches_the_float64_refit(wide_problem):
    X, datafit = wide_problem
    single = fit_ridge_multinomial(X, datafit, 1e-4, tol=1e-9, max_iter=10_000)
    double = fit_ridge_multinomial(X.astype(np.float64), datafit, 1e-4, tol=1e-9, max_iter=10_000)
    np.testing.assert_allclose(
        single.coef, double.coef, rtol=0, atol=1e-5 * np.abs(double.coef).max()
    )
    np.testing.assert_allclose(single.intercept, double.intercept, atol=1e-5)


def test_refit_leaves_the_data_untouched(wide_problem):
    X, datafit = wide_problem
    before = X.copy()
    fit_ridge_multinomial(X, datafit, 1e-4)
    np.testing.assert_array_equal(X, before)


def test_float32_refit_without_intercept_matches_the_float64_refit(wide_problem):
    X, datafit = wide_problem
    params = {"fit_intercept": False, "tol": 1e-8, "max_iter": 10_000}
    single = fit_ridge_multinomial(X, datafit, 1e-4, **params)
    double = fit_ridge_multinomial(X.astype(np.float64), datafit, 1e-4, **params)
    assert not np.any(single.intercept)
    np.testing.assert_allclose(
        single.coef, double.coef, rtol=0, atol=1e-5 * np.abs(double.coef).max()
    )
