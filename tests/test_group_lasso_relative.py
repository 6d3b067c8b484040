"""Relative penalty strengths (alpha_fraction), the official re-normalised refit, one tie rule."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import check_scoring
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skh2t import GroupLassoClassifier, GroupLassoClassifierCV
from skh2t._prediction import renormalize_columns
from skh2t.linear_model._fold_path import PathGrid, score_path_on_fold
from skh2t.linear_model._search import first_best, simplicity_order


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:500] / 16.0, y[:500]


@pytest.fixture(scope="module")
def taps():
    """Features in 4 'taps' of 16 columns, each L2-normalised per row, as the transformer does."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:400] / 16.0, y[:400]
    groups = np.repeat(np.arange(4), 16)
    for g in range(4):
        part = X[:, groups == g]
        X[:, groups == g] = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-30)
    return X, y, groups


# --- alpha_fraction --------------------------------------------------------------------------


def test_alpha_fraction_is_relative_to_the_data_being_fitted(digits):
    X, y = digits
    relative = GroupLassoClassifier(alpha_fraction=0.1, keep_fraction=0.25).fit(X, y)
    alpha_max = GroupLassoClassifier().alpha_max(X, y)
    assert relative.alpha_max_ == pytest.approx(alpha_max, rel=1e-12)
    assert relative.alpha_ == pytest.approx(0.1 * alpha_max, rel=1e-12)
    absolute = GroupLassoClassifier(alpha=relative.alpha_, keep_fraction=0.25).fit(X, y)
    assert absolute.alpha_ == absolute.alpha
    assert not hasattr(absolute, "alpha_max_")
    np.testing.assert_array_equal(relative.coef_, absolute.coef_)
    half = GroupLassoClassifier(alpha_fraction=0.1).fit(X[:250], y[:250])
    assert half.alpha_ == pytest.approx(0.1 * GroupLassoClassifier().alpha_max(X[:250], y[:250]))
    assert half.alpha_ != pytest.approx(relative.alpha_)


def test_refitting_with_an_absolute_alpha_drops_the_old_alpha_max(digits):
    X, y = digits
    clf = GroupLassoClassifier(alpha_fraction=0.2).fit(X, y)
    assert hasattr(clf, "alpha_max_")
    clf.set_params(alpha_fraction=None, alpha=1e-3).fit(X, y)
    assert not hasattr(clf, "alpha_max_")
    assert clf.alpha_ == 1e-3
    cv = GroupLassoClassifierCV(alpha_fractions=[0.3], cv=2).fit(X, y)
    assert hasattr(cv, "alpha_max_")
    cv.set_params(alpha_fractions=None, alphas=[1e-2]).fit(X, y)
    assert not hasattr(cv, "alpha_max_")
    assert cv.alpha_fraction_ is None


def test_alpha_fraction_one_gives_the_all_zero_model(digits):
    X, y = digits
    clf = GroupLassoClassifier(alpha_fraction=1.0).fit(X, y)
    assert not clf.coef_.any()
    with pytest.raises(ValueError, match="alpha_fraction"):
        GroupLassoClassifier(alpha_fraction=1.5).fit(X, y)


def test_grid_search_over_alpha_fraction_is_relative_per_fold(digits):
    X, y = digits
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    grid = GridSearchCV(
        GroupLassoClassifier(), {"alpha_fraction": [0.3, 0.1]}, cv=folds, refit=False
    ).fit(X, y)
    for k, (train, valid) in enumerate(folds):
        for i, fraction in enumerate([0.3, 0.1]):
            alpha = fraction * GroupLassoClassifier().alpha_max(X[train], y[train])
            clf = GroupLassoClassifier(alpha=alpha).fit(X[train], y[train])
            assert grid.cv_results_[f"split{k}_test_score"][i] == clf.score(X[valid], y[valid])


@pytest.mark.slow
def test_cv_with_alpha_fractions_scores_cold_fits_at_each_folds_fraction(digits):
    X, y = digits
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    tight = {"tol": 1e-7, "max_iter": 20_000}
    cv = GroupLassoClassifierCV(
        alpha_fractions=[0.05, 0.3], keep_fractions=[0.2, 0.5], cv=folds, **tight
    ).fit(X, y)
    np.testing.assert_array_equal(cv.alpha_fractions_, [0.3, 0.05])  # the path runs downwards
    for k, (train, valid) in enumerate(folds):
        for i, fraction in enumerate(cv.alpha_fractions_):
            for j, keep in enumerate(cv.keep_fractions_):
                cold = GroupLassoClassifier(alpha_fraction=fraction, keep_fraction=keep, **tight)
                cold.fit(X[train], y[train])
                assert cv.scores_[k, i, j] == cold.score(X[valid], y[valid])
    final = GroupLassoClassifier(
        alpha_fraction=cv.alpha_fraction_, keep_fraction=cv.keep_fraction_, **tight
    ).fit(X, y)
    assert cv.alpha_ == pytest.approx(final.alpha_)
    np.testing.assert_allclose(cv.alphas_, cv.alpha_fractions_ * final.alpha_max_)
    np.testing.assert_array_equal(cv.coef_, final.coef_)


# --- the official refit ----------------------------------------------------------------------


def official_refit_features(X, support, groups):
    """head2toe/models/finetune.py, _process_embeddings: per tap, gather the kept columns and
    divide them by their L2 norm (zero-aware); taps with no kept column drop out."""
    blocks = []
    for g in np.unique(groups):
        kept = np.flatnonzero(support & (groups == g))
        if kept.size == 0:
            continue
        block = X[:, kept]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        blocks.append(np.where(norms == 0, 0.0, block / np.where(norms == 0, 1.0, norms)))
    return np.concatenate(blocks, axis=1)


def test_renormalize_columns_matches_the_official_definition(taps):
    X, _, groups = taps
    support = np.zeros(X.shape[1], dtype=bool)
    support[[0, 1, 2, 20, 21, 40]] = True  # tap 3 keeps nothing
    X[5, :3] = 0.0  # a row whose kept part of tap 0 is all zero stays zero
    kept = np.flatnonzero(support)
    ours = renormalize_columns(X[:, kept].copy(), groups[kept])
    np.testing.assert_allclose(ours, official_refit_features(X, support, groups), rtol=1e-12)
    assert not ours[5, :3].any()


def test_renormalised_refit_is_a_ridge_softmax_on_the_official_features(taps):
    X, y, groups = taps
    clf = GroupLassoClassifier(
        alpha_fraction=0.05, keep_fraction=0.1, renormalize_groups=groups, tol=1e-8, refit_l2=1e-2
    ).fit(X, y)
    support = clf.get_support()
    Z = official_refit_features(X, support, groups)
    # refit_l2 / 2 * ||W||^2 + mean loss is LogisticRegression's objective with C = 1 / (n l2).
    reference = LogisticRegression(C=1 / (len(y) * 1e-2), tol=1e-10, max_iter=10_000).fit(Z, y)
    np.testing.assert_allclose(clf.coef_[:, support], reference.coef_, atol=1e-4)
    assert not clf.coef_[:, ~support].any()
    # Intercepts are defined up to a constant shared by the classes: compare probabilities.
    np.testing.assert_allclose(clf.predict_proba(X), reference.predict_proba(Z), atol=1e-5)
    assert np.array_equal(clf.renormalize_index_, groups)
    plain = GroupLassoClassifier(alpha_fraction=0.05, keep_fraction=0.1, tol=1e-8).fit(X, y)
    assert plain.renormalize_index_ is None
    np.testing.assert_array_equal(plain.get_support(), support)  # the selection is the same


def test_renormalize_groups_from_feature_names(taps):
    pd = pytest.importorskip("pandas")
    X, y, groups = taps
    frame = pd.DataFrame(X, columns=[f"tap{g}__{i}" for i, g in enumerate(groups)])
    named = GroupLassoClassifier(
        alpha_fraction=0.05, keep_fraction=0.1, renormalize_groups="feature_name_prefix"
    ).fit(frame, y)
    direct = GroupLassoClassifier(
        alpha_fraction=0.05, keep_fraction=0.1, renormalize_groups=groups
    ).fit(X, y)
    np.testing.assert_array_equal(named.coef_, direct.coef_)
    with pytest.raises(ValueError, match="renormalize_groups must hold one group label"):
        GroupLassoClassifier(keep_fraction=0.1, renormalize_groups=groups[:10]).fit(X, y)


def test_renormalize_groups_without_selection_changes_nothing(taps):
    X, y, groups = taps
    a = GroupLassoClassifier(alpha_fraction=0.05, renormalize_groups=groups).fit(X, y)
    b = GroupLassoClassifier(alpha_fraction=0.05).fit(X, y)
    assert a.renormalize_index_ is None
    np.testing.assert_array_equal(a.coef_, b.coef_)


def test_cv_path_with_the_official_refit_scores_cold_fits(taps):
    X, y, groups = taps
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(X, y))
    tight = {"tol": 1e-7, "max_iter": 20_000, "renormalize_groups": groups}
    base = GroupLassoClassifier(**tight)
    scorer = check_scoring(base)
    weights = np.ones(len(y))
    grid = PathGrid(np.array([0.2, 0.05]), [0.1, 0.3], relative=True)
    for train, valid in folds:
        scores = score_path_on_fold(
            base.get_params(), X, y, weights, train, valid, grid, scorer
        ).scores
        for i, fraction in enumerate([0.2, 0.05]):
            for j, keep in enumerate([0.1, 0.3]):
                cold = GroupLassoClassifier(alpha_fraction=fraction, keep_fraction=keep, **tight)
                cold.fit(X[train], y[train])
                assert scores[i, j] == cold.score(X[valid], y[valid])


# --- one tie-break rule ----------------------------------------------------------------------


def _head2toe_choice(scores):
    """The grid point skh2t's tie rule picks, in Head2ToeClassifier's simplicity order."""
    order = simplicity_order(scores.shape, [(2, True), (1, True), (0, True)])
    return np.unravel_index(first_best(scores.ravel(), order), scores.shape)


def test_ties_go_to_the_smaller_keep_fraction_then_the_larger_alpha_then_the_first_pooling():
    scores = np.full((2, 3, 2), 0.5)  # (target sizes, alphas decreasing, keep fractions)
    scores[1, 2, 1] = scores[1, 1, 0] = scores[0, 2, 0] = 0.9
    assert _head2toe_choice(scores) == (1, 1, 0)  # keep 0.1, then alpha index 1
    scores[0, 1, 0] = 0.9
    assert _head2toe_choice(scores) == (0, 1, 0)  # same keep and alpha: pooling 0
    scores[1, 0, 1] = 0.95
    assert _head2toe_choice(scores) == (1, 0, 1)  # a better score beats any tie rule
