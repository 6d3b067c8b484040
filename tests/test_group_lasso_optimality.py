"""The GroupLassoClassifier solves the problem it claims to solve.

Every check recomputes the objective and its gradient here, independently of
the solver's code, in float64.
"""

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from skh2t import GroupLassoClassifier
from skh2t.linear_model._solver.working_set import constant_columns


def make_problem(n_samples=120, n_features=30, n_classes=3, n_informative=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    coef = np.zeros((n_features, n_classes))
    coef[:n_informative] = rng.standard_normal((n_informative, n_classes)) * 1.5
    logits = X @ coef
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    return X, y


def solver_layout(clf):
    """(n_features, n_classes) coefficients and (n_classes,) intercept, binary made symmetric."""
    coef, intercept = clf.group_lasso_coef_, clf.group_lasso_intercept_
    if coef.shape[0] == 1:
        return np.column_stack([-coef[0] / 2, coef[0] / 2]), np.array(
            [-intercept[0] / 2, intercept[0] / 2]
        )
    return coef.T, intercept


def loss_and_gradient(X, y, coef, intercept, sample_weight=None):
    n_samples, n_classes = X.shape[0], coef.shape[1]
    weight = np.ones(n_samples) if sample_weight is None else np.asarray(sample_weight, float)
    weight = weight / weight.sum()
    logits = X @ coef + intercept
    log_proba = logits - logsumexp(logits, axis=1, keepdims=True)
    one_hot = np.eye(n_classes)[y]
    loss = -np.sum(weight * log_proba[np.arange(n_samples), y])
    residual = weight[:, None] * (np.exp(log_proba) - one_hot)
    return loss, X.T @ residual, residual.sum(axis=0)


def objective(X, y, coef, intercept, alpha, groups, sample_weight=None):
    loss, _, _ = loss_and_gradient(X, y, coef, intercept, sample_weight)
    labels = np.unique(groups)
    penalty = sum(np.sqrt(np.sum(groups == g)) * np.linalg.norm(coef[groups == g]) for g in labels)
    return loss + alpha * penalty


def max_relative_kkt_violation(X, y, coef, intercept, alpha, groups, fit_intercept=True):
    _, grad, grad_intercept = loss_and_gradient(X, y, coef, intercept)
    worst = np.abs(grad_intercept).max() / alpha if fit_intercept else 0.0
    for g in np.unique(groups):
        rows = groups == g
        weight = np.sqrt(rows.sum())
        norm = np.linalg.norm(coef[rows])
        if norm == 0:
            violation = max(np.linalg.norm(grad[rows]) - alpha * weight, 0.0)
        else:
            violation = np.linalg.norm(grad[rows] + alpha * weight * coef[rows] / norm)
        worst = max(worst, violation / (alpha * weight))
    return worst


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_kkt_conditions_hold_at_solution(n_classes, grouped, fit_intercept):
    X, y = make_problem(n_classes=n_classes)
    X += 1.0  # not centred: the intercept matters
    groups = np.repeat(np.arange(10), 3) if grouped else np.arange(X.shape[1])
    clf = GroupLassoClassifier(
        groups=groups if grouped else None,
        fit_intercept=fit_intercept,
        tol=1e-6,
        max_iter=20_000,
    )
    alpha = 0.2 * clf.alpha_max(X, y)
    clf.set_params(alpha=alpha).fit(X, y)
    coef, intercept = solver_layout(clf)
    assert 0 < np.count_nonzero(np.linalg.norm(coef, axis=1)) < X.shape[1]
    if not fit_intercept:
        assert not np.any(intercept)
    kkt = max_relative_kkt_violation(X, y, coef, intercept, alpha, groups, fit_intercept)
    assert kkt <= 1e-5
    assert clf.kkt_violation_ <= 1e-6


def test_alpha_max_is_the_smallest_alpha_with_zero_solution():
    X, y = make_problem()
    clf = GroupLassoClassifier(tol=1e-6)
    alpha_max = clf.alpha_max(X, y)
    at_max = clf.set_params(alpha=alpha_max * 1.0001).fit(X, y)
    assert not np.any(at_max.coef_)
    # The optimal intercept with zero coefficients is the log of the class priors.
    priors = np.bincount(y) / y.size
    np.testing.assert_allclose(
        at_max.intercept_ - at_max.intercept_.mean(), np.log(priors) - np.log(priors).mean()
    )
    just_below = clf.set_params(alpha=alpha_max * 0.98).fit(X, y)
    assert np.count_nonzero(just_below.coef_) > 0


def test_alpha_zero_matches_unpenalised_logistic_regression():
    X, y = make_problem(n_samples=300, n_features=8, n_informative=4)
    ours = GroupLassoClassifier(alpha=0.0, tol=1e-9, max_iter=50_000).fit(X, y)
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), reference.predict_proba(X), atol=1e-6)


@pytest.mark.slow
def test_objective_matches_the_group_lasso_package():
    group_lasso = pytest.importorskip("group_lasso")
    X, y = make_problem(n_samples=200, n_features=20, n_classes=3)
    groups = np.repeat(np.arange(5), 4)
    clf = GroupLassoClassifier(groups=groups, tol=1e-8, max_iter=50_000)
    alpha = 0.1 * clf.alpha_max(X, y)
    ours = clf.set_params(alpha=alpha).fit(X, y)
    reference = group_lasso.LogisticGroupLasso(
        groups=groups,
        group_reg=alpha / 2,
        l1_reg=0.0,
        n_iter=20_000,
        tol=1e-12,
        scale_reg="group_size",
        supress_warning=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.fit(X, y)
    ours_value = objective(X, y, *solver_layout(ours), alpha, groups)
    reference_value = objective(X, y, reference.coef_, reference.intercept_, alpha, groups)
    assert ours_value <= reference_value + 1e-9
    assert reference_value - ours_value <= 1e-4 * ours_value
    np.testing.assert_array_equal(
        np.linalg.norm(ours.coef_.T.reshape(5, -1), axis=1) > 0,
        np.linalg.norm(reference.coef_.reshape(5, -1), axis=1) > 1e-6,
    )


@pytest.mark.slow
def test_objective_matches_a_high_precision_proximal_gradient_solve():
    """Plain (unaccelerated) proximal gradient with the global Lipschitz step, run long."""
    X, y = make_problem(n_samples=80, n_features=12, n_classes=3)
    groups = np.arange(12)
    clf = GroupLassoClassifier(tol=1e-8, max_iter=50_000)
    alpha = 0.15 * clf.alpha_max(X, y)
    ours = clf.set_params(alpha=alpha).fit(X, y)
    lipschitz = 0.5 * np.linalg.norm(np.column_stack([X, np.ones(len(X))]), 2) ** 2 / len(X)
    coef, intercept = np.zeros((12, 3)), np.zeros(3)
    for _ in range(20_000):
        _, grad, grad_intercept = loss_and_gradient(X, y, coef, intercept)
        coef = coef - grad / lipschitz
        intercept = intercept - grad_intercept / lipschitz
        norms = np.linalg.norm(coef, axis=1, keepdims=True)
        coef *= np.maximum(0, 1 - alpha / lipschitz / np.maximum(norms, 1e-300))
    reference_value = objective(X, y, coef, intercept, alpha, groups)
    ours_value = objective(X, y, *solver_layout(ours), alpha, groups)
    assert abs(ours_value - reference_value) <= 1e-9 * reference_value
    np.testing.assert_allclose(solver_layout(ours)[0], coef, atol=1e-5)


def test_per_layer_groups_are_zeroed_as_wholes():
    X, y = make_problem(n_samples=150, n_features=40, n_informative=6)
    groups = np.repeat([f"layer{i}" for i in range(8)], 5)
    clf = GroupLassoClassifier(groups=groups, tol=1e-7, max_iter=20_000)
    clf.set_params(alpha=0.3 * clf.alpha_max(X, y)).fit(X, y)
    nonzero_rows = np.any(clf.coef_ != 0, axis=0).reshape(8, 5)
    assert nonzero_rows.any()
    assert not nonzero_rows.all()
    assert np.all(nonzero_rows.all(axis=1) | ~nonzero_rows.any(axis=1))
    np.testing.assert_array_equal(clf.group_labels_, np.unique(groups))


def test_integer_sample_weights_equal_repeated_rows():
    X, y = make_problem(n_samples=60, n_features=10)
    weights = np.random.default_rng(1).integers(0, 4, size=len(y))
    params = {"alpha": 0.01, "tol": 1e-7, "max_iter": 50_000}
    weighted = GroupLassoClassifier(**params).fit(X, y, sample_weight=weights)
    repeated = GroupLassoClassifier(**params).fit(X.repeat(weights, 0), y.repeat(weights))
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-7)
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), atol=1e-8)


def test_float32_data_reaches_the_float64_solution():
    X, y = make_problem()
    params = {"alpha": 0.02, "tol": 1e-6, "max_iter": 20_000}
    single = GroupLassoClassifier(**params).fit(X.astype(np.float32), y)
    double = GroupLassoClassifier(**params).fit(X, y)
    np.testing.assert_allclose(single.coef_, double.coef_, atol=1e-4)
    assert single.predict_proba(X.astype(np.float32)).dtype == np.float64


def test_warm_start_reuses_the_previous_solution():
    X, y = make_problem(n_features=60)
    clf = GroupLassoClassifier(alpha=0.02, tol=1e-6, max_iter=20_000, warm_start=True)
    first = clf.fit(X, y).n_iter_[0]
    coef = clf.coef_.copy()
    second = clf.fit(X, y).n_iter_[0]
    assert second < first
    np.testing.assert_allclose(clf.coef_, coef, atol=1e-5)


def test_too_few_iterations_warns():
    X, y = make_problem()
    with pytest.warns(ConvergenceWarning, match="did not converge in max_iter=2"):
        GroupLassoClassifier(alpha=0.01, max_iter=2).fit(X, y)


def test_the_working_set_round_limit_is_its_own_warning(monkeypatch):
    import skh2t.linear_model._solver.working_set as working_set

    monkeypatch.setattr(working_set, "_MAX_OUTER", 1)
    X, y = make_problem(n_features=3000)
    with pytest.warns(ConvergenceWarning, match="stopped after 1 working-set rounds") as record:
        GroupLassoClassifier(alpha=0.001, tol=1e-8, max_iter=100_000).fit(X, y)
    assert "did not converge in max_iter" not in str(record[0].message)


def test_float32_data_is_certified_in_float64():
    """Single-precision full gradients cannot resolve a tight tol; a float64 check settles it."""
    X, y = make_problem()
    clf = GroupLassoClassifier(alpha=0.02, tol=1e-9, max_iter=100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X.astype(np.float32), y)
    assert clf.n_iter_[0] < 10_000
    assert clf.kkt_violation_ <= 1e-9
    reference = GroupLassoClassifier(alpha=0.02, tol=1e-9, max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(clf.objective_, reference.objective_, rtol=1e-8)


@pytest.mark.slow
def test_warm_path_on_wide_float32_features_converges_quickly():
    """Head2Toe's regime: wide, L2-normalised float32 features, a warm path to small alphas.

    Single-precision subproblems once made these solves crawl to max_iter
    (2,400 to 5,000 iterations at 0.01 and 0.003 x alpha_max); in float64
    subproblems each takes under 1,000.
    """
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    relu_features = np.maximum(X @ np.random.default_rng(0).normal(size=(64, 4000)), 0)
    features = (relu_features / np.linalg.norm(relu_features, axis=1, keepdims=True))[:640]
    features, y = features.astype(np.float32), y[:640]
    clf = GroupLassoClassifier(max_iter=1500, warm_start=True)
    alpha_max = clf.alpha_max(features, y)
    for fraction in (0.1, 0.03, 0.01, 0.003):
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            clf.set_params(alpha=fraction * alpha_max).fit(features, y)
        assert clf.kkt_violation_ <= clf.tol


def assert_same_support_away_from_the_boundary(support, reference, margin=1e-3):
    """``support`` is ``reference.support_`` (a fit without selection) on every feature
    whose membership another rounding of the same problem cannot flip: in it with a
    coefficient norm above ``margin`` of the largest, or out of it with a dual score
    below ``1 - margin``; and those are more than 90 %."""
    norms = np.sqrt(reference.feature_scores_)
    inside = reference.support_ & (norms > margin * norms.max())
    outside = ~reference.support_ & (reference.dual_scores_ < 1 - margin)
    clear = inside | outside
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(support[clear], reference.support_[clear])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale", [1e-12, 1e12])
def test_scaling_X_changes_neither_the_support_nor_the_convergence(scale, dtype):
    """The KKT criteria are relative to the penalty and the columns' scale (defect 14)."""
    X, y = make_problem()
    X += 1.0
    params = {"alpha_fraction": 0.1, "tol": 1e-6, "max_iter": 20_000}
    reference = GroupLassoClassifier(**params).fit(X.astype(dtype), y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        scaled = GroupLassoClassifier(**params).fit((X * scale).astype(dtype), y)
    assert scaled.kkt_violation_ <= 1e-6
    assert_same_support_away_from_the_boundary(scaled.support_, reference)  # other floats
    assert 0 < scaled.support_.sum() < X.shape[1]
    np.testing.assert_allclose(scaled.alpha_max_, reference.alpha_max_ * scale, rtol=1e-5)
    np.testing.assert_allclose(
        scaled.predict_proba((X * scale).astype(dtype)),
        reference.predict_proba(X.astype(dtype)),
        atol=1e-5,
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_constant_columns_have_alpha_max_zero_and_converge_at_once(dtype):
    y = np.arange(40) % 3
    X = np.full((40, 6), 0.1, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = GroupLassoClassifier(alpha_fraction=0.1, keep_fraction=0.5).fit(X, y)
    assert clf.alpha_max_ == 0.0
    assert clf.n_iter_[0] == 0
    assert not np.any(clf.group_lasso_coef_)
    priors = np.bincount(y) / len(y)  # the model is the intercept: the class priors
    np.testing.assert_allclose(clf.predict_proba(X), np.tile(priors, (40, 1)), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_constant_columns_next_to_informative_ones_stay_out_of_the_model(dtype):
    X, y = make_problem()
    constants = np.column_stack([np.full(len(X), 3.7), np.zeros(len(X)), np.full(len(X), -1e3)])
    params = {"alpha_fraction": 0.2, "tol": 1e-6, "max_iter": 20_000}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        mixed = GroupLassoClassifier(**params).fit(np.hstack([X, constants]).astype(dtype), y)
    alone = GroupLassoClassifier(**params).fit(X.astype(dtype), y)
    assert not np.any(mixed.group_lasso_coef_[:, -3:])
    assert_same_support_away_from_the_boundary(mixed.support_[:-3], alone)  # other products
    np.testing.assert_allclose(mixed.alpha_max_, alone.alpha_max_, rtol=1e-6)
    np.testing.assert_allclose(mixed.coef_[:, :-3], alone.coef_, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_constant_columns_span_at_most_the_rounding_unit_of_their_dtype(dtype):
    eps = np.finfo(dtype).eps
    one = dtype(1.0)
    X = np.array(
        [
            [one, 0.0, -3.0, one, 5.0],
            [one + eps, 0.0, -3.0, one + 2 * eps, 5.0 + 1e-3],
        ],
        dtype=dtype,
    )
    np.testing.assert_array_equal(constant_columns(X), [True, True, True, False, False])
