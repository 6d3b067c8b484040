"""The transformer in a Pipeline with a classifier: fitting, grid search, pickling."""

import io

import joblib
import numpy as np
import pytest
import timm
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from skh2t import GroupLassoClassifier
from skh2t.features import IntermediateFeatureTransformer

# The classifier and its regularisation grid: the one line to change to compose with another
# classifier, e.g. (GroupLassoClassifier(), {"alpha": [1e-4, 1e-3]}).
CLASSIFIER, REGULARISATION = GroupLassoClassifier(), {"alpha": [1e-4, 1e-3]}

TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 128}


def stripes(n_images, seed=0, size=32):
    """Noisy horizontal (class 0) or vertical (class 1) stripes of random period and phase."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images) % 2
    coords = np.arange(size)
    images = np.empty((n_images, size, size, 3), dtype=np.uint8)
    for index, label in enumerate(labels):
        wave = np.sin(2 * np.pi * coords / rng.integers(3, 7) + rng.uniform(0, 2 * np.pi))
        pattern = np.broadcast_to(wave[:, None] if label == 0 else wave[None, :], (size, size))
        image = 0.5 + 0.35 * pattern + rng.normal(0, 0.15, (size, size))
        images[index] = (np.clip(image, 0, 1)[..., None] * 255).astype(np.uint8)
    return images, labels


X_TRAIN, Y_TRAIN = stripes(40, seed=0)
X_TEST, Y_TEST = stripes(20, seed=1)


def make_pipeline(**feature_params):
    features = IntermediateFeatureTransformer(**{**TINY, **feature_params})
    return Pipeline([("features", features), ("clf", clone(CLASSIFIER))])


def test_pipeline_fits_and_predicts():
    pipeline = make_pipeline().fit(X_TRAIN, Y_TRAIN)
    predictions = pipeline.predict(X_TEST)
    assert predictions.shape == (20,)
    assert pipeline.score(X_TEST, Y_TEST) >= 0.8
    n_features = pipeline.named_steps["features"].taps_[-1].stop
    assert pipeline.named_steps["clf"].coef_.shape[-1] == n_features


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_over_target_size_and_regularisation(n_jobs):
    ((name, values),) = REGULARISATION.items()
    grid = {"features__target_size": [64, 256], f"clf__{name}": values}
    search = GridSearchCV(make_pipeline(), grid, cv=StratifiedKFold(2), n_jobs=n_jobs)
    search.fit(X_TRAIN, Y_TRAIN)
    assert len(search.cv_results_["params"]) == 4
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_params_["features__target_size"] in (64, 256)
    assert search.score(X_TEST, Y_TEST) >= 0.8


@pytest.mark.slow
def test_grid_search_over_pool_stride():
    grid = {"features__pool_stride": [2, 4]}
    search = GridSearchCV(make_pipeline(), grid, cv=StratifiedKFold(2)).fit(X_TRAIN, Y_TRAIN)
    strides = [params["features__pool_stride"] for params in search.cv_results_["params"]]
    assert strides == [2, 4]
    assert search.best_estimator_.named_steps["features"].pool_stride in (2, 4)


def pickled(obj):
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


@pytest.mark.slow
def test_pickled_pipeline_is_small_and_predicts_identically():
    pipeline = make_pipeline().fit(X_TRAIN, Y_TRAIN)
    expected = pipeline.predict_proba(X_TEST)
    payload = pickled(pipeline)
    backbone = pipeline.named_steps["features"].backbone_
    weights_bytes = sum(t.numel() * t.element_size() for t in backbone.state_dict().values())
    assert len(payload) < weights_bytes / 10  # the weights are not in there
    loaded = joblib.load(io.BytesIO(payload))
    features = loaded.named_steps["features"]
    assert not features.extraction_.backbone.is_built  # rebuilt lazily, on first use
    np.testing.assert_array_equal(loaded.predict_proba(X_TEST), expected)
    assert next(features.backbone_.parameters()).device.type == "cpu"
    # a second round trip of the used estimator is still small
    assert len(pickled(loaded)) == pytest.approx(len(payload), rel=0.01)


def test_pickled_user_module_is_stored_whole():
    module = timm.create_model("test_resnet", pretrained=False)
    with torch.no_grad():
        module.fc.bias.add_(1.0)  # not what any name would rebuild
    pipeline = make_pipeline(backbone=module, weights="auto").fit(X_TRAIN, Y_TRAIN)
    expected = pipeline.predict_proba(X_TEST)
    payload = pickled(pipeline)
    weights_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    assert len(payload) > weights_bytes
    assert len(payload) < 2 * weights_bytes  # stored once: parameter and fitted module are shared
    loaded = joblib.load(io.BytesIO(payload))
    features = loaded.named_steps["features"]
    assert features.backbone_ is features.backbone
    np.testing.assert_array_equal(loaded.predict_proba(X_TEST), expected)


@pytest.mark.slow
def test_one_group_per_tap_follows_a_grid_over_target_size():
    """With pandas output, the classifier groups columns by tap whatever the pooling."""
    pytest.importorskip("pandas")
    features = IntermediateFeatureTransformer(**TINY).set_output(transform="pandas")
    pipe = Pipeline(
        [("features", features), ("clf", GroupLassoClassifier(groups="feature_name_prefix"))]
    )
    search = GridSearchCV(
        pipe, {"features__target_size": [64, 256], "clf__alpha": [1e-3]}, cv=2
    ).fit(X_TRAIN, Y_TRAIN)
    best = search.best_estimator_
    tap_names = [tap.name for tap in best["features"].taps_]
    np.testing.assert_array_equal(np.sort(best["clf"].group_labels_), np.sort(tap_names))
    nonzero_rows = np.any(best["clf"].coef_ != 0, axis=0)
    # Inside a selected tap only features that are identically zero keep a zero row.
    dead = np.all(best["features"].transform(X_TRAIN).to_numpy() == 0, axis=0)
    for tap in best["features"].taps_:
        rows, dead_rows = nonzero_rows[tap.start : tap.stop], dead[tap.start : tap.stop]
        assert not rows.any() or np.array_equal(rows, ~dead_rows)
