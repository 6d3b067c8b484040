"""Module settings changed after fit that change no tensor (a BatchNorm's ``eps``, an
activation replaced): the cache misses, and pickles and parallel workers carry them."""

import pickle

import joblib
import numpy as np
import pytest
from torch import nn

from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.backbones import structure_fingerprint
from tests.image_data import images_and_labels

TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 128}
X, _ = images_and_labels(12)

EDITS = {
    "eps": lambda model: setattr(model.bn1, "eps", 10.0),
    "tanh": lambda model: setattr(model.layer1[0], "act1", nn.Tanh()),
}


def edited(edit, **params):
    """A fitted transformer whose backbone was edited after fit."""
    transformer = IntermediateFeatureTransformer(**TINY, **params).fit(X[:1])
    EDITS[edit](transformer.backbone_)
    return transformer


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_the_structure_fingerprint_sees_settings_that_change_no_tensor(edit):
    model = IntermediateFeatureTransformer(**TINY).fit(X[:1]).backbone_
    before = structure_fingerprint(model)
    assert structure_fingerprint(model) == before
    EDITS[edit](model)
    assert structure_fingerprint(model) != before


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_the_cache_misses_after_a_module_setting_changes(edit, tmp_path):
    transformer = IntermediateFeatureTransformer(**TINY, cache=tmp_path).fit(X[:1])
    before = transformer.transform(X)  # cached under the original module
    EDITS[edit](transformer.backbone_)
    after = transformer.transform(X)
    # Computed, not the cached rows: the same batches of the same module in this process.
    np.testing.assert_array_equal(after, edited(edit).transform(X))
    assert np.abs(after - before).max() > 1e-3
    fresh = IntermediateFeatureTransformer(**TINY, cache=tmp_path).fit(X[:1])
    np.testing.assert_array_equal(fresh.transform(X), before)  # the original entries remain


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_pickle_keeps_module_settings_changed_after_fit(edit, tmp_path):
    transformer = edited(edit)
    expected = transformer.transform(X)
    original = IntermediateFeatureTransformer(**TINY).fit(X[:1]).transform(X)
    assert np.abs(expected - original).max() > 1e-3
    joblib.dump(transformer, tmp_path / "t.joblib")
    loaded = joblib.load(tmp_path / "t.joblib")
    np.testing.assert_array_equal(loaded.transform(X), expected)
    again = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(again.transform(X), expected)


@pytest.mark.slow
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_parallel_workers_use_module_settings_changed_after_fit(edit):
    transformer = edited(edit, batch_size=4)
    serial = transformer.transform(X)
    parallel = transformer.set_params(n_jobs=2).transform(X)
    np.testing.assert_allclose(parallel, serial, rtol=0, atol=1e-5)
