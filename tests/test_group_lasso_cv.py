"""GroupLassoClassifierCV: the warm path scores what cold fits score, and picks the best."""

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_info, threadpool_limits

from skh2t import GroupLassoClassifier, GroupLassoClassifierCV
from skh2t.linear_model._group_lasso import Problem
from skh2t.linear_model._path import PenalisedFit, SolverSettings, group_lasso_path, predicted_start
from tests.rounding import assert_same_support


@parametrize_with_checks(
    [
        GroupLassoClassifierCV(alphas=3, cv=3, keep_fractions=[1.0]),
        GroupLassoClassifierCV(alpha_fractions=[0.5, 0.1], cv=3, keep_fractions=[0.5, 1.0]),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600] / 16.0, y[:600]


@pytest.mark.slow
def test_warm_path_scores_equal_grid_search_over_cold_fits(digits):
    X, y = digits
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    params = {"tol": 1e-7, "max_iter": 20_000}
    cv = GroupLassoClassifierCV(alphas=4, keep_fractions=[0.2, 0.5], cv=folds, **params)
    cv.fit(X, y)
    grid = GridSearchCV(
        GroupLassoClassifier(**params),
        {"alpha": list(cv.alphas_), "keep_fraction": [0.2, 0.5]},
        cv=folds,
    ).fit(X, y)
    # GridSearchCV enumerates alpha (sorted as given) then keep_fraction.
    grid_scores = np.stack([grid.cv_results_[f"split{k}_test_score"] for k in range(3)]).reshape(
        3, 4, 2
    )
    np.testing.assert_allclose(cv.scores_, grid_scores)
    assert cv.alpha_ == grid.best_params_["alpha"]
    assert cv.keep_fraction_ == grid.best_params_["keep_fraction"]
    np.testing.assert_allclose(cv.best_score_, grid.best_score_)


@pytest.mark.slow
def test_scores_match_grid_search_at_the_default_tolerance(digits):
    """Warm and cold solves differ within tol: the scores may differ by a sample or two."""
    X, y = digits
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    cv = GroupLassoClassifierCV(alphas=5, keep_fractions=[0.2, 0.5], cv=folds).fit(X, y)
    grid = GridSearchCV(
        GroupLassoClassifier(), {"alpha": list(cv.alphas_), "keep_fraction": [0.2, 0.5]}, cv=folds
    ).fit(X, y)
    grid_scores = np.stack([grid.cv_results_[f"split{k}_test_score"] for k in range(3)])
    np.testing.assert_allclose(cv.scores_, grid_scores.reshape(3, 5, 2), atol=0.01)
    assert (cv.alpha_, cv.keep_fraction_) == (
        grid.best_params_["alpha"],
        grid.best_params_["keep_fraction"],
    )


@pytest.mark.slow
def test_refit_is_the_classifier_at_the_chosen_pair(digits):
    X, y = digits
    tight = {"tol": 1e-7, "max_iter": 20_000}
    cv = GroupLassoClassifierCV(alphas=3, keep_fractions=[0.25, 1.0], cv=3, **tight).fit(X, y)
    direct = GroupLassoClassifier(alpha=cv.alpha_, keep_fraction=cv.keep_fraction_, **tight)
    direct.fit(X, y)
    np.testing.assert_allclose(cv.coef_, direct.coef_, atol=1e-6)
    np.testing.assert_array_equal(cv.get_support(), direct.get_support())
    np.testing.assert_array_equal(cv.predict(X), direct.predict(X))
    best = np.unravel_index(np.argmax(cv.mean_scores_), cv.mean_scores_.shape)
    assert cv.alpha_ == cv.alphas_[best[0]]


def _path_solutions(X, y, alphas):
    """Tight solutions at decreasing alphas, each solved from zero."""
    problem = Problem.of(GroupLassoClassifier().get_params(), X.shape[1], y, None)
    settings = SolverSettings(tol=1e-9, max_iter=50_000)
    return [
        next(group_lasso_path(X, problem.datafit, problem.groups, [alpha], settings))
        for alpha in alphas
    ]


@pytest.mark.slow
def test_predicted_start_is_closer_to_the_solution_than_the_last_one(digits):
    X, y = digits
    alphas = GroupLassoClassifier().alpha_max(X, y) * np.geomspace(0.5, 0.05, 4)
    solved = _path_solutions(X, y, alphas)
    for k in (2, 3):
        predicted, _ = predicted_start(solved[k - 2 : k], alphas[k])
        solution, last = solved[k].coef, solved[k - 1].coef
        assert np.linalg.norm(predicted - solution) < 0.8 * np.linalg.norm(last - solution)


def _solution(alpha, coef, intercept):
    return PenalisedFit(
        alpha, coef, intercept, np.zeros(len(coef)), 0, 0, True, False, False, 0.0, 0.0, 0.0
    )


def test_predicted_start_extrapolates_in_log_alpha_only_rows_nonzero_twice():
    older = np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    last = np.array([[2.0, 3.0], [1.0, 1.0], [0.0, 0.0]])
    solved = [_solution(0.4, older, np.zeros(2)), _solution(0.2, last, np.ones(2))]
    coef, intercept = predicted_start(solved, 0.05)  # two log-steps ahead
    np.testing.assert_allclose(coef, [[4.0, 5.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(intercept, [3.0, 3.0])
    for degenerate in ([solved[1]], [_solution(0.0, older, np.zeros(2)), solved[1]]):
        coef, intercept = predicted_start(degenerate, 0.1)  # the last solution itself
        np.testing.assert_array_equal(coef, last)
    coef, _ = predicted_start(solved, 0.0)
    np.testing.assert_array_equal(coef, last)


def test_alpha_grid_is_geometric_from_alpha_max(digits):
    X, y = digits
    cv = GroupLassoClassifierCV(alphas=5, eps=1e-3, cv=2).fit(X, y)
    alpha_max = GroupLassoClassifier().alpha_max(X, y)
    np.testing.assert_allclose(cv.alphas_, alpha_max * np.geomspace(1, 1e-3, 5))
    assert cv.keep_fractions_ == [None]
    explicit = GroupLassoClassifierCV(alphas=[0.01, 0.1], cv=2).fit(X, y)
    np.testing.assert_array_equal(explicit.alphas_, [0.1, 0.01])


def test_parallel_folds_match_sequential(digits):
    X, y = digits
    sequential = GroupLassoClassifierCV(alphas=3, cv=3, n_jobs=1).fit(X, y)
    parallel = GroupLassoClassifierCV(alphas=3, cv=3, n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(sequential.scores_, parallel.scores_)
    np.testing.assert_allclose(sequential.coef_, parallel.coef_)


def single_threaded_log_loss(estimator, X, y, sample_weight=None):
    """Minus the log-loss, which shows any last-bit difference (an accuracy hides them until
    a near-tie flips a prediction); fails unless BLAS runs on one thread."""
    threads = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    assert threads == {1}, f"a fold ran BLAS with {threads} threads"
    proba = estimator.predict_proba(X)
    return -log_loss(y, proba, sample_weight=sample_weight, labels=estimator.classes_)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fold_scores_are_the_same_floats_whatever_n_jobs(digits, dtype):
    """Every fold runs BLAS on one thread, in this process (here with two BLAS threads
    around it, as on a multi-core machine) and in a worker alike: the same floats."""
    X, y = digits
    params = {"alphas": 3, "keep_fractions": [0.3, 1.0], "cv": 3}
    with threadpool_limits(limits=2, user_api="blas"):
        sequential = GroupLassoClassifierCV(
            n_jobs=1, scoring=single_threaded_log_loss, **params
        ).fit(X.astype(dtype), y)
    parallel = GroupLassoClassifierCV(n_jobs=2, scoring=single_threaded_log_loss, **params)
    parallel.fit(X.astype(dtype), y)
    np.testing.assert_array_equal(sequential.scores_, parallel.scores_)
    assert sequential.alpha_ == parallel.alpha_


def test_a_scoring_callable_with_three_arguments_works_without_sample_weight():
    X, y = load_iris(return_X_y=True)
    cv = GroupLassoClassifierCV(scoring=lambda est, X, y: est.score(X, y), alphas=2, cv=2)
    reference = GroupLassoClassifierCV(scoring="accuracy", alphas=2, cv=2)
    np.testing.assert_array_equal(cv.fit(X, y).scores_, reference.fit(X, y).scores_)
    weights = np.where(y == 0, 3.0, 1.0)
    weighted = GroupLassoClassifierCV(alphas=2, cv=2).fit(X, y, sample_weight=weights)
    assert not np.array_equal(weighted.scores_, cv.scores_)


def test_groups_from_feature_name_prefixes():
    pd = pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True)
    columns = ["sepal__length", "sepal__width", "petal__length", "petal__width"]
    cv = GroupLassoClassifierCV(groups="feature_name_prefix", alphas=3, cv=3)
    cv.fit(pd.DataFrame(X, columns=columns), y)
    np.testing.assert_array_equal(cv.group_labels_, ["petal", "sepal"])
    nonzero = np.any(cv.coef_ != 0, axis=0)
    assert nonzero[0] == nonzero[1]
    assert nonzero[2] == nonzero[3]


def test_renormalize_groups_from_feature_name_prefixes():
    pd = pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True)
    columns = ["sepal__length", "sepal__width", "petal__length", "petal__width"]
    params = {"alphas": 3, "cv": 3, "keep_fractions": [0.5]}
    by_name = GroupLassoClassifierCV(renormalize_groups="feature_name_prefix", **params)
    by_name.fit(pd.DataFrame(X, columns=columns), y)
    explicit = GroupLassoClassifierCV(renormalize_groups=["s", "s", "p", "p"], **params).fit(X, y)
    np.testing.assert_array_equal(by_name.renormalize_index_, [1, 1, 0, 0])
    np.testing.assert_array_equal(by_name.scores_, explicit.scores_)
    with pytest.raises(ValueError, match="renormalize_groups='feature_name_prefix' needs"):
        GroupLassoClassifierCV(renormalize_groups="feature_name_prefix", **params).fit(X, y)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alphas": [-1.0, 0.1]}, "alphas"),
        ({"alphas": 0}, "alphas"),
        ({"alphas": [np.nan]}, "alphas must be .* finite alphas >= 0"),
        ({"alphas": [np.inf, 0.1]}, "alphas must be .* finite alphas >= 0"),
        ({"alpha_fractions": [np.nan]}, "alpha_fractions must be"),
        ({"alpha_fractions": [0.1, np.inf]}, "alpha_fractions must be"),
        ({"keep_fractions": [np.nan]}, "keep_fractions must be"),
        ({"keep_fractions": [-np.inf]}, "keep_fractions must be"),
        ({"keep_fractions": [0.0, 0.5]}, "keep_fractions"),
        ({"keep_fractions": [1.5]}, "keep_fractions"),
        ({"eps": 2.0}, "eps"),
        ({"scoring": "no-such-score"}, "scoring"),
    ],
)
def test_bad_parameters_fail_clearly(params, message):
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=message):
        GroupLassoClassifierCV(cv=2, **params).fit(X, y)


def test_a_memmap_trains_its_folds_by_weight_with_the_same_results(digits, tmp_path):
    """On a memmap the folds train on all rows with the validation rows' weights at zero (no
    copy of X): the same problem as on the training rows, so the same scores and choice."""
    import skh2t.linear_model._fold_path as fold_path

    X, y = digits
    on_disk = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=X.dtype, shape=X.shape)
    on_disk[:] = X
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    params = {"alphas": 3, "keep_fractions": [0.2, 0.5], "cv": folds, "tol": 1e-8}
    in_memory = GroupLassoClassifierCV(**params, max_iter=50_000).fit(X, y)
    trained_on = []
    rows_of = fold_path._training_rows

    def spy(X, y, sample_weight, train, test, by_weight):
        rows = rows_of(X, y, sample_weight, train, test, by_weight)
        trained_on.append((rows[0].shape[0], int(np.count_nonzero(rows[2]))))
        return rows

    fold_path._training_rows = spy
    try:
        streamed = GroupLassoClassifierCV(**params, max_iter=50_000).fit(on_disk, y)
    finally:
        fold_path._training_rows = rows_of
    assert trained_on == [(len(y), len(train)) for train, _ in folds]  # all rows, by weight
    np.testing.assert_allclose(streamed.scores_, in_memory.scores_, atol=1 / 200)
    assert (streamed.alpha_fraction_, streamed.keep_fraction_) == (
        in_memory.alpha_fraction_,
        in_memory.keep_fraction_,
    )
    np.testing.assert_allclose(streamed.alphas_, in_memory.alphas_, rtol=1e-10)
    # The final refit on the memmap streams it (out of core), the one in memory does not: the
    # same problem solved along other code paths, so the same support but for near-ties.
    assert_same_support(streamed, in_memory)
