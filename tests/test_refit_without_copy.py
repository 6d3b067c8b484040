"""The ridge refit without copies of its data (large refits on many images)."""

import numpy as np
import pytest

from skh2t.linear_model._solver.datafits import MultinomialLogistic
from skh2t.linear_model._solver.lbfgs import fit_ridge_multinomial
from skh2t.linear_model._solver.streamed import BlockDesign


def problem(dtype, n=600, d=40, k=4):
    rng = np.random.default_rng(0)
    y = rng.integers(0, k, n)
    X = rng.standard_normal((n, d)) + 3.0  # off-centre: the implicit centring matters
    X[:, :k] += 2 * (y[:, None] == np.arange(k))
    weight = rng.uniform(0.5, 2.0, n)
    return X.astype(dtype), MultinomialLogistic(y, k, weight)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_copy_reaches_the_minimiser_of_the_copying_fit(dtype, tmp_path):
    X, datafit = problem(dtype)
    path = tmp_path / "X.npy"
    np.save(path, X)
    on_disk = np.load(path, mmap_mode="r")
    expected = fit_ridge_multinomial(X, datafit, 1e-2, tol=1e-8, max_iter=5000)
    got = fit_ridge_multinomial(on_disk, datafit, 1e-2, tol=1e-8, max_iter=5000, copy=False)
    assert got.converged
    # Both stop at a gradient of 1e-8 with curvature >= l2 = 1e-2: within 1e-6 of it.
    np.testing.assert_allclose(got.coef, expected.coef, atol=1e-5)
    np.testing.assert_allclose(got.intercept, expected.intercept, atol=1e-5)


def test_the_rows_as_a_block_design_compute_their_products_in_blocks():
    X = np.random.default_rng(1).standard_normal((30, 5)).astype(np.float16)
    design = BlockDesign.of_rows(X)
    design.rows_per_block = 7  # five blocks, the last of two rows
    W, R = np.ones((5, 2)), np.arange(60.0).reshape(30, 2)
    exact = X.astype(np.float64)
    np.testing.assert_allclose(design.dot(W), exact @ W, rtol=1e-12)
    np.testing.assert_allclose(design.tdot(R), exact.T @ R, rtol=1e-12)
    assert design.dot(W).dtype == np.float64
    assert design.shape == (30, 5)
