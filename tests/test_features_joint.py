"""Tests of joint extraction: several poolings from one forward pass, equal to separate ones."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.joint import repool, transform_jointly
from tests.rounding import assert_rows_close

TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)


class ForwardCounter:
    """Counts the images that go through a module's forward pass."""

    def __init__(self, module: nn.Module):
        self.rows = 0
        module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.rows += args[0].shape[0]


def small_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU()
    )


@pytest.mark.parametrize("pooling", [{"target_size": 1024}, {"pool_stride": 2}])
def test_repool_is_a_fresh_fit_with_that_pooling(images, pooling):
    first = IntermediateFeatureTransformer(**TINY, target_size=64).fit(images)
    repooled = first.repool(**pooling)
    fresh = clone(first).set_params(**pooling).fit(images)
    assert repooled.get_params() == fresh.get_params()
    assert repooled.taps_ == fresh.taps_
    assert repooled.backbone_ is first.backbone_  # shared, not rebuilt
    assert first.target_size == 64
    assert first.taps_[-1].stop != repooled.taps_[-1].stop
    assert np.array_equal(repooled.transform(images), fresh.transform(images))


def test_joint_transform_equals_separate_transforms_from_one_pass(images):
    model = small_convnet()
    first = IntermediateFeatureTransformer(
        backbone=model, image_size=32, target_size=16, batch_size=4
    ).fit(images[:1])
    others = [first.repool(target_size=T) for T in (256, 4096)]
    separate = [t.transform(images) for t in (first, *others)]
    counter = ForwardCounter(first.backbone_)
    joint = transform_jointly([first, *others], images)
    assert counter.rows == len(images)  # one forward pass for three poolings
    assert len({X.shape[1] for X in joint}) == 3
    for X_joint, X_alone in zip(joint, separate, strict=True):
        assert np.array_equal(X_joint, X_alone)


@pytest.mark.slow
def test_joint_transform_in_parallel_equals_serial(images):
    first = IntermediateFeatureTransformer(
        backbone=small_convnet(), image_size=32, target_size=64, batch_size=3
    ).fit(images)
    second = first.repool(target_size=512)
    serial = transform_jointly([first, second], images)
    first.set_params(n_jobs=2)
    parallel = transform_jointly([first, second], images)
    for a, b in zip(serial, parallel, strict=True):
        assert np.array_equal(a, b)


def test_joint_transform_fills_and_reads_every_cache(images, tmp_path):
    first = IntermediateFeatureTransformer(**TINY, target_size=64, cache=tmp_path).fit(images)
    second = first.repool(target_size=512)
    expected = [
        clone(t).set_params(cache=None).fit(images).transform(images) for t in (first, second)
    ]
    half = transform_jointly([first], images[:5])  # the first setup has 5 images cached
    # Other batches than the fresh extraction's (5 and 5, not 10): oneDNN may pick another
    # convolution algorithm, so the features agree to rounding, not bit for bit.
    assert_rows_close(half[0], expected[0][:5])
    counter = ForwardCounter(first.backbone_)
    joint = transform_jointly([first, second], images)
    assert counter.rows == len(images)  # the second setup missed all: all images go through
    np.testing.assert_array_equal(joint[0][:5], half[0])  # cached rows as the cache holds them
    for a, b in zip(joint, expected, strict=True):
        assert_rows_close(a, b)
    fresh = [clone(t).fit(images) for t in (first, second)]
    counter = ForwardCounter(fresh[0].backbone_)
    # Read back from the caches, bit for bit: the floats that were written to them, the first
    # five rows of the first setup by the half transform, every other row by the joint one.
    written = [np.concatenate([half[0], joint[0][5:]]), joint[1]]
    assert all(np.array_equal(t.transform(images), w) for t, w in zip(fresh, written, strict=True))
    assert counter.rows == 0  # both setups are served from their caches


def test_joint_transform_refuses_other_backbones_or_taps(images):
    first = IntermediateFeatureTransformer(**TINY, target_size=64).fit(images)
    same_weights = clone(first).set_params(target_size=256).fit(images)  # rebuilt, same weights
    assert len(transform_jointly([first, same_weights], images)) == 2
    other_taps = clone(first).set_params(layers=["layer1", "fc"]).fit(images)
    with pytest.raises(ValueError, match="same taps"):
        transform_jointly([first, other_taps], images)
    other_size = clone(first).set_params(image_size=48).fit(images)
    with pytest.raises(ValueError, match="same preprocessing"):
        transform_jointly([first, other_size], images)
    changed = clone(first).set_params(target_size=256).fit(images)  # another module
    with torch.no_grad():
        next(changed.backbone_.parameters()).mul_(2.0)
    with pytest.raises(ValueError, match="same backbone and weights"):
        transform_jointly([first, changed], images)


def test_repool_after_unpickling_shares_the_rebuilt_backbone(images):
    import pickle

    first = pickle.loads(
        pickle.dumps(IntermediateFeatureTransformer(**TINY, target_size=64).fit(images))
    )
    second = first.repool(target_size=256)
    assert second.backbone_ is first.backbone_
    np.testing.assert_array_equal(
        transform_jointly([first, second], images)[1], second.transform(images)
    )


def test_repool_refuses_a_standardised_transformer(images):
    standard = IntermediateFeatureTransformer(**TINY, target_size=64, normalization="standard")
    with pytest.raises(ValueError, match="normalization='standard'"):
        standard.fit(images).repool(target_size=256)


def test_the_repool_function_is_a_deprecated_alias_of_the_method(images):
    first = IntermediateFeatureTransformer(**TINY, target_size=64).fit(images)
    with pytest.warns(FutureWarning, match=r"transformer\.repool"):
        repooled = repool(first, target_size=256)
    method = first.repool(target_size=256)
    assert repooled.taps_ == method.taps_
    assert repooled.backbone_ is method.backbone_ is first.backbone_
    np.testing.assert_array_equal(repooled.transform(images), method.transform(images))
