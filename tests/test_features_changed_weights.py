"""Weights changed after fit through ``backbone_`` travel with pickles and parallel workers."""

import pickle

import joblib
import numpy as np
import pytest
import torch

from skh2t.features import IntermediateFeatureTransformer
from tests.image_data import images_and_labels

TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 128}
X, _ = images_and_labels(12)


def changed(how: str) -> IntermediateFeatureTransformer:
    """A fitted transformer whose first convolution was scaled after fit."""
    transformer = IntermediateFeatureTransformer(**TINY).fit(X[:1])
    weight = next(transformer.backbone_.parameters())  # the stem convolution
    if how == "in place":
        with torch.no_grad():
            weight.mul_(1.5)
    else:  # through .data: no version counter is bumped
        weight.data = weight.data * 1.5
    return transformer


@pytest.mark.slow
@pytest.mark.parametrize("how", ["in place", "data"])
def test_a_pickle_keeps_weights_changed_after_fit(how, tmp_path):
    transformer = changed(how)
    expected = transformer.transform(X)
    original = IntermediateFeatureTransformer(**TINY).fit(X[:1]).transform(X)
    assert not np.allclose(expected, original)
    joblib.dump(transformer, tmp_path / "t.joblib")
    loaded = joblib.load(tmp_path / "t.joblib")
    np.testing.assert_array_equal(loaded.transform(X), expected)
    again = pickle.loads(pickle.dumps(loaded))  # before and after the rebuild
    np.testing.assert_array_equal(again.transform(X), expected)


def test_unchanged_weights_are_not_stored():
    transformer = IntermediateFeatureTransformer(**TINY).fit(X[:1])
    handle = transformer.__getstate__()["extraction_"].backbone
    assert handle.__getstate__()["state"] is None  # no weights: the recipe gives them
    assert len(pickle.dumps(transformer)) < 200_000


@pytest.mark.slow
def test_parallel_workers_compute_with_the_changed_weights(tmp_path):
    transformer = changed("in place").set_params(batch_size=4)
    serial = transformer.transform(X)
    transformer.set_params(n_jobs=2, cache=tmp_path)
    parallel = transformer.transform(X)  # the workers rebuild the backbone from the pickle
    np.testing.assert_allclose(parallel, serial, atol=1e-5)  # 1 vs 2 torch threads
    fresh = changed("in place").set_params(cache=tmp_path)
    np.testing.assert_array_equal(fresh.transform(X), parallel)  # rows cached under that key


@pytest.mark.parametrize(
    "change",
    [
        lambda w: w.data.mul_(1.5),  # in place, through .data: no version bump
        lambda w: setattr(w, "data", w.data * 1.5),  # a new tensor behind the parameter
    ],
    ids=["data-in-place", "data-assigned"],
)
def test_the_cache_notices_weights_changed_through_data(change, tmp_path):
    transformer = IntermediateFeatureTransformer(**TINY, cache=tmp_path).fit(X[:1])
    before = transformer.transform(X)  # cached under the original weights
    change(next(transformer.backbone_.parameters()))
    after = transformer.transform(X)
    uncached = IntermediateFeatureTransformer(**TINY).fit(X[:1])
    change(next(uncached.backbone_.parameters()))
    np.testing.assert_array_equal(after, uncached.transform(X))
    assert not np.allclose(after, before)
