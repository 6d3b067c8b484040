"""Tests of the linear-probe baselines: the row-space fit, the cross-validation, the last tap."""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_info, threadpool_limits

from skh2t import probes
from skh2t.features import IntermediateFeatureTransformer


@pytest.fixture(scope="module")
def wide():
    """A wide, low-rank-ish classification problem: 60 rows, 400 features, 3 classes."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    centres = rng.normal(size=(3, 400))
    X = (centres[y] + 2 * rng.normal(size=(60, 400))).astype(np.float32)
    return X, y


def test_gram_matrix_in_blocks(monkeypatch):
    monkeypatch.setattr(probes, "_GRAM_BLOCK", 7)
    X = np.random.default_rng(1).normal(size=(5, 30)).astype(np.float32)
    assert np.allclose(probes.gram_matrix(X), X.astype(float) @ X.T.astype(float))


@pytest.mark.parametrize("C", [0.1, 10.0])
def test_row_space_probe_is_the_probe_on_all_features(wide, C):
    X, y = wide
    head, not_converged = probes._fit_head(X, y, C, max_iter=5000)
    assert not_converged == 0
    direct = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(X.astype(float), y)
    reduced = LogisticRegression(C=C, max_iter=5000, tol=1e-10)
    space = probes._RowSpace.from_gram(probes.gram_matrix(X))
    reduced.fit(space.Z, y)
    coef = reduced.coef_ @ space.basis.T @ X.astype(float)
    assert np.allclose(coef, direct.coef_, atol=1e-5 * np.abs(direct.coef_).max())
    assert np.allclose(reduced.intercept_, direct.intercept_, atol=1e-5)
    assert np.array_equal(head.predict(X), direct.predict(X))


def test_fold_scores_match_fold_by_fold_fits(wide):
    X, y = wide
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    gram = probes.gram_matrix(X)
    for train, valid in folds:
        scores = probes._fold_scores(gram, y, train, valid, [0.01, 1.0], 1000).scores
        for i, C in enumerate([0.01, 1.0]):
            model = LogisticRegression(C=C, max_iter=1000).fit(X[train], y[train])
            assert scores[i] == pytest.approx(model.score(X[valid], y[valid]), abs=1 / 20)


def test_linear_head_binary_and_columns():
    head = probes.LinearHead(
        np.array([[1.0, -1.0]]), np.array([0.0]), np.array(["no", "yes"]), np.array([0, 2])
    )
    X = np.array([[2.0, 9.0, 1.0], [0.0, 9.0, 3.0]])
    assert head.predict(X).tolist() == ["yes", "no"]
    assert head.decision_function(X).tolist() == [1.0, -3.0]
    assert head.n_features == 2


def test_row_space_of_all_zero_features():
    space = probes._RowSpace.from_gram(np.zeros((4, 4)))
    assert space.Z.shape == (4, 1)
    assert not space.Z.any()


def test_l2_probe_cv_searches_matrices_and_Cs_and_refits_the_best(wide):
    X, y = wide
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    features = {"all": X, "noise": np.random.default_rng(5).normal(size=X.shape)}
    search = probes.l2_probe_cv(features, y, folds, [10.0, 0.01])
    assert search.Cs == [0.01, 10.0]  # increasing: the strongest penalty first
    assert search.scores.shape == (2, 2, 3)
    for i, key in enumerate(features):
        gram = probes.gram_matrix(features[key])
        for j, (train, valid) in enumerate(folds):
            expected = probes._fold_scores(gram, y, train, valid, search.Cs, 1000).scores
            assert np.array_equal(search.scores[i, :, j], expected)
    assert search.best_key == "all"
    mean = search.scores.mean(axis=2)
    assert search.best_score == mean.max()
    reference, _ = probes._fit_head(X, y, search.best_C)
    assert np.allclose(search.head.coef, reference.coef)


def test_l2_probe_cv_ties_go_to_the_smaller_C_then_the_earlier_matrix(wide):
    X, y = wide
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    # Two copies of one matrix score the same at every C: the first matrix wins the tie.
    search = probes.l2_probe_cv({"b": X, "a": X.copy()}, y, folds, [1e6, 1e5])
    assert search.best_key == "b"
    if search.scores[0, 0].mean() == search.scores[0, 1].mean():
        assert search.best_C == 1e5


def test_l2_probe_cv_breaks_a_constructed_tie_by_the_smaller_C_then_the_earlier_matrix(
    wide, monkeypatch
):
    """Every fold scores 0.5 except where forced: the tie is exact, whatever the floats."""
    winners = {(1, 0.1), (0, 1.0), (1, 1.0)}  # (matrix, C) that score 1.0

    def fold_scores(gram, y, train, valid, Cs, max_iter):
        key = 0 if gram[0, 0] == first[0, 0] else 1
        scores = np.array([1.0 if (key, C) in winners else 0.5 for C in Cs])
        zeros = np.zeros(len(Cs))
        return probes._FoldResult(scores, zeros, zeros, 0)

    X, y = wide
    first = probes.gram_matrix(X)
    monkeypatch.setattr(probes, "_fold_scores", fold_scores)
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    search = probes.l2_probe_cv({"a": X, "b": 2 * X}, y, folds, [1.0, 0.1, 10.0])
    assert (search.best_key, search.best_C) == ("b", 0.1)  # the smallest C wins first
    winners = {(0, 1.0), (1, 1.0)}
    search = probes.l2_probe_cv({"a": X, "b": 2 * X}, y, folds, [1.0, 0.1, 10.0])
    assert (search.best_key, search.best_C) == ("a", 1.0)  # then the earlier matrix
    ranks = search.cv_results["rank_test_score"]
    assert ranks.tolist() == [3, 1, 3, 3, 1, 3]


@pytest.fixture(scope="module")
def searched(wide):
    X, y = wide
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    features = {64: X, 128: X[:, :50]}
    return probes.l2_probe_cv(features, y, folds, [10.0, 0.01, 1.0])


def test_cv_results_have_the_grid_search_schema(searched):
    results = searched.cv_results
    n_points = 2 * 3
    expected = {
        "mean_fit_time",
        "std_fit_time",
        "mean_score_time",
        "std_score_time",
        "param_features",
        "param_C",
        "params",
        "split0_test_score",
        "split1_test_score",
        "split2_test_score",
        "mean_test_score",
        "std_test_score",
        "rank_test_score",
    }
    assert set(results) == expected
    assert all(len(results[key]) == n_points for key in expected)
    assert results["params"] == [{"features": k, "C": C} for k in (64, 128) for C in searched.Cs]
    assert results["param_C"].tolist() == searched.Cs * 2
    assert results["param_features"].tolist() == [64] * 3 + [128] * 3


def test_cv_results_times_are_positive(searched):
    results = searched.cv_results
    assert np.all(results["mean_fit_time"] > 0)
    assert np.all(results["mean_score_time"] > 0)
    assert np.all(results["std_fit_time"] >= 0)


def test_cv_results_scores_are_the_scores_array(searched):
    results = searched.cv_results
    splits = np.stack([results[f"split{k}_test_score"] for k in range(3)], axis=1)
    # Exact: cv_results holds copies of the same scores.
    np.testing.assert_array_equal(splits, searched.scores.reshape(6, 3))
    # Means and spreads come from reductions over differently laid-out arrays: a tolerance.
    np.testing.assert_allclose(results["mean_test_score"], splits.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(results["std_test_score"], splits.std(axis=1), atol=1e-12)
    np.testing.assert_allclose(
        results["mean_test_score"].reshape(2, 3), searched.scores.mean(axis=2), rtol=1e-12
    )


def test_cv_results_rank_the_chosen_point_first(searched):
    results = searched.cv_results
    chosen = results["params"].index({"features": searched.best_key, "C": searched.best_C})
    assert results["rank_test_score"][chosen] == 1
    assert results["mean_test_score"][chosen] == searched.best_score
    assert searched.best_score == results["mean_test_score"].max()


def test_fold_times_share_the_eigen_decomposition_evenly(wide, monkeypatch):
    ticks = iter(np.arange(100.0))
    monkeypatch.setattr(probes, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    X, y = wide
    train, valid = next(iter(StratifiedKFold(3).split(X, y)))
    fold = probes._fold_scores(probes.gram_matrix(X), y, train, valid, [0.1, 1.0], 1000)
    # 1 s for the eigen-decomposition, 1 s for the validation coordinates, 1 s a fit or score
    # (a fake clock of whole seconds: halves are exact).
    np.testing.assert_array_equal(fold.fit_times, [1.5, 1.5])
    np.testing.assert_array_equal(fold.score_times, [1.5, 1.5])


def test_l2_probe_cv_counts_unconverged_fits_and_hides_their_warnings(wide):
    X, y = wide
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = probes.l2_probe_cv({1: X}, y, folds, [1e4, 1e5], max_iter=1)
    assert search.n_not_converged == 2 * 2 + 1  # every fold fit and the refit
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_l2_probe_cv_reads_only_the_given_columns(wide):
    X, y = wide
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    columns = np.arange(10, 30)
    search = probes.l2_probe_cv({1: X}, y, folds, [1.0], columns=columns)
    assert search.head.n_features == 20
    assert np.array_equal(search.head.columns, columns)
    direct = probes.l2_probe_cv({1: X[:, columns]}, y, folds, [1.0])
    assert np.array_equal(search.head.predict(X), direct.head.predict(X[:, columns]))


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [("test_resnet", "fc:input"), ("test_vit", "head:input"), ("test_efficientnet", None)],
)
def test_last_layer_tap_is_the_classifier_input(backbone, expected):
    images = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    transformer = IntermediateFeatureTransformer(
        backbone=backbone, weights=None, image_size=32, target_size=64
    ).fit(images)
    tap = transformer.taps_[probes.last_layer_tap(transformer)]
    if expected is None:  # EfficientNet: "classifier:input"
        expected = "classifier:input"
    assert tap.name == expected
    assert len(tap.pooled_shape) == 1
    assert np.array_equal(probes.last_layer_columns(transformer), np.arange(tap.start, tap.stop))


@pytest.mark.slow
def test_l2_probe_cv_in_parallel_equals_serial(wide):
    X, y = wide
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    features = {1: X, 2: X[:, :100]}
    serial = probes.l2_probe_cv(features, y, folds, [0.1, 1.0])
    parallel = probes.l2_probe_cv(features, y, folds, [0.1, 1.0], n_jobs=2)
    np.testing.assert_array_equal(serial.scores, parallel.scores)
    assert (serial.best_key, serial.best_C) == (parallel.best_key, parallel.best_C)


@pytest.mark.parametrize("Cs", [[np.nan], [1.0, np.inf], [], [0.0, 1.0], [-1.0], 1.0])
def test_l2_probe_cv_refuses_bad_Cs_before_any_gram_matrix(wide, monkeypatch, Cs):
    def no_gram(X):
        raise AssertionError("gram_matrix called")

    monkeypatch.setattr(probes, "gram_matrix", no_gram)
    X, y = wide
    folds = list(StratifiedKFold(3).split(X, y))
    with pytest.raises(ValueError, match="Cs must be a non-empty 1-D list of finite"):
        probes.l2_probe_cv({"all": X}, y, folds, Cs)


def test_probe_folds_run_blas_on_one_thread_whatever_n_jobs(wide, monkeypatch):
    """So that a fold gives the same floats here and in a worker (eigh and L-BFGS change
    in the last bits with the number of BLAS threads)."""
    threads = []
    fit = LogisticRegression.fit

    def recording_fit(self, *args, **kwargs):
        blas = threadpool_info()
        threads.extend(lib["num_threads"] for lib in blas if lib["user_api"] == "blas")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", recording_fit)
    X, y = wide
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    with threadpool_limits(limits=2, user_api="blas"):
        probes._fold_scores(probes.gram_matrix(X), y, *folds[0], [0.1, 1.0], 1000)
    assert threads
    assert set(threads) == {1}
