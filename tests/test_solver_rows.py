"""A fold's training rows as views (StackedRows) and the fold order that makes them views."""

import numpy as np
import pytest
from sklearn.model_selection import KFold, ShuffleSplit, StratifiedKFold

from skh2t.linear_model._fold_path import FoldOrder
from skh2t.linear_model._group_lasso import make_datafit
from skh2t.linear_model._path import GroupStructure, SolverSettings, alpha_max, group_lasso_path
from skh2t.linear_model._solver.rows import MAX_BLOCKS, StackedRows
from skh2t.linear_model._solver.working_set import (
    ColumnSummary,
    constant_columns,
    full_gradient,
    rms_column_norm,
)
from tests.rounding import assert_product_close


def _data(n=60, d=25, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    X[:, 3] = 2.5  # a constant column
    return X, rng.integers(0, 3, n)


def test_rows_in_a_few_runs_are_views_and_many_runs_one_copy():
    X, _ = _data()
    two_runs = np.r_[0:10, 30:60]
    stacked = StackedRows.of(X, two_runs)
    assert len(stacked.blocks) == 2
    assert all(np.shares_memory(block, X) for block in stacked.blocks)
    np.testing.assert_array_equal(stacked.as_array(), X[two_runs])
    scattered = np.arange(0, 60, 3)  # 20 runs of one row
    assert scattered.shape[0] > MAX_BLOCKS
    copied = StackedRows.of(X, scattered)
    assert len(copied.blocks) == 1
    assert not np.shares_memory(copied.blocks[0], X)
    np.testing.assert_array_equal(copied.as_array(), X[scattered])


def test_unordered_rows_keep_their_order():
    X, _ = _data()
    rows = np.r_[40:50, 0:5, 20:22]
    stacked = StackedRows.of(X, rows)
    assert len(stacked.blocks) == 3
    np.testing.assert_array_equal(stacked.as_array(), X[rows])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacked_products_gathers_and_summaries_equal_those_of_the_copy(dtype):
    X, y = _data(dtype=dtype)
    rows = np.r_[0:17, 35:60]
    stacked, copy = StackedRows.of(X, rows), np.ascontiguousarray(X[rows])
    R = np.random.default_rng(1).standard_normal((rows.shape[0], 3)).astype(dtype)
    assert_product_close(stacked.tdot(R), copy.T @ R, copy.T, R)
    np.testing.assert_array_equal(stacked.take(np.array([4, 1, 9])), copy[:, [4, 1, 9]])
    np.testing.assert_array_equal(constant_columns(stacked), constant_columns(copy))
    _, datafit = make_datafit(y[rows], None, None)
    summary, reference = (
        ColumnSummary.of(stacked, datafit, True),
        ColumnSummary.of(copy, datafit, True),
    )
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(summary.center, reference.center, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(summary.constant, reference.constant)
    assert summary.scale == pytest.approx(reference.scale, rel=rtol)
    weight = datafit.weight
    chunked = rms_column_norm(stacked, weight, summary.center, summary.constant)
    assert chunked == pytest.approx(rms_column_norm(copy, weight, summary.center, summary.constant))
    coef = np.zeros((X.shape[1], 3))
    coef[[0, 7]] = 0.3
    for ours, theirs in zip(
        full_gradient(stacked, datafit, coef, np.zeros(3), summary.center),
        full_gradient(copy, datafit, coef, np.zeros(3), summary.center),
        strict=True,
    ):
        np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol)


def test_a_path_on_stacked_rows_solves_the_same_problem_as_on_the_copy():
    X, y = _data(n=80, d=40)
    rows = np.r_[0:30, 50:80]
    _, datafit = make_datafit(y[rows], None, None)
    groups = GroupStructure(np.arange(40), np.ones(40))
    settings = SolverSettings(tol=1e-8, max_iter=20_000)
    copy = np.ascontiguousarray(X[rows])
    top = alpha_max(copy, datafit, groups, True)
    assert alpha_max(StackedRows.of(X, rows), datafit, groups, True) == pytest.approx(top)
    alphas = [0.5 * top, 0.1 * top]
    ours = list(group_lasso_path(StackedRows.of(X, rows), datafit, groups, alphas, settings))
    theirs = list(group_lasso_path(copy, datafit, groups, alphas, settings))
    for a, b in zip(ours, theirs, strict=True):
        assert a.converged
        assert b.converged
        assert a.objective == pytest.approx(b.objective, rel=1e-9)
        np.testing.assert_allclose(a.coef, b.coef, atol=1e-5)


def test_fold_order_makes_every_validation_set_a_block_and_training_rows_two_runs():
    y = np.random.default_rng(0).integers(0, 3, 53)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(y[:, None], y))
    by_fold = FoldOrder.of(folds, 53)
    assert by_fold is not None
    for (train, test), (new_train, new_test) in zip(folds, by_fold.folds, strict=True):
        np.testing.assert_array_equal(by_fold.order[new_test], test)  # same rows, same order
        np.testing.assert_array_equal(np.sort(by_fold.order[new_train]), np.sort(train))
        assert np.all(np.diff(new_test) == 1)
        assert len(StackedRows.of(np.zeros((53, 2)), new_train).blocks) <= 2


def test_fold_order_moves_rows_and_restores_them_in_place():
    folds = list(KFold(4, shuffle=True, random_state=3).split(np.zeros((30, 1))))
    by_fold = FoldOrder.of(folds, 30)
    X = np.arange(90.0).reshape(30, 3)
    moved = by_fold.apply_in_place(X.copy())
    np.testing.assert_array_equal(moved, X[by_fold.order])  # rows moved, not computed
    restored = by_fold.restore_in_place(moved)
    assert restored is moved
    np.testing.assert_array_equal(restored, X)


@pytest.mark.parametrize(
    "folds",
    [
        list(ShuffleSplit(3, test_size=0.2, random_state=0).split(np.zeros((20, 1)))),
        [(np.arange(5, 20), np.arange(0, 5)), (np.arange(0, 15), np.arange(15, 20))],
        [(np.arange(12, 20), np.arange(0, 10)), (np.arange(0, 10), np.arange(10, 20))],
    ],
    ids=["shuffle-split", "not-a-partition", "training-rows-missing"],
)
def test_no_fold_order_when_validation_sets_do_not_partition_the_rows(folds):
    assert FoldOrder.of(folds, 20) is None
