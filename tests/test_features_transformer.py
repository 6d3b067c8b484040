"""IntermediateFeatureTransformer: scikit-learn API, outputs, normalisation, hooks, devices."""

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.validation import check_is_fitted
from torch import nn

from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.pooling import plan_pooling, pool_activation
from skh2t.features.preprocessing import Preprocessor

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 128}


@pytest.fixture(scope="module")
def transformer():
    return IntermediateFeatureTransformer(**TINY).fit(IMAGES)


# --- scikit-learn's data-independent API checks ---------------------------------------------

API_CHECKS = [
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_valid_tag_types",
    "check_estimator_tags_renamed",
    "check_mixin_order",
    "check_param_validation",
    "check_transformers_unfitted",
    "check_get_feature_names_out_error",
]


@pytest.mark.parametrize("check_name", API_CHECKS)
def test_sklearn_api_check(check_name):
    check = getattr(estimator_checks, check_name)
    check(IntermediateFeatureTransformer.__name__, IntermediateFeatureTransformer(**TINY))


def test_tags_say_images_in_float32_out():
    tags = IntermediateFeatureTransformer().__sklearn_tags__()
    assert not tags.input_tags.two_d_array
    assert tags.input_tags.three_d_array
    assert tags.transformer_tags.preserves_dtype == ["float32"]
    assert tags.requires_fit
    assert not tags.non_deterministic
    assert not tags.target_tags.required


def test_defaults():
    params = IntermediateFeatureTransformer().get_params()
    assert params["backbone"] == "tf_efficientnet_lite0"
    assert params["weights"] == "auto"
    assert params["layers"] == "auto"
    assert params["target_size"] == 8192
    assert params["pool_stride"] is None
    assert params["normalization"] == "l2"
    assert params["device"] == "cpu"
    assert params["precision"] == "float32"


# --- the same contracts on image data ---------------------------------------------------------


def test_fit_returns_self_and_leaves_parameters_alone():
    transformer = IntermediateFeatureTransformer(**TINY, layers=["layer1", "fc"])
    before = joblib.hash(transformer.get_params())
    assert transformer.fit(IMAGES) is transformer
    assert joblib.hash(transformer.get_params()) == before
    check_is_fitted(transformer)


def test_unfitted_transformer_refuses_to_work():
    transformer = IntermediateFeatureTransformer(**TINY)
    for method in (transformer.transform, transformer.get_feature_names_out):
        with pytest.raises(NotFittedError):
            method(IMAGES) if method == transformer.transform else method()
    assert not hasattr(transformer, "feature_groups_")
    assert not hasattr(transformer, "backbone_")


def test_fit_is_idempotent_and_fit_transform_matches(transformer):
    features = transformer.transform(IMAGES)
    refitted = clone(transformer).fit(IMAGES).fit(IMAGES)
    np.testing.assert_array_equal(refitted.transform(IMAGES), features)
    np.testing.assert_array_equal(clone(transformer).fit_transform(IMAGES), features)


def test_output_is_deterministic(transformer):
    first = transformer.transform(IMAGES)
    np.testing.assert_array_equal(transformer.transform(IMAGES), first)
    np.testing.assert_array_equal(transformer.transform(IMAGES), first)


@pytest.mark.slow
def test_batch_size_changes_nothing_but_rounding(transformer):
    reference = transformer.transform(IMAGES)
    other = clone(transformer).set_params(batch_size=2).fit(IMAGES)
    np.testing.assert_allclose(other.transform(IMAGES), reference, atol=1e-5)
    np.testing.assert_array_equal(other.transform(IMAGES[:1]), transformer.transform(IMAGES[:1]))


# --- outputs: feature names, groups, tap table --------------------------------------------------


def test_output_shape_dtype_and_feature_names(transformer):
    features = transformer.transform(IMAGES)
    names = transformer.get_feature_names_out()
    taps = transformer.taps_
    assert features.dtype == np.float32
    assert features.flags.c_contiguous
    assert features.shape == (len(IMAGES), names.size)
    assert names[0] == f"{taps[0].name}__0"
    assert names[taps[0].stop] == f"{taps[1].name}__0"
    assert names[-1] == f"fc__{taps[-1].n_features - 1}"
    assert names.dtype == object
    assert len(set(names)) == names.size


def test_feature_groups_and_tap_table(transformer):
    taps = transformer.taps_
    groups = transformer.feature_groups_
    assert groups.shape == (taps[-1].stop,)
    assert taps[0].start == 0
    for index, tap in enumerate(taps):
        assert np.all(groups[tap.columns] == index)
        assert tap.n_features == int(np.prod(tap.pooled_shape))
        if index:
            assert tap.start == taps[index - 1].stop
    pd = pytest.importorskip("pandas")
    table = pd.DataFrame(taps)
    assert list(table.columns[:4]) == ["name", "module", "hook", "layout"]
    assert table["name"].tolist()[-2:] == ["fc:input", "fc"]
    assert transformer.data_config_["input_size"] == (3, 32, 32)


def test_target_size_and_pool_stride_shape_the_taps():
    big = IntermediateFeatureTransformer(**{**TINY, "target_size": 2048}).fit(IMAGES)
    small = IntermediateFeatureTransformer(**{**TINY, "target_size": 64}).fit(IMAGES)
    assert big.taps_[-1].stop > small.taps_[-1].stop
    strided = IntermediateFeatureTransformer(**TINY, pool_stride=2).fit(IMAGES)
    act1 = strided.taps_[0]
    assert act1.name == "act1"
    assert act1.pool_kernel == (2, 2)
    assert act1.pooled_shape == (act1.raw_shape[0], act1.raw_shape[1] // 2, act1.raw_shape[2] // 2)


def test_set_output_pandas(transformer):
    pd = pytest.importorskip("pandas")
    frame = clone(transformer).set_output(transform="pandas").fit_transform(IMAGES)
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns[0] == "act1__0"
    np.testing.assert_array_equal(frame.to_numpy(), transformer.transform(IMAGES))


# --- normalisation ----------------------------------------------------------------------------


def test_each_tap_has_unit_l2_norm_per_example(transformer):
    features = transformer.transform(IMAGES)
    for tap in transformer.taps_:
        norms = np.linalg.norm(features[:, tap.columns], axis=1)
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_all_zero_taps_stay_zero():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(1), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.fill_(-1.0)  # the ReLU output is all zero
        net[3].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    transformer = IntermediateFeatureTransformer(backbone=net, layers=["1", "3"], image_size=8)
    features = transformer.fit_transform(IMAGES)
    assert not features[:, transformer.taps_[0].columns].any()
    norms = np.linalg.norm(features[:, transformer.taps_[1].columns], axis=1)
    np.testing.assert_allclose(norms, 1, rtol=1e-6)


def test_standardization_is_fitted_on_training_features():
    transformer = IntermediateFeatureTransformer(**TINY, normalization="standard")
    train = transformer.fit_transform(IMAGES)
    assert transformer.mean_.shape == transformer.scale_.shape == (train.shape[1],)
    varying = transformer.scale_ != 1
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train[:, varying].std(axis=0), 1, rtol=1e-3)
    np.testing.assert_allclose(transformer.transform(IMAGES), train, atol=1e-6)
    raw = IntermediateFeatureTransformer(**TINY, normalization=None).fit_transform(IMAGES)
    np.testing.assert_allclose(train * transformer.scale_ + transformer.mean_, raw, atol=1e-5)
    other = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert not np.allclose(transformer.transform(other).mean(axis=0), 0, atol=1e-3)
    transformer.set_params(normalization="l2").fit(IMAGES)
    assert not hasattr(transformer, "mean_")


def test_transform_uses_the_normalization_seen_at_fit(transformer):
    changed = clone(transformer).fit(IMAGES).set_params(normalization="standard")
    np.testing.assert_array_equal(changed.transform(IMAGES), transformer.transform(IMAGES))


def test_no_normalization_gives_the_backbone_logits(transformer):
    raw = IntermediateFeatureTransformer(**TINY, layers="fc", normalization=None).fit(IMAGES)
    preprocess = Preprocessor.from_data_config(raw.data_config_)
    batch = preprocess(torch.from_numpy(IMAGES).permute(0, 3, 1, 2))
    with torch.inference_mode():
        logits = raw.backbone_(batch).numpy()
    np.testing.assert_allclose(raw.transform(IMAGES), logits, rtol=1e-5, atol=1e-6)


# --- hooks: pooling inside the hook, in-place activations, clean-up ----------------------------


class InPlaceNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_in_place_activations_do_not_corrupt_what_was_read():
    net = InPlaceNet().eval()
    transformer = IntermediateFeatureTransformer(
        backbone=net, layers=["conv"], image_size=8, target_size=16, normalization=None
    )
    features = transformer.fit_transform(IMAGES)
    batch = Preprocessor.from_data_config(transformer.data_config_)(
        torch.from_numpy(IMAGES).permute(0, 3, 1, 2)
    )
    with torch.inference_mode():
        conv_out = net.conv(batch)
    expected = pool_activation(conv_out, transformer.taps_[0].plan).numpy()
    assert (expected < 0).any()  # the ReLU, in place, would have wiped these out
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    assert plan_pooling("nchw", (4, 8, 8), target_size=16) == transformer.taps_[0].plan


def no_hooks_left(module):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def test_hooks_are_removed_after_use_and_after_errors():
    net = InPlaceNet()
    transformer = IntermediateFeatureTransformer(backbone=net, image_size=8).fit(IMAGES)
    transformer.transform(IMAGES)
    assert no_hooks_left(net)

    def broken(*args):
        raise RuntimeError("boom")

    net.head.forward = broken
    with pytest.raises(RuntimeError, match="boom"):
        transformer.transform(IMAGES)
    assert no_hooks_left(net)
    with pytest.raises(RuntimeError, match="failed on a batch of shape"):
        clone(transformer).fit(IMAGES)
    assert no_hooks_left(net)


def test_user_module_training_flags_are_restored():
    net = InPlaceNet().train()
    net.conv.eval()
    transformer = IntermediateFeatureTransformer(backbone=net, image_size=8).fit(IMAGES)
    transformer.transform(IMAGES)
    assert transformer.backbone_ is net
    assert net.training
    assert net.head.training
    assert not net.conv.training


def test_dropout_is_off_during_extraction():
    net = nn.Sequential(nn.Flatten(1), nn.LazyLinear(16), nn.Dropout(0.5), nn.Linear(16, 3)).train()
    net(torch.zeros(1, 3 * 8 * 8))
    transformer = IntermediateFeatureTransformer(backbone=net, layers="3", image_size=8)
    first = transformer.fit_transform(IMAGES)
    np.testing.assert_array_equal(transformer.transform(IMAGES), first)


# --- progress and devices -------------------------------------------------------------------------


def test_verbose_shows_a_progress_bar_over_batches(capsys):
    IntermediateFeatureTransformer(**TINY, batch_size=2, verbose=1).fit_transform(IMAGES)
    assert "Extracting features" in capsys.readouterr().err
    IntermediateFeatureTransformer(**TINY, batch_size=2).fit_transform(IMAGES)
    assert "Extracting features" not in capsys.readouterr().err


def test_device_auto_and_errors():
    transformer = IntermediateFeatureTransformer(**TINY, device="auto").fit(IMAGES)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(transformer.backbone_.parameters()).device.type == expected
    with pytest.raises(ValueError, match="not a torch device"):
        IntermediateFeatureTransformer(**TINY, device="gpu0").fit(IMAGES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_fails_at_fit_and_falls_back_after_loading(transformer):
    with pytest.raises(ValueError, match="CUDA is not available"):
        IntermediateFeatureTransformer(**TINY, device="cuda").fit(IMAGES)
    moved = clone(transformer).fit(IMAGES).set_params(device="cuda")
    with pytest.warns(UserWarning, match="running on the CPU"):
        features = moved.transform(IMAGES)
    np.testing.assert_array_equal(features, transformer.transform(IMAGES))
