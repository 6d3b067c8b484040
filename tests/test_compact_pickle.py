"""The group-lasso classifiers pickle their wide fitted arrays packed, and load them bit for bit."""

import pickle

import numpy as np
import pytest

from skh2t import GroupLassoClassifier, GroupLassoClassifierCV


@pytest.fixture(scope="module")
def wide():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    X = (rng.normal(size=(4, 6000))[y] * 0.3 + rng.normal(size=(120, 6000))).astype(np.float32)
    return X, y


def fitted_attributes(estimator):
    return {name: value for name, value in vars(estimator).items() if name.endswith("_")}


def assert_same_state(loaded, original):
    assert_same_values(fitted_attributes(loaded), fitted_attributes(original))


def assert_same_values(after: dict, before: dict):
    assert before.keys() == after.keys()
    for name, value in before.items():
        if isinstance(value, np.ndarray):
            assert after[name].dtype == value.dtype, name
            assert after[name].shape == value.shape, name
            np.testing.assert_array_equal(after[name], value, err_msg=name)
        elif isinstance(value, dict):  # cv_results_
            assert_same_values(after[name], value)
        else:
            assert after[name] == value, name


@pytest.mark.parametrize(
    "params",
    [
        {"alpha_fraction": 0.3, "keep_fraction": 0.05},
        {
            "alpha_fraction": 0.3,
            "keep_fraction": 0.05,
            "renormalize_groups": np.arange(6000) // 100,
        },
        {"alpha_fraction": 0.3, "groups": np.arange(6000) // 10},
        {"alpha_fraction": 0.9},  # no selection: the penalised fit is the model
    ],
)
def test_round_trip_is_exact_and_smaller(wide, params):
    X, y = wide
    clf = GroupLassoClassifier(**params).fit(X, y)
    data = pickle.dumps(clf)
    loaded = pickle.loads(data)
    assert_same_state(loaded, clf)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    plain = sum(v.nbytes for v in fitted_attributes(clf).values() if isinstance(v, np.ndarray))
    assert len(data) < 0.5 * plain


def test_cv_round_trip_is_exact(wide):
    X, y = wide
    cv = GroupLassoClassifierCV(alpha_fractions=[0.5, 0.3], keep_fractions=[0.05], cv=2)
    cv.fit(X, y)
    loaded = pickle.loads(pickle.dumps(cv))
    assert_same_state(loaded, cv)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dense_arrays_stay_as_they_are():
    X = np.random.default_rng(1).normal(size=(200, 3000))
    y = np.arange(200) % 2
    clf = GroupLassoClassifier(alpha=1e-6, tol=1e-3, max_iter=50).fit(X, y)
    assert np.count_nonzero(clf.coef_) > 0.5 * clf.coef_.size  # mostly non-zero
    state = clf.__getstate__()
    assert isinstance(state["coef_"], np.ndarray)
    assert_same_state(pickle.loads(pickle.dumps(clf)), clf)
