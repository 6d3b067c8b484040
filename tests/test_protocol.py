"""compare_methods: Head2Toe and two linear probes on the same folds, from one backbone pass."""

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import skh2t.features.joint as joint
from skh2t import Head2ToeClassifier, compare_methods
from skh2t.features.joint import transform_jointly
from skh2t.head2toe import selection_rows
from skh2t.linear_model._search import split_folds
from skh2t.probes import l2_probe_cv, last_layer_columns
from skh2t.protocol import ALL_TAPS, HEAD2TOE, LAST_LAYER
from tests.image_data import images_and_labels
from tests.networks import small_convnet
from tests.rounding import head_rounding_bound

IMAGES, LABELS = images_and_labels(42, size=16)
TRAIN, TEST = slice(0, 30), slice(30, 42)
CS = [0.1, 10.0]


def head2toe(**params) -> Head2ToeClassifier:
    defaults = {
        "backbone": small_convnet(),
        "image_size": 16,
        "batch_size": 8,
        "target_sizes": [16, 64],
        "alpha_fractions": [0.3, 0.1],
        "keep_fractions": [0.1, 0.4],
        "cv": 3,
        "random_state": 0,
    }
    return Head2ToeClassifier(**{**defaults, **params})


@pytest.fixture(scope="module")
def estimator():
    return head2toe()


@pytest.fixture(scope="module")
def comparison(estimator):
    return compare_methods(
        estimator, IMAGES[TRAIN], LABELS[TRAIN], X_test=IMAGES[TEST], y_test=LABELS[TEST], Cs=CS
    )


def test_three_methods_on_the_folds_of_the_estimators_cv(comparison, estimator):
    assert [r.method for r in comparison.results] == [LAST_LAYER, ALL_TAPS, HEAD2TOE]
    expected = split_folds(estimator.cv, LABELS[TRAIN], estimator.random_state)
    assert len(comparison.folds) == len(expected) == 3
    for (train, valid), (train_, valid_) in zip(comparison.folds, expected, strict=True):
        assert np.array_equal(train, train_)
        assert np.array_equal(valid, valid_)


def test_head2toe_is_the_estimator_fitted_on_its_own(comparison, estimator):
    alone = clone(estimator).fit(IMAGES[TRAIN], LABELS[TRAIN])
    result = comparison[HEAD2TOE]
    model = comparison.head2toe
    assert model.best_params_ == alone.best_params_
    # The same code on the same features, folds and BLAS thread: the same floats.
    np.testing.assert_array_equal(
        model.cv_results_["mean_test_score"], alone.cv_results_["mean_test_score"]
    )
    assert result.cv_results is model.cv_results_
    assert result.params == {**alone.best_params_, "alpha": model.alpha_}
    assert result.n_features == int(alone.get_support().sum())
    assert result.pooling == alone.best_params_["target_size"]
    assert result.n_available == alone.transformer_.taps_[-1].stop
    assert result.n_not_converged == model.n_not_converged_
    # The same features (the same batches of the same images), but the head's float32 product
    # of 12 rows and those of predict's chunks of 8 may run in other BLAS kernels: their scores
    # agree up to the rounding of a dot product, and no score is that close to a tie.
    predicted = alone.predict(IMAGES[TEST])
    scores = alone.best_estimator_.decision_function(IMAGES[TEST])
    assert np.all(np.abs(scores) > head_rounding_bound(alone.best_estimator_, IMAGES[TEST]))
    assert np.array_equal(result.test_predictions, predicted)
    assert result.test_accuracy == pytest.approx(np.mean(predicted == LABELS[TEST]), abs=1e-12)


def test_the_probes_are_l2_probe_cv_on_the_same_features_and_folds(comparison):
    transformers = list(comparison.transformers.values())
    features = dict(
        zip(comparison.transformers, transform_jointly(transformers, IMAGES[TRAIN]), strict=True)
    )
    all_taps = l2_probe_cv(features, LABELS[TRAIN], comparison.folds, CS)
    result = comparison[ALL_TAPS]
    np.testing.assert_allclose(
        result.cv_results["mean_test_score"], all_taps.cv_results["mean_test_score"], atol=1e-12
    )
    assert result.params == {"target_size": all_taps.best_key, "C": all_taps.best_C}
    assert [p["target_size"] for p in result.cv_results["params"]] == [16, 16, 64, 64]
    assert "param_target_size" in result.cv_results
    assert "param_features" not in result.cv_results

    smallest = comparison.transformers[16]
    last = l2_probe_cv(
        {16: features[16]},
        LABELS[TRAIN],
        comparison.folds,
        CS,
        columns=last_layer_columns(smallest),
    )
    result = comparison[LAST_LAYER]
    assert result.cv_accuracy == pytest.approx(last.best_score, abs=1e-12)
    assert result.params["C"] == last.best_C
    assert result.params["tap"] == "6:input"  # the input of the logits layer (nn.Linear)
    assert result.n_features == last.head.n_features == 16
    assert {p["tap"] for p in result.cv_results["params"]} == {result.params["tap"]}
    predicted = last.head.predict(transform_jointly([smallest], IMAGES[TEST])[0])
    assert result.test_accuracy == pytest.approx(np.mean(predicted == LABELS[TEST]), abs=1e-12)


def test_one_backbone_pass_over_the_training_and_the_test_images():
    backbone, rows = small_convnet(), []
    backbone.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    compare_methods(
        head2toe(backbone=backbone),
        IMAGES[TRAIN],
        LABELS[TRAIN],
        X_test=IMAGES[TEST],
        y_test=LABELS[TEST],
        Cs=CS,
    )
    # The shape probe (one image, twice) at fit, then every training and test image once.
    assert rows[0] == 2
    assert sum(rows[1:]) == 30 + 12


def test_the_estimator_given_is_left_as_it_was(estimator, comparison):
    assert not hasattr(estimator, "cv_results_")
    assert comparison.head2toe.get_params()["cv"] == estimator.cv == 3
    assert comparison.head2toe.store_features is False
    assert not hasattr(comparison.head2toe, "training_features_")  # it pickles small


def test_table_frame_and_kept_per_tap(comparison):
    lines = str(comparison).splitlines()
    assert lines[0].split()[:3] == ["method", "CV", "acc"]
    assert [line.split("  ")[0].strip() for line in lines[2:]] == [LAST_LAYER, ALL_TAPS, HEAD2TOE]
    frame = comparison.to_frame()
    assert list(frame.index) == [LAST_LAYER, ALL_TAPS, HEAD2TOE]
    assert frame.loc[HEAD2TOE, "test_accuracy"] == comparison[HEAD2TOE].test_accuracy
    assert len(pd.DataFrame(comparison[HEAD2TOE].cv_results)) == 2 * 2 * 2
    kept = comparison.kept_per_tap()
    assert sum(row["kept"] for row in kept) == comparison[HEAD2TOE].n_features
    times = comparison.times
    assert times.total >= times.head2toe_fit + times.probes + times.test > 0
    with pytest.raises(KeyError, match="no method 'nope'"):
        comparison["nope"]


def test_without_test_images_and_with_pooling_strides():
    comparison = compare_methods(
        head2toe(pool_strides=[1, 2], target_sizes=[16]), IMAGES[TRAIN], LABELS[TRAIN], Cs=[1.0]
    )
    assert comparison.pooling_name == "pool_stride"
    assert set(comparison.transformers) == {1, 2}
    assert all(t.pool_stride == p for p, t in comparison.transformers.items())
    assert all(r.test_accuracy is r.test_predictions is None for r in comparison.results)
    assert "pool_stride" in comparison[ALL_TAPS].params
    assert " - " in comparison.table().splitlines()[2] + " "  # no test accuracy shown


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"scoring": "balanced_accuracy"}, "scoring must be None"),
        ({"compute_budgets": [0.5, 1.0]}, "one compute_budget, not a grid"),
        ({"X_test": IMAGES[TEST]}, "both X_test and y_test"),
        ({"y_test": LABELS[TEST]}, "both X_test and y_test"),
        ({"X_test": IMAGES[TEST], "y_test": LABELS[:3]}, "y_test must hold one label per image"),
        ({"Cs": [1.0, -1.0]}, "Cs"),
        ({"y": LABELS[:5]}, "y must hold one label per image"),
        ({"selection_samples": 4}, "selection_samples=4: cv splits that subsample of 4 images"),
        ({"selection_samples": 1}, "selection_samples=1 cannot be a stratified subsample"),
    ],
)
def test_bad_arguments_are_refused_before_any_image_is_extracted(arguments, message, monkeypatch):
    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted before checking the arguments")

    monkeypatch.setattr(joint, "extract_jointly", no_extraction)
    arguments = dict(arguments)
    estimator = head2toe(
        scoring=arguments.pop("scoring", None),
        compute_budgets=arguments.pop("compute_budgets", None),
        selection_samples=arguments.pop("selection_samples", None),
    )
    y = arguments.pop("y", LABELS[TRAIN])
    with pytest.raises(ValueError, match=message):
        compare_methods(estimator, IMAGES[TRAIN], y, **arguments)


@pytest.fixture(scope="module")
def subsampled():
    return compare_methods(
        head2toe(selection_samples=21),
        IMAGES[TRAIN],
        LABELS[TRAIN],
        X_test=IMAGES[TEST],
        y_test=LABELS[TEST],
        Cs=CS,
    )


def test_with_selection_samples_the_folds_split_the_subsample(subsampled):
    rows = selection_rows(LABELS[TRAIN], 21, 0)
    assert np.array_equal(subsampled.selection_indices, rows)
    assert np.array_equal(subsampled.head2toe.selection_indices_, rows)
    assert subsampled.n_train == 30
    expected = split_folds(3, LABELS[TRAIN][rows], 0)
    for (train, valid), (train_, valid_) in zip(subsampled.folds, expected, strict=True):
        assert np.array_equal(train, train_)
        assert np.array_equal(valid, valid_)


def test_with_selection_samples_head2toe_is_the_estimator_fitted_on_its_own(subsampled):
    alone = head2toe(selection_samples=21).fit(IMAGES[TRAIN], LABELS[TRAIN])
    model = subsampled.head2toe
    assert model.best_params_ == alone.best_params_
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], alone.cv_results_["mean_test_score"], atol=1e-12
    )
    # store_features changes no float: the same code on the same features and folds.
    assert np.array_equal(model.get_support(), alone.get_support())
    # Refitted on all 30 images, not on the subsample.
    np.testing.assert_allclose(model.classifier_.coef_, alone.classifier_.coef_, atol=1e-6)
    assert model.get_params()["random_state"] == 0
    assert not hasattr(model, "training_features_")


def test_with_selection_samples_the_probes_see_only_the_subsample(subsampled):
    rows = subsampled.selection_indices
    transformers = list(subsampled.transformers.values())
    features = dict(
        zip(
            subsampled.transformers,
            transform_jointly(transformers, IMAGES[TRAIN][rows]),
            strict=True,
        )
    )
    all_taps = l2_probe_cv(features, LABELS[TRAIN][rows], subsampled.folds, CS)
    result = subsampled[ALL_TAPS]
    np.testing.assert_allclose(
        result.cv_results["mean_test_score"], all_taps.cv_results["mean_test_score"], atol=1e-12
    )
    pooling = all_taps.best_key
    test_features = transform_jointly([subsampled.transformers[pooling]], IMAGES[TEST])[0]
    np.testing.assert_allclose(
        result.model.decision_function(test_features),
        all_taps.head.decision_function(test_features),
        atol=1e-5,
    )
    last = subsampled[LAST_LAYER]
    assert len(last.cv_results["params"]) == len(CS)


def test_with_selection_samples_the_table_says_what_the_probes_saw(subsampled, comparison):
    lines = str(subsampled).splitlines()
    assert lines[-1] == (
        "probes and Head2Toe's selection: 21 of 30 training images; Head2Toe's head refitted on all"
    )
    assert [line.split("  ")[0].strip() for line in lines[2:5]] == [LAST_LAYER, ALL_TAPS, HEAD2TOE]
    assert comparison.selection_indices is None
    assert comparison.selection_caption() is None
    assert len(str(comparison).splitlines()) == 5


@pytest.mark.parametrize("random_state", [None, np.random.RandomState(3)])
def test_the_subsample_matches_the_fit_with_a_random_state_that_is_not_a_seed(random_state):
    before = copy.deepcopy(random_state)
    comparison = compare_methods(
        head2toe(selection_samples=20, random_state=random_state, cv=2),
        IMAGES[TRAIN],
        LABELS[TRAIN],
        Cs=[1.0],
    )
    rows = comparison.selection_indices
    assert len(rows) == 20
    assert np.array_equal(comparison.head2toe.selection_indices_, rows)
    if before is not None:
        assert np.array_equal(rows, selection_rows(LABELS[TRAIN], 20, before))


def test_selection_samples_of_all_images_is_no_subsample():
    comparison = compare_methods(
        head2toe(selection_samples=30, cv=2), IMAGES[TRAIN], LABELS[TRAIN], Cs=[1.0]
    )
    assert comparison.selection_indices is None
    assert comparison.head2toe.selection_indices_ is None


def test_with_selection_samples_and_a_float16_feature_store(subsampled, tmp_path):
    comparison = compare_methods(
        head2toe(selection_samples=21, feature_store=tmp_path, feature_store_dtype="float16"),
        IMAGES[TRAIN],
        LABELS[TRAIN],
        Cs=CS,
    )
    assert np.array_equal(comparison.selection_indices, subsampled.selection_indices)
    assert comparison.head2toe.feature_store == tmp_path
    assert list(tmp_path.iterdir()) == []  # the store is removed at the end of the fit
    assert [r.n_available for r in comparison.results] == [
        r.n_available for r in subsampled.results
    ]
