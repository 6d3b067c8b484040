"""The suite's rounding tolerances accept rounding and nothing more."""

import copy

import numpy as np
import pytest

from tests.rounding import (
    assert_rows_close,
    assert_same_predictions,
    assert_same_support,
    product_rounding_bound,
)


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


def _fitted_selection():
    from skh2t import GroupLassoClassifier

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    X = rng.standard_normal((300, 40))
    X[:, :6] += y[:, None] == np.arange(6) % 3
    return GroupLassoClassifier(alpha_fraction=0.3, keep_fraction=0.25).fit(X, y), X


def test_same_support_accepts_a_near_tie_at_the_edge_and_rejects_any_other_difference():
    model, _ = _fitted_selection()
    kept = np.flatnonzero(model.support_)
    weakest = kept[np.argmin(model.feature_scores_[kept])]
    runner_up = np.flatnonzero(~model.support_)[np.argmax(model.feature_scores_[~model.support_])]
    tied = copy.deepcopy(model)
    tied.feature_scores_ = tied.feature_scores_.copy()
    tied.feature_scores_[runner_up] = tied.feature_scores_[weakest] * (1 + 1e-6)
    swapped = copy.deepcopy(tied)
    swapped.support_ = tied.support_.copy()
    swapped.support_[[weakest, runner_up]] = [False, True]
    assert_same_support(swapped, tied)  # a near-tie at the edge
    strongest = kept[np.argmax(model.feature_scores_[kept])]
    wrong = copy.deepcopy(model)
    wrong.support_ = model.support_.copy()
    wrong.support_[[strongest, runner_up]] = [False, True]
    with pytest.raises(AssertionError, match="away from the edge"):
        assert_same_support(wrong, model)


def test_same_predictions_rejects_a_clear_difference():
    model, X = _fitted_selection()
    predicted = model.predict(X)
    assert assert_same_predictions(predicted, model, X).all()
    scores = model.decision_function(X)
    top = np.sort(scores, axis=1)
    clearest = np.argmax(top[:, -1] - top[:, -2])
    predicted[clearest] = np.argsort(scores[clearest])[-2]
    with pytest.raises(AssertionError):
        assert_same_predictions(predicted, model, X)
