"""GroupLassoClassifier as a scikit-learn estimator: conventions, selection, errors."""

import pickle

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skh2t import GroupLassoClassifier, GroupLassoClassifierCV


@parametrize_with_checks(
    [
        GroupLassoClassifier(),
        GroupLassoClassifier(keep_fraction=1.0, alpha=0.01),
        GroupLassoClassifier(class_weight="balanced", refit_l2=0.01, keep_fraction=1.0),
        GroupLassoClassifier(alpha_fraction=0.01, keep_fraction=1.0),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def test_keep_fraction_keeps_the_top_scored_features(digits):
    X, y = digits
    clf = GroupLassoClassifier(alpha=0.001, keep_fraction=0.25).fit(X, y)
    support = clf.get_support()
    assert support.sum() == 16
    assert clf.feature_scores_[support].min() >= clf.feature_scores_[~support].max()
    np.testing.assert_array_equal(clf.get_support(indices=True), np.flatnonzero(support))
    assert not np.any(clf.coef_[:, ~support])
    assert np.all(np.any(clf.coef_[:, support] != 0, axis=0))


def test_refit_is_an_l2_logistic_regression_on_the_kept_features(digits):
    X, y = digits
    clf = GroupLassoClassifier(alpha=0.002, n_features_to_select=20, refit_l2=1e-2, tol=1e-7)
    clf.fit(X, y)
    kept = clf.get_support(indices=True)
    # scikit-learn minimises C * sum(loss) + ||W||^2 / 2: the same problem when C = 1 / (n l2).
    reference = LogisticRegression(C=1 / (len(y) * 1e-2), tol=1e-10, max_iter=10_000)
    reference.fit(X[:, kept], y)
    np.testing.assert_allclose(clf.predict_proba(X), reference.predict_proba(X[:, kept]), atol=1e-5)


def test_selection_ranks_zero_weight_features_by_dual_score(digits):
    X, y = digits
    clf = GroupLassoClassifier(alpha=0.02, keep_fraction=0.75).fit(X, y)
    n_nonzero = np.count_nonzero(clf.feature_scores_)
    support = clf.get_support()
    assert n_nonzero < support.sum() == 48
    assert np.all(support[clf.feature_scores_ > 0])
    completed = support & (clf.feature_scores_ == 0)
    dropped = ~support
    assert clf.dual_scores_[completed].min() >= clf.dual_scores_[dropped].max()
    # At the optimum, groups in the model sit on the dual boundary, the others below it.
    np.testing.assert_allclose(clf.dual_scores_[clf.feature_scores_ > 0], 1.0, atol=1e-3)
    assert clf.dual_scores_[clf.feature_scores_ == 0].max() <= 1.0 + 1e-3


def test_without_selection_the_penalised_fit_is_the_model(digits):
    X, y = digits
    clf = GroupLassoClassifier(alpha=0.005).fit(X, y)
    np.testing.assert_array_equal(clf.coef_, clf.group_lasso_coef_)
    np.testing.assert_array_equal(clf.get_support(), np.any(clf.coef_ != 0, axis=0))
    assert clf.refit_n_iter_ == 0


def test_binary_problems_follow_scikit_learn_shapes():
    X, y = load_iris(return_X_y=True)
    X, y = X[y < 2], np.where(y[y < 2] == 1, "yes", "no")
    clf = GroupLassoClassifier(alpha=0.01).fit(X, y)
    assert clf.coef_.shape == (1, 4)
    assert clf.intercept_.shape == (1,)
    assert clf.decision_function(X).shape == (len(y),)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba)


def test_class_weight_balanced_equals_explicit_sample_weights():
    X, y = load_iris(return_X_y=True)
    X, y = X[:120], y[:120]
    tight = {"alpha": 0.01, "tol": 1e-8, "max_iter": 20_000}
    balanced = GroupLassoClassifier(class_weight="balanced", **tight).fit(X, y)
    weights = (len(y) / (3 * np.bincount(y)))[y]
    explicit = GroupLassoClassifier(**tight).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(balanced.coef_, explicit.coef_)


def test_pipeline_grid_search_and_pickle(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), GroupLassoClassifier(keep_fraction=0.5))
    search = GridSearchCV(pipe, {"grouplassoclassifier__alpha": [1e-3, 1e-2]}, cv=3)
    search.fit(X[:600], y[:600])
    restored = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_array_equal(restored.predict(X), search.best_estimator_.predict(X))
    assert search.best_score_ > 0.85


def test_groups_from_feature_name_prefixes():
    pd = pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True)
    columns = ["sepal__length", "sepal__width", "petal__length", "petal__width"]
    clf = GroupLassoClassifier(groups="feature_name_prefix", alpha=0.05)
    clf.fit(pd.DataFrame(X, columns=columns), y)
    np.testing.assert_array_equal(clf.group_labels_, ["petal", "sepal"])
    explicit = GroupLassoClassifier(groups=["s", "s", "p", "p"], alpha=0.05).fit(X, y)
    np.testing.assert_allclose(clf.coef_, explicit.coef_)
    with pytest.raises(ValueError, match="needs feature names"):
        GroupLassoClassifier(groups="feature_name_prefix").fit(X, y)


def test_verbose_reports_progress(capsys, digits):
    X, y = digits
    GroupLassoClassifier(alpha=0.01, verbose=1).fit(X, y)
    out = capsys.readouterr().out
    assert "relative KKT violation" in out


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": -1.0}, "alpha"),
        ({"keep_fraction": 0.0}, "keep_fraction"),
        ({"keep_fraction": 1.5}, "keep_fraction"),
        ({"n_features_to_select": 0}, "n_features_to_select"),
        ({"keep_fraction": 0.5, "n_features_to_select": 2}, "only one of keep_fraction"),
        ({"n_features_to_select": 100}, "larger than the number of features"),
        ({"groups": [0, 1, 1]}, "one group label per feature"),
        ({"groups": [0, 0, 1, 1], "group_weights": [1.0]}, "one weight per group"),
        ({"groups": [0, 0, 1, 1], "group_weights": [1.0, -2.0]}, "strictly positive"),
        ({"tol": 0.0}, "tol"),
    ],
)
def test_bad_parameters_fail_clearly(params, message):
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=message):
        GroupLassoClassifier(**params).fit(X, y)


@pytest.mark.parametrize(
    ("class_weight", "message"),
    [
        ({0: -2.0}, "Negative, infinite or NaN values in `class_weight`"),
        ({0: np.inf}, "Negative, infinite or NaN values in `class_weight`"),
        ({1: np.nan}, "Negative, infinite or NaN values in `class_weight`"),
        ({0: "heavy"}, "Negative, infinite or NaN values in `class_weight`"),
        ({0: 0.0, 1: 0.0, 2: 0.0}, "no class has any weight"),
        ({0: 0.0, 1: 0.0}, "only one class has any weight: np.int64\\(2\\)"),
        ({5: 2.0}, "not in class_weight"),  # as scikit-learn: a key that is not a class
    ],
)
def test_bad_class_weights_are_refused_before_any_fit(class_weight, message, monkeypatch):
    import skh2t.linear_model._group_lasso_cv

    def no_fit(*args, **kwargs):
        raise AssertionError("a fold was fitted")

    monkeypatch.setattr(skh2t.linear_model._group_lasso_cv, "score_path_on_fold", no_fit)
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=message):
        GroupLassoClassifier(class_weight=class_weight).fit(X, y)
    with pytest.raises(ValueError, match=message):
        GroupLassoClassifierCV(class_weight=class_weight, alphas=[0.1], cv=2).fit(X, y)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            [None] * 4,
            "groups must hold a string or a number as the label of every feature; "
            "feature 0 has None",
        ),
        ([0, 0, object(), 1], "feature 2 has <object"),
        ([1, "a", 1, "a"], "groups mixes strings and numbers \\(e.g. 1 and 'a'\\)"),
        ([1, "1", 2, 2], "groups mixes strings and numbers"),
        ([np.nan, np.nan, 1.0, 1.0], "groups contains NaN or infinity"),
        (np.array([0.5, 0.5, np.inf, 1.0]), "groups contains NaN or infinity"),
        ([0, 1, 1], "one group label per feature: got shape \\(3,\\)"),
        ([[0, 1]] * 4, "one group label per feature: got shape \\(4, 2\\)"),
    ],
)
def test_bad_groups_are_refused_clearly_before_any_fit(groups, message, monkeypatch):
    import skh2t.linear_model._group_lasso_cv
    import skh2t.linear_model._path

    def no_fit(*args, **kwargs):
        raise AssertionError("a fold was fitted")

    monkeypatch.setattr(skh2t.linear_model._group_lasso_cv, "score_path_on_fold", no_fit)
    monkeypatch.setattr(skh2t.linear_model._path, "solve_group_lasso", no_fit)
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=message):
        GroupLassoClassifier(groups=groups).fit(X, y)
    with pytest.raises(ValueError, match=message.replace("groups", "renormalize_groups", 1)):
        GroupLassoClassifier(renormalize_groups=groups, keep_fraction=0.5).fit(X, y)
    with pytest.raises(ValueError, match=message):
        GroupLassoClassifierCV(groups=groups, alphas=[0.1], cv=2).fit(X, y)
    renormalize = {"renormalize_groups": groups, "keep_fractions": [0.5]}
    with pytest.raises(ValueError, match=message.replace("groups", "renormalize_groups", 1)):
        GroupLassoClassifierCV(alphas=[0.1], cv=2, **renormalize).fit(X, y)


def test_group_labels_of_one_kind_are_kept_as_they_are():
    X, y = load_iris(return_X_y=True)
    strings = GroupLassoClassifier(groups=np.array(["b", "a", "b", "a"], dtype=object)).fit(X, y)
    np.testing.assert_array_equal(strings.group_labels_, ["a", "b"])
    numbers = GroupLassoClassifier(groups=[np.int64(2), 1, 2.0, 1]).fit(X, y)
    np.testing.assert_array_equal(numbers.group_labels_, [1, 2])


def test_bad_data_fails_clearly():
    X, y = load_iris(return_X_y=True)
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GroupLassoClassifier().fit(X_nan, y)
    with pytest.raises(ValueError, match="only one class"):
        GroupLassoClassifier().fit(X, np.zeros_like(y))
    with pytest.raises(ValueError, match="Expected 2D array"):
        GroupLassoClassifier().fit(X[:, 0], y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        GroupLassoClassifier().fit(X, y[:-1])
    with pytest.raises(ValueError, match="non-zero"):
        GroupLassoClassifier().fit(X, y, sample_weight=np.zeros(len(y)))
    fitted = GroupLassoClassifier().fit(X, y)
    with pytest.raises(ValueError, match="4 features"):
        fitted.predict(X[:, :3])
