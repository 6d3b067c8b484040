"""The precision parameter: resolution per device, autocast extraction, cache keys, estimators."""

import contextlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from skh2t import GroupLassoClassifier, Head2ToeClassifier
from skh2t.features import IntermediateFeatureTransformer, devices, joint
from skh2t.features import transformer as transformer_module
from skh2t.features.cache import CACHE_SUBDIRECTORY, ENTRY_SUFFIX
from skh2t.features.devices import (
    DEFAULT_PRECISION,
    Runtime,
    resolve_precision,
    resolve_runtime,
)
from skh2t.features.pooling import l2_normalize, plan_pooling, pool_activation
from skh2t.finetune import FineTuneClassifier
from skh2t.finetune import classifier as finetune_module
from skh2t.finetune.training import Stepper, grad_scaler
from tests.image_data import images_and_labels

TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 128}
X, Y = images_and_labels(12)
CPU = torch.device("cpu")


def features(**params) -> IntermediateFeatureTransformer:
    return IntermediateFeatureTransformer(**{**TINY, **params})


@pytest.fixture(scope="module")
def float32_features():
    return features().fit_transform(X)


@pytest.fixture(scope="module")
def bfloat16_features():
    return features(precision="bfloat16").fit_transform(X)


def setups(cache: Path) -> list[Path]:
    """The setup directories of a cache that hold entries."""
    folders = {path.parent for path in Path(cache, CACHE_SUBDIRECTORY).glob(f"*/*{ENTRY_SUFFIX}")}
    return sorted(folders)


def forward_passes_forbidden(monkeypatch):
    """Any forward pass of an extraction fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr(joint, "extract_pooled", refuse)


# --- resolution -------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_every_value_on_a_cpu_with_and_without_bfloat16_units(monkeypatch, native):
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: native)
    assert resolve_precision("float32", "cpu") is torch.float32
    assert resolve_precision("bfloat16", "cpu") is torch.bfloat16  # runs, if slowly, anywhere
    assert resolve_precision("auto", CPU) is (torch.bfloat16 if native else torch.float32)
    with pytest.raises(ValueError, match="'float16' runs on CUDA devices only"):
        resolve_precision("float16", "cpu")


def test_unknown_values_and_other_devices():
    with pytest.raises(ValueError, match="precision='half' is not one of 'float32'"):
        resolve_precision("half", "cpu")
    assert resolve_precision("auto", "meta") is torch.float32
    with pytest.raises(ValueError, match="on 'meta' use 'float32' or 'auto'"):
        resolve_precision("bfloat16", "meta")


@pytest.mark.parametrize(
    ("bf16", "native_bf16", "precision", "expected"),
    [
        (True, True, "auto", torch.bfloat16),
        (True, False, "auto", torch.float16),  # emulated bfloat16 is slow: float16
        (True, False, "bfloat16", torch.bfloat16),
        (False, False, "auto", torch.float16),
        (False, False, "float16", torch.float16),
        (False, False, "float32", torch.float32),
    ],
)
def test_every_value_on_a_mocked_cuda_device(monkeypatch, bf16, native_bf16, precision, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    support = {False: bf16, True: native_bf16}
    monkeypatch.setattr(devices, "_cuda_has_bfloat16", lambda device, native=False: support[native])
    assert resolve_precision(precision, "cuda") is expected


def test_bfloat16_on_a_cuda_device_without_it_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices, "_cuda_has_bfloat16", lambda device, native=False: False)
    with pytest.raises(ValueError, match="does not support bfloat16; use 'float16'"):
        resolve_precision("bfloat16", "cuda:1")


def test_the_cuda_probe_asks_for_native_support_when_it_matters(monkeypatch):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return not including_emulation

    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda")
    assert devices._cuda_has_bfloat16(cuda, native=True)
    assert not devices._cuda_has_bfloat16(cuda)
    assert asked == [False, True]


def test_the_cpu_probe_asks_torch_else_reads_cpuinfo(monkeypatch, tmp_path):
    probe = devices.cpu_has_native_bfloat16.__wrapped__  # without its cache
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert probe()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not probe()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(devices, "_CPUINFO", cpuinfo)
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx512f amx_bf16 amx_tile\n")
    assert probe()
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx2\n")
    assert not probe()
    cpuinfo.unlink()
    assert not probe()


def test_a_cuda_model_loaded_without_cuda_runs_float16_in_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with (
        pytest.warns(UserWarning, match="CUDA is not available here; running on the CPU"),
        pytest.warns(UserWarning, match="running in float32 on the CPU"),
    ):
        runtime = resolve_runtime("cuda", "float16", fallback_to_cpu=True)
    assert runtime == Runtime(CPU, torch.float32)
    with pytest.warns(UserWarning, match="running on the CPU"):
        assert resolve_runtime("cuda", "bfloat16", fallback_to_cpu=True).dtype is torch.bfloat16
    with pytest.raises(ValueError, match="CUDA devices only"):  # asked for on the CPU: an error
        resolve_runtime("cpu", "float16", fallback_to_cpu=True)


def test_the_runtime_autocasts_only_in_a_reduced_precision():
    layer = nn.Linear(3, 2)
    with Runtime(CPU).autocast():
        assert layer(torch.ones(1, 3)).dtype is torch.float32
    with Runtime(CPU, torch.bfloat16).autocast():
        assert layer(torch.ones(1, 3)).dtype is torch.bfloat16
    assert Runtime(CPU, torch.bfloat16).precision == "bfloat16"


def test_the_default_is_one_constant_everywhere():
    assert DEFAULT_PRECISION == "float32"
    for estimator in (IntermediateFeatureTransformer, Head2ToeClassifier, FineTuneClassifier):
        assert estimator().get_params()["precision"] == DEFAULT_PRECISION


@pytest.mark.parametrize("estimator", [IntermediateFeatureTransformer, FineTuneClassifier])
def test_an_unknown_precision_is_refused_by_parameter_validation(estimator):
    with pytest.raises(InvalidParameterError, match="'precision' parameter"):
        estimator(precision="half").fit(X, Y)


# --- the transformer --------------------------------------------------------------------------


def test_bfloat16_features_are_float32_unit_norm_and_close_to_float32(
    float32_features, bfloat16_features
):
    reduced, exact = bfloat16_features, float32_features
    assert reduced.dtype == np.float32
    groups = features().fit(X[:1]).feature_groups_
    for tap in np.unique(groups):
        norms = np.linalg.norm(reduced[:, groups == tap], axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    relative = np.linalg.norm(reduced - exact) / np.linalg.norm(exact)
    assert relative < 0.03
    assert np.corrcoef(reduced.ravel(), exact.ravel())[0, 1] > 0.999
    assert not np.array_equal(reduced, exact)  # autocast ran


def test_the_hooks_pool_bfloat16_activations_and_normalise_in_float32(monkeypatch):
    seen, normalised = [], []

    def spy(tensor, plan):
        seen.append(tensor.dtype)
        return pool_activation(tensor, plan)

    def normalise_spy(pooled, out):
        normalised.append(pooled.dtype)
        return l2_normalize(pooled, out=out)

    monkeypatch.setattr("skh2t.features.extraction.pool_activation", spy)
    monkeypatch.setattr("skh2t.features.extraction.l2_normalize", normalise_spy)
    transformer = features(precision="bfloat16").fit(X[:2])
    seen.clear()
    transformer.transform(X[:2])
    assert torch.bfloat16 in seen  # pooled as it is, not upcast whole
    assert set(normalised) == {torch.float32}
    activations = []
    hook = nn.modules.module.register_module_forward_hook(
        lambda module, args, output: (
            activations.append(output.dtype) if isinstance(module, nn.Conv2d) else None
        )
    )
    try:
        transformer.transform(X[:2])
    finally:
        hook.remove()
    assert set(activations) == {torch.bfloat16}


def test_float16_on_the_cpu_fails_at_fit_before_the_backbone_is_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was built")

    monkeypatch.setattr(transformer_module, "load_backbone", refuse)
    with pytest.raises(ValueError, match="'float16' runs on CUDA devices only"):
        features(precision="float16").fit(X)


def test_float16_set_after_fit_fails_at_transform_before_any_forward_pass(monkeypatch):
    transformer = features().fit(X[:1])
    forward_passes_forbidden(monkeypatch)
    transformer.set_params(precision="float16")
    with pytest.raises(ValueError, match="'float16' runs on CUDA devices only"):
        transformer.transform(X)


def test_precision_set_after_fit_is_the_one_used(float32_features, bfloat16_features):
    transformer = features().fit(X)
    transformer.set_params(precision="bfloat16")
    np.testing.assert_array_equal(transformer.transform(X), bfloat16_features)
    transformer.set_params(precision="float32")
    np.testing.assert_array_equal(transformer.transform(X), float32_features)


def test_a_pipeline_in_bfloat16_fits_and_predicts():
    pipeline = Pipeline(
        [
            ("features", features(precision="bfloat16")),
            ("head", GroupLassoClassifier(alpha=1e-3, max_iter=200)),
        ]
    ).fit(X, Y)
    assert pipeline.predict(X).shape == (len(X),)
    assert pipeline.named_steps["features"].precision == "bfloat16"


# --- the cache --------------------------------------------------------------------------------


def test_two_precisions_key_two_setups_and_the_same_precision_hits(
    tmp_path, monkeypatch, float32_features, bfloat16_features
):
    np.testing.assert_array_equal(features(cache=tmp_path).fit_transform(X), float32_features)
    reduced = features(cache=tmp_path, precision="bfloat16").fit_transform(X)
    np.testing.assert_array_equal(reduced, bfloat16_features)
    assert len(setups(tmp_path)) == 2
    forward_passes_forbidden(monkeypatch)
    again = features(cache=tmp_path, precision="bfloat16").fit_transform(X)
    np.testing.assert_array_equal(again, bfloat16_features)
    np.testing.assert_array_equal(features(cache=tmp_path).fit_transform(X), float32_features)
    assert len(setups(tmp_path)) == 2


def test_auto_shares_the_entries_of_the_precision_it_resolves_to(
    tmp_path, monkeypatch, bfloat16_features
):
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: True)
    features(cache=tmp_path, precision="bfloat16").fit_transform(X)
    forward_passes_forbidden(monkeypatch)
    auto = features(cache=tmp_path, precision="auto").fit_transform(X)
    np.testing.assert_array_equal(auto, bfloat16_features)
    assert len(setups(tmp_path)) == 1


def test_precision_set_after_fit_rekeys_the_cache(tmp_path, monkeypatch, bfloat16_features):
    transformer = features(cache=tmp_path).fit(X)
    transformer.transform(X)
    assert transformer.extraction_.cache.feature_cache.setup["precision"] == "float32"
    transformer.set_params(precision="bfloat16")
    np.testing.assert_array_equal(transformer.transform(X), bfloat16_features)
    assert transformer.extraction_.cache.feature_cache.setup["precision"] == "bfloat16"
    assert len(setups(tmp_path)) == 2
    forward_passes_forbidden(monkeypatch)
    transformer.set_params(precision="float32")
    transformer.transform(X)  # back to the first entries
    assert transformer.extraction_.cache.feature_cache.setup["precision"] == "float32"


# --- joint extraction -------------------------------------------------------------------------


def test_joint_extraction_needs_one_precision(monkeypatch):
    small = features(target_size=64).fit(X[:1])
    large = small.repool(target_size=256)
    assert large.precision == small.precision
    large.set_params(precision="bfloat16")
    with pytest.raises(ValueError, match="the same precision"):
        joint.transform_jointly([small, large], X)
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: True)
    small.set_params(precision="auto")  # resolves to bfloat16 here: the same forward pass
    X_small, X_large = joint.transform_jointly([small, large], X)
    np.testing.assert_array_equal(X_small, small.transform(X))
    np.testing.assert_array_equal(X_large, large.transform(X))


# --- Head2ToeClassifier -----------------------------------------------------------------------


def test_head2toe_in_bfloat16_fits_and_passes_precision_to_prediction(monkeypatch):
    grid = {"target_sizes": [64, 128], "alpha_fractions": [0.3], "keep_fractions": [0.2]}
    model = Head2ToeClassifier(
        backbone="test_resnet",
        weights=None,
        image_size=32,
        cv=2,
        random_state=0,
        precision="bfloat16",
        **grid,
    ).fit(X, Y)
    assert model.transformer_.precision == "bfloat16"
    assert model.predict(X).shape == (len(X),)
    model.set_params(precision="float16")
    forward_passes_forbidden(monkeypatch)
    with pytest.raises(ValueError, match="'float16' runs on CUDA devices only"):
        model.predict(X)


# --- FineTuneClassifier -----------------------------------------------------------------------


def fine_tuner(**params) -> FineTuneClassifier:
    defaults = {
        "backbone": "test_resnet",
        "weights": None,
        "image_size": 32,
        "probe_epochs": 2,
        "epochs": 1,
        "batch_size": 6,
        "lr": 1e-3,
        "validation_fraction": None,
        "random_state": 0,
    }
    return FineTuneClassifier(**{**defaults, **params})


@pytest.mark.slow
def test_fine_tuning_in_bfloat16_keeps_float32_weights_and_results():
    exact = fine_tuner().fit(X, Y)
    reduced = fine_tuner(precision="bfloat16").fit(X, Y)
    assert all(p.dtype == torch.float32 for p in reduced._live_net().parameters())
    probabilities = reduced.predict_proba(X)
    assert probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert np.isfinite(reduced.history_["train_loss"][1])
    features_reduced = reduced.penultimate_features(X)
    assert features_reduced.dtype == np.float32
    features_exact = exact.penultimate_features(X)
    assert not np.array_equal(features_reduced, features_exact)  # autocast ran
    relative = np.linalg.norm(features_reduced - features_exact) / np.linalg.norm(features_exact)
    assert relative < 0.1  # one epoch at lr 1e-3 from the same start


@pytest.mark.slow
def test_fine_tuning_frozen_features_in_bfloat16_are_close_to_float32():
    exact = fine_tuner(epochs=0).fit(X, Y)
    reduced = fine_tuner(epochs=0, precision="bfloat16").fit(X, Y)
    a, b = exact.penultimate_features(X), reduced.penultimate_features(X)
    assert not np.array_equal(a, b)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.03
    assert reduced.energy_["loss"] == pytest.approx(exact.energy_["loss"], rel=0.05)


def test_fine_tuning_float16_on_the_cpu_fails_before_the_backbone_is_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the backbone was built")

    monkeypatch.setattr(finetune_module, "load_backbone", refuse)
    with pytest.raises(ValueError, match="'float16' runs on CUDA devices only"):
        fine_tuner(precision="float16").fit(X, Y)


def test_float16_scales_the_loss_and_steps():
    """The GradScaler path of float16 (CUDA in practice), driven on the CPU."""
    assert not grad_scaler(Runtime(CPU)).is_enabled()
    assert not grad_scaler(Runtime(CPU, torch.bfloat16)).is_enabled()
    layer = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = grad_scaler(Runtime(CPU, torch.float16))
    assert scaler.is_enabled()
    before = layer.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the scheduler's order check
        Stepper(optimizer, scheduler, scaler).step(layer(torch.ones(4, 3)).square().mean())
    assert not torch.equal(layer.weight, before)  # finite gradients: the step ran
    assert layer.weight.grad.dtype == torch.float32


@pytest.mark.parametrize(
    ("layout", "shape", "pool_stride"),
    [
        ("nchw", (2, 64, 64), None),  # a global mean
        ("nchw", (2, 64, 64), 64),  # avg_pool2d
        ("nhwc", (64, 64, 2), 64),
        ("nlc", (4096, 2), None),
        ("nlc", (4096, 2), 4096),
        ("ncl", (2, 4096), 4096),
    ],
)
def test_pooling_a_bfloat16_activation_accumulates_in_float32(layout, shape, pool_stride):
    # 4096 ones: a bfloat16 accumulator stops growing at 256 (its 8-bit mantissa), so the
    # mean would read 0.0625; a float32 one gives exactly 1.
    x = torch.ones((1, *shape), dtype=torch.bfloat16)
    plan = plan_pooling(layout, shape, target_size=2, pool_stride=pool_stride)
    assert plan.kernel is None or max(plan.kernel) == 4096 or plan.kernel == (64, 64)
    pooled = pool_activation(x, plan)
    assert torch.all(pooled.float() == 1.0)
