"""Tests of the search core: the grids, the tie rule, the convergence count, cv_results."""

import warnings

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skh2t.linear_model._search import (
    ConvergenceCount,
    cv_results,
    first_best,
    fraction_grid,
    integer_grid,
    positive_grid,
    simplicity_order,
)


@pytest.mark.parametrize(
    "values", [[], [0.0], [1.5], [-0.1], [0.2, 0.2], [np.nan], 0.5, "0.5", [[0.1]], ["a"]]
)
def test_fraction_grid_refuses_what_is_not_distinct_fractions(values):
    with pytest.raises(
        ValueError, match=r"keep_fractions must be .* distinct fractions in \(0, 1\]"
    ):
        fraction_grid(values, "keep_fractions")


def test_fraction_grid_sorts_and_accepts_one():
    assert fraction_grid((1, 0.25), "keep_fractions") == [0.25, 1.0]


@pytest.mark.parametrize(
    "values", [[], [1.0], [2, 2], [True, 2], [False], [0], ["3"], 3, [[1, 2]], np.array([1.0])]
)
def test_integer_grid_refuses_what_is_not_distinct_positive_integers(values):
    with pytest.raises(ValueError, match=r"target_sizes must be .* distinct positive integers"):
        integer_grid(values, "target_sizes")


def test_integer_grid_names_its_minimum():
    assert integer_grid(np.array([3, 0]), "probe_epochs_grid", minimum=0) == [0, 3]
    with pytest.raises(ValueError, match="distinct integers >= 0; got \\(0, -1\\)"):
        integer_grid((0, -1), "probe_epochs_grid", minimum=0)


@pytest.mark.parametrize("values", [[], [0.0], [-1.0], [np.inf], [np.nan], 1.0, ["x"], [[1.0]]])
def test_positive_grid_refuses_what_is_not_finite_and_positive(values):
    with pytest.raises(ValueError, match="Cs must be a non-empty 1-D list of finite numbers > 0"):
        positive_grid(values, "Cs")


def test_positive_grid_sorts():
    assert positive_grid(np.array([10, 0.5]), "Cs") == [0.5, 10.0]


def test_first_best_breaks_ties_by_the_simplicity_order():
    scores = np.array([0.5, 0.9, 0.9, 0.9])
    assert first_best(scores, [0, 1, 2, 3]) == 1
    assert first_best(scores, [3, 2, 1, 0]) == 3
    assert first_best(scores, [0, 2, 3, 1]) == 2


def test_first_best_never_picks_nan_unless_all_are():
    assert first_best(np.array([np.nan, 0.1, np.nan]), [0, 2, 1]) == 1
    assert first_best(np.array([np.nan, np.nan]), [1, 0]) == 1


def test_simplicity_order_sorts_by_the_axes_in_importance():
    shape = (2, 3, 2)
    order = simplicity_order(shape, [(2, True), (0, False), (1, True)])
    points = [np.unravel_index(i, shape) for i in order]
    assert points == sorted(points, key=lambda p: (p[2], -p[0], p[1]))
    assert sorted(order.tolist()) == list(range(12))


def test_convergence_count_counts_hides_and_lets_other_warnings_through():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with ConvergenceCount() as count:
            warnings.warn("first", ConvergenceWarning, stacklevel=2)
            warnings.warn("second", ConvergenceWarning, stacklevel=2)
            warnings.warn("other", UserWarning, stacklevel=2)
    assert count.n == 2
    assert [(w.category, str(w.message)) for w in seen] == [(UserWarning, "other")]


def test_convergence_count_counts_even_under_an_ignore_filter():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ConvergenceCount() as count:
            warnings.warn("again", ConvergenceWarning, stacklevel=2)
            warnings.warn("again", ConvergenceWarning, stacklevel=2)
    assert count.n == 2


@pytest.fixture(scope="module")
def grid():
    """GridSearchCV over DummyClassifier strategies: two of them always score the same."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    y = np.repeat([0, 1, 1], 10)
    strategies = ["stratified", "most_frequent", "prior", "uniform", "constant"]
    search = GridSearchCV(
        DummyClassifier(random_state=0, constant=0),
        {"strategy": strategies},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    )
    return search.fit(X, y)


def test_cv_results_match_grid_search_cv(grid):
    theirs = grid.cv_results_
    n_splits = grid.n_splits_
    scores = np.stack([theirs[f"split{k}_test_score"] for k in range(n_splits)], axis=1)
    ours = cv_results(theirs["params"], scores)
    assert theirs["mean_test_score"][1] == theirs["mean_test_score"][2]  # a tie
    np.testing.assert_array_equal(ours["rank_test_score"], theirs["rank_test_score"])
    assert ours["rank_test_score"].dtype == theirs["rank_test_score"].dtype
    np.testing.assert_allclose(ours["mean_test_score"], theirs["mean_test_score"], rtol=1e-15)
    np.testing.assert_allclose(ours["std_test_score"], theirs["std_test_score"], rtol=1e-15)
    assert ours["params"] == theirs["params"]
    assert ours["param_strategy"].tolist() == theirs["param_strategy"].tolist()
    assert set(ours) == set(theirs)


def test_cv_results_equal_means_share_the_smallest_rank():
    scores = np.array([[0.5, 0.6], [0.9, 0.9], [0.6, 0.6], [0.8, 1.0], [np.nan, 1.0]])
    results = cv_results([{"i": i} for i in range(5)], scores)
    assert results["rank_test_score"].tolist() == [4, 1, 3, 1, 5]
    np.testing.assert_array_equal(results["mean_fit_time"], 0.0)
