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


# --- the refit in the row space of the kept columns --------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("renormalize", [False, True])
def test_row_space_refit_equals_scikit_learn_logistic_regression(dtype, renormalize):
    """Fewer rows than kept columns: solved through the Gram matrix, the same minimiser as
    scikit-learn's LogisticRegression on the kept (re-normalised) columns."""
    from sklearn.linear_model import LogisticRegression

    from skh2t._prediction import renormalize_columns
    from skh2t.linear_model._path import SolverSettings, refit_kept
    from skh2t.linear_model._solver import MultinomialLogistic

    rng = np.random.default_rng(0)
    n, d, l2 = 60, 400, 1e-2
    y = np.arange(n) % 3
    X = (rng.normal(size=(3, d))[y] * 0.3 + rng.normal(size=(n, d))).astype(dtype)
    weights = rng.uniform(0.5, 2.0, n)
    support = np.zeros(d, dtype=bool)
    support[rng.choice(d, 150, replace=False)] = True
    index = np.repeat(np.arange(8), d // 8) if renormalize else None
    datafit = MultinomialLogistic(y, 3, weights)
    refit = refit_kept(
        X, datafit, support, l2, SolverSettings(tol=1e-10, max_iter=10_000),
        renormalize_index=index,
    )  # fmt: skip
    assert refit.in_row_space
    assert refit.converged
    X_kept = np.array(X[:, support], dtype=np.float64)
    if renormalize:
        renormalize_columns(X_kept, index[support])
    # mean_i s_i CE + l2/2 ||W||^2 with s normalised to mean one  <=>  C = 1 / (n * l2)
    reference = LogisticRegression(C=1.0 / (n * l2), tol=1e-12, max_iter=100_000)
    reference.fit(X_kept, y, sample_weight=weights / weights.mean())
    coef = refit.coef - refit.coef.mean(axis=1, keepdims=True)  # softmax: classes centred
    scale = np.abs(reference.coef_).max()
    np.testing.assert_allclose(coef.T, reference.coef_, atol=1e-4 * scale)
    logits = X_kept @ refit.coef + refit.intercept
    expected = reference.decision_function(X_kept)
    np.testing.assert_allclose(
        logits - logits.mean(axis=1, keepdims=True), expected, atol=1e-4 * np.abs(expected).max()
    )


def test_row_space_handles_duplicate_rows_through_the_eigenvectors():
    """A singular Gram matrix (duplicate rows) has no Cholesky factor: the eigen path gives
    coordinates that reproduce it."""
    from skh2t.linear_model._solver.row_space import RowSpace, gram

    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 50))
    X[5] = X[2]
    K = gram(X)
    space = RowSpace.of(K)
    assert space.Z.shape[1] == 9  # one direction fewer
    np.testing.assert_allclose(space.Z @ space.Z.T, K, atol=1e-10 * np.abs(K).max())
    B = rng.normal(size=(space.Z.shape[1], 3))
    W = X.T @ space.row_weights(B)  # the columns' coefficients give the rows' logits
    np.testing.assert_allclose(X @ W, space.Z @ B, atol=1e-8)


def test_triangular_products_equal_dense_ones():
    from skh2t.linear_model._solver.row_space import LowerTriangular
    from tests.rounding import assert_product_close

    rng = np.random.default_rng(2)
    L = np.tril(rng.normal(size=(30, 30)))
    B, R = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    triangle = LowerTriangular(L)
    assert triangle.shape == (30, 30)
    assert_product_close(triangle.dot(B), L @ B, L, B)
    assert_product_close(triangle.tdot(R), L.T @ R, L.T, R)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_refit_on_an_implicitly_centred_design_is_the_refit_on_the_array(
    wide_problem, fit_intercept
):
    """fit_ridge_multinomial on a triangular design (trmm products, centring folded into
    the logits) and on the array (a centred copy) minimise the same objective."""
    from skh2t.linear_model._solver.row_space import LowerTriangular, RowSpace, gram

    X, datafit = wide_problem
    L = RowSpace.of(gram(X.T[:150].astype(np.float64))).Z  # a lower-triangular factor
    assert np.allclose(L, np.tril(L))
    options = {"fit_intercept": fit_intercept, "tol": 1e-9, "max_iter": 5000}
    ours = fit_ridge_multinomial(LowerTriangular(L), datafit, 1e-3, **options)
    theirs = fit_ridge_multinomial(L, datafit, 1e-3, **options)
    assert ours.converged
    assert theirs.converged
    np.testing.assert_allclose(ours.coef, theirs.coef, atol=1e-6)
    np.testing.assert_allclose(ours.intercept, theirs.intercept, atol=1e-6)
    if not fit_intercept:
        np.testing.assert_array_equal(ours.intercept, 0.0)
