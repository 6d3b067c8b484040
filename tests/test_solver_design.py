"""The solvers' thin products and the reuse of the subproblem's logits give the same numbers."""

import numpy as np
import pytest

from skh2t.linear_model._solver.datafits import MultinomialLogistic
from skh2t.linear_model._solver.design import Design, thin_left_product
from skh2t.linear_model._solver.working_set import full_gradient
from tests.rounding import assert_product_close


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_design_products_match_numpy(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 50)).astype(dtype)[:, ::2]  # not contiguous
    design = Design(X, dtype=None)
    coef, residual = rng.standard_normal((25, 4)), rng.standard_normal((30, 4))
    assert design.dot(coef).dtype == dtype
    assert design.dot(coef).flags.c_contiguous
    # Another operand order than numpy's, so another BLAS kernel: equal up to rounding.
    coef, residual = coef.astype(dtype), residual.astype(dtype)
    assert_product_close(design.dot(coef), X @ coef, X, coef)
    assert_product_close(design.tdot(residual), X.T @ residual, X.T, residual)
    assert_product_close(design.dot(coef[:, 0]), X @ coef[:, 0], X, coef[:, 0])
    assert_product_close(design.tdot(residual[:, 0]), X.T @ residual[:, 0], X.T, residual[:, 0])


def test_the_rounding_bound_of_a_product_catches_a_wrong_entry():
    rng = np.random.default_rng(5)
    X, coef = rng.standard_normal((30, 25)).astype(np.float32), rng.standard_normal(25)
    coef = coef.astype(np.float32)
    product = Design(X, dtype=None).dot(coef)
    assert_product_close(product, X @ coef, X, coef)
    with pytest.raises(AssertionError, match="rounding bound"):
        assert_product_close(product, X[:, 1:] @ coef[1:], X, coef)  # one term left out
    with pytest.raises(AssertionError, match="rounding bound"):
        assert_product_close(product, X[::-1] @ coef, X, coef)  # the rows of another order


def test_a_design_of_the_transposed_matrix_keeps_it_and_multiplies_the_same():
    rng = np.random.default_rng(4)
    X_transposed = rng.standard_normal((6, 9))
    design = Design.of_transposed(X_transposed)
    assert design.columns is X_transposed
    assert design.shape == (9, 6)
    coef, residual = rng.standard_normal((6, 3)), rng.standard_normal((9, 3))
    np.testing.assert_allclose(design.dot(coef), X_transposed.T @ coef, rtol=1e-12)
    np.testing.assert_allclose(design.tdot(residual), X_transposed @ residual, rtol=1e-12)


def test_design_defaults_to_float64():
    X = np.ones((3, 2), dtype=np.float32)
    assert Design(X).rows.dtype == np.float64
    assert Design(X).columns.shape == (2, 3)


def test_thin_left_product_casts_to_the_requested_dtype():
    rng = np.random.default_rng(1)
    X, R = rng.standard_normal((20, 7)).astype(np.float32), rng.standard_normal((20, 3))
    product = thin_left_product(X, R.astype(np.float32), dtype=np.float64)
    assert product.dtype == np.float64
    assert product.flags.c_contiguous
    np.testing.assert_allclose(product, X.T @ R, rtol=1e-5)


def test_full_gradient_with_known_logits_equals_recomputed():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 12))
    coef = np.zeros((12, 3))
    coef[[1, 5]] = rng.standard_normal((2, 3))
    intercept = rng.standard_normal(3)
    center = X.mean(axis=0)
    datafit = MultinomialLogistic(rng.integers(0, 3, 40), 3, np.ones(40))
    logits = (X - center) @ coef + intercept
    recomputed = full_gradient(X, datafit, coef, intercept, center)
    reused = full_gradient(X, datafit, coef, intercept, center, logits=logits)
    assert recomputed[0] == pytest.approx(reused[0], rel=1e-14)
    for a, b in zip(recomputed[1:], reused[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_lean_datafit_matches_log_softmax():
    from scipy.special import log_softmax

    rng = np.random.default_rng(3)
    logits = rng.standard_normal((50, 4)) * 30  # large logits: the shift must be right
    y, weight = rng.integers(0, 4, 50), rng.uniform(size=50)
    datafit = MultinomialLogistic(y, 4, weight)
    log_proba = log_softmax(logits, axis=1)
    expected = -(weight / weight.sum()) @ log_proba[np.arange(50), y]
    value, gradient = datafit.value_and_logit_gradient(logits)
    assert value == pytest.approx(expected, rel=1e-13)
    assert datafit.value(logits) == value
    one_hot = np.eye(4)[y]
    np.testing.assert_allclose(
        gradient, (weight / weight.sum())[:, None] * (np.exp(log_proba) - one_hot), atol=1e-15
    )
