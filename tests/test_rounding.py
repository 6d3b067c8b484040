"""The suite's rounding tolerances accept rounding and nothing more."""

import numpy as np
import pytest

from tests.rounding import assert_rows_close, product_rounding_bound


def test_rows_close_accepts_rounding_and_rejects_another_row_or_a_small_change():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 300)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    eps = np.finfo(np.float32).eps
    assert_rows_close(X * (1 + 4 * eps * rng.uniform(-1, 1, X.shape)).astype(np.float32), X)
    with pytest.raises(AssertionError, match="epsilons"):
        assert_rows_close(X[[1, 0, 2, 3, 4, 5]], X)  # a row of another image
    changed = X.copy()
    changed[2, :10] *= 1.001  # e.g. a stale cache entry from slightly other weights
    with pytest.raises(AssertionError, match="epsilons"):
        assert_rows_close(changed, X)


def test_product_rounding_bound_holds_for_a_sum_in_another_order():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((40, 500)).astype(np.float32), rng.standard_normal(500)
    b = b.astype(np.float32)
    forward = a @ b
    pairwise_reversed = (a[:, ::-1] @ b[::-1]).astype(np.float32)
    sequential = np.array([np.cumsum(row * b, dtype=np.float32)[-1] for row in a])
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = product_rounding_bound(a, b)
    for computed in (pairwise_reversed, sequential):
        assert np.all(np.abs(computed.astype(np.float64) - forward) <= bound)
    assert np.all(np.abs(forward - exact) <= bound / 2)  # each within gamma_n of the exact sum
