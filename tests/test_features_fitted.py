"""The fitted record ``extraction_``, the lazy backbone handle, and pickles made before them."""

import pickle

import numpy as np
import pytest
import torch

from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.fitted import FittedExtraction
from skh2t.features.lazy import LazyModule
from tests.image_data import images_and_labels

TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 128}
X, _ = images_and_labels(6)


def test_the_fitted_state_is_one_frozen_record():
    transformer = IntermediateFeatureTransformer(**TINY, normalization="standard").fit(X)
    extraction = transformer.extraction_
    assert isinstance(extraction, FittedExtraction)
    assert transformer.taps_ == list(extraction.taps)
    assert transformer.data_config_ == extraction.data_config
    assert transformer.backbone_ is extraction.backbone.module
    assert transformer.mean_ is extraction.standardization.mean
    with pytest.raises(AttributeError):  # frozen
        extraction.taps = ()
    l2 = IntermediateFeatureTransformer(**TINY).fit(X[:1])
    assert not hasattr(l2, "mean_")
    assert not hasattr(l2, "scale_")


def old_layout_state(transformer, *, changed=None, cached=False):
    """The ``__dict__`` a pickle of a fitted transformer held before ``extraction_`` existed."""
    extraction = transformer.extraction_
    state = {
        **transformer.get_params(deep=False),
        "_backbone_module": None if extraction.reference is not None else extraction.module,
        "_changed_weights": changed,
        "_backbone_reference": extraction.reference,
        "_fitted_normalization": extraction.normalization,
        "taps_": list(extraction.taps),
        "backbone_family_": transformer.backbone_family_,
        "data_config_": dict(extraction.data_config),
        "_feature_cache": extraction.cache.feature_cache if cached else None,
        "_weights_state": None,
    }
    if extraction.standardization is not None:
        state["mean_"] = extraction.standardization.mean
        state["scale_"] = extraction.standardization.scale
    del state["precision"]  # and before the precision parameter
    return state


def from_state(state):
    transformer = IntermediateFeatureTransformer.__new__(IntermediateFeatureTransformer)
    transformer.__setstate__(state)
    return transformer


@pytest.mark.parametrize("normalization", ["l2", "standard"])
def test_a_pickle_of_the_older_layout_still_loads(normalization, tmp_path):
    fitted = IntermediateFeatureTransformer(
        **TINY, normalization=normalization, cache=tmp_path
    ).fit(X)
    expected = fitted.transform(X)
    loaded = from_state(old_layout_state(fitted, cached=True))
    assert not loaded.extraction_.backbone.is_built
    assert loaded.precision == "float32"
    np.testing.assert_array_equal(loaded.transform(X), expected)
    assert loaded.extraction_.cache.feature_cache.directory == (
        fitted.extraction_.cache.feature_cache.directory
    )


def test_an_older_pickle_with_changed_weights_or_a_module_still_loads():
    fitted = IntermediateFeatureTransformer(**TINY).fit(X[:1])
    with torch.no_grad():
        next(fitted.backbone_.parameters()).mul_(1.5)
    changed = {k: v.clone() for k, v in fitted.backbone_.state_dict().items()}
    loaded = from_state(old_layout_state(fitted, changed=changed))
    np.testing.assert_array_equal(loaded.transform(X), fitted.transform(X))
    module = IntermediateFeatureTransformer(
        **{**TINY, "backbone": fitted.backbone_, "weights": "auto"}
    ).fit(X[:1])
    loaded = from_state(old_layout_state(module))
    assert loaded.backbone_ is loaded.backbone
    np.testing.assert_array_equal(loaded.transform(X), module.transform(X))


def test_a_module_parameter_is_pickled_once_with_the_fitted_backbone():
    module = IntermediateFeatureTransformer(**TINY).fit(X[:1]).backbone_
    fitted = IntermediateFeatureTransformer(**{**TINY, "backbone": module, "weights": "auto"})
    fitted.fit(X[:1])
    loaded = pickle.loads(pickle.dumps(fitted))
    assert loaded.backbone_ is loaded.backbone


def test_a_lazy_module_needs_a_module_or_a_recipe():
    with pytest.raises(ValueError, match="module or a recipe"):
        LazyModule(None, None)
