"""The compact Head2Toe module and its files: same logits as the fitted model, less work."""

import os
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import fx, nn

from skh2t import GroupLassoClassifier, Head2ToeClassifier
from skh2t.export import (
    CompactHead2Toe,
    check_export_path,
    check_opset,
    compact_module,
    export_model,
    load_exported,
    onnx_opsets,
    prepare_images,
    read_metadata,
)
from skh2t.export.taps import HookedTaps, tap_extractor
from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.taps import TapRef
from tests.image_data import images_and_labels

IMAGES, LABELS = images_and_labels(40, size=32)
TINY = {"backbone": "test_resnet", "weights": None, "image_size": 32, "target_size": 256}


def fitted_pipeline(*, renormalize=False, normalization="l2", y=LABELS, **head):
    features = IntermediateFeatureTransformer(**TINY, normalization=normalization).fit(IMAGES[:2])
    groups = features.feature_groups_ if renormalize else None
    head = {"alpha_fraction": 0.1, "keep_fraction": 0.05, **head}
    classifier = GroupLassoClassifier(renormalize_groups=groups, max_iter=5000, **head)
    return make_pipeline(features, classifier).fit(IMAGES, y)


def logits(module, images):
    with torch.inference_mode():
        return module(module.prepare(images)).numpy()


def clear_of_a_tie(scores, tolerance):
    """Rows whose best class leads the next by more than ``2 * tolerance``: scores within
    ``tolerance`` of these (another code path, batch or kernel) pick the same class."""
    top = np.sort(scores, axis=1)
    return top[:, -1] - top[:, -2] > 2 * tolerance


def assert_same_classes_away_from_ties(predicted, model, images, expected, tolerance):
    """``predicted`` (from scores within ``tolerance`` of ``expected``, by other kernels) are
    the model's classes on every image clear of a tie, and those are more than 90 %."""
    clear = clear_of_a_tie(expected, tolerance)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(predicted[clear], model.predict(images)[clear])


def class_scores(model, images):
    """``model.decision_function`` as one column per class, as the exported modules give it."""
    scores = model.decision_function(images)
    return np.column_stack([np.zeros_like(scores), scores]) if scores.ndim == 1 else scores


def assert_same_scores(module, model, images):
    expected = class_scores(model, images)
    got = logits(module, images)
    tolerance = 1e-4 * np.abs(expected).max()
    assert np.abs(got - expected).max() <= tolerance
    predicted = module.predict(images, batch_size=7)
    assert_same_classes_away_from_ties(predicted, model, images, expected, tolerance)


@pytest.mark.slow
@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("normalization", ["l2", "standard", None])
def test_compact_module_reproduces_the_pipeline(renormalize, normalization):
    y = np.array(["a", "b", "c", "d"])[np.arange(40) % 4]
    model = fitted_pipeline(renormalize=renormalize, normalization=normalization, y=y)
    module = compact_module(model)
    assert module.n_features == model[-1].support_.sum()
    assert module.classes_.tolist() == ["a", "b", "c", "d"]
    assert_same_scores(module, model, IMAGES)


@pytest.mark.slow
def test_binary_logits_are_zero_and_the_decision_function():
    model = fitted_pipeline()
    module = compact_module(model)
    scores = logits(module, IMAGES)
    assert scores.shape == (40, 2)
    np.testing.assert_array_equal(scores[:, 0], 0)
    assert_same_scores(module, model, IMAGES)


def test_only_taps_with_kept_features_are_read_and_the_backbone_is_cut():
    model = fitted_pipeline()
    features, head = model[0], model[-1]
    support = np.zeros_like(head.support_)
    early = features.taps_[2]
    support[early.start : early.start + 5] = True  # keep 5 columns of one early tap
    head.support_ = support
    head.coef_ = np.where(support, head.coef_ + 0.5, 0.0)
    module = compact_module(model)
    assert [r.name for r in module.readouts] == [early.name]
    assert isinstance(module.taps, fx.GraphModule)
    kept_modules = {name for name, _ in module.taps.named_modules()}
    assert "fc" not in kept_modules
    assert "layer4" not in kept_modules
    n_params = sum(p.numel() for p in module.taps.parameters())
    assert n_params < sum(p.numel() for p in features.backbone_.parameters()) / 10
    assert_same_scores(module, model, IMAGES)


@pytest.mark.slow
def test_head2toe_classifier_on_real_lite0_weights(make_images):
    images, labels = make_images(24, size=32, seed=3)
    model = Head2ToeClassifier(
        image_size=32,
        target_sizes=[256],
        alpha_fractions=[0.1],
        keep_fractions=[0.05],
        cv=2,
        max_iter=3000,
    ).fit(images, labels)
    module = compact_module(model)
    assert [r.name for r in module.readouts] == model.kept_taps_
    test_images, _ = make_images(30, size=40, seed=4)  # resized inside, as by the model
    assert_same_scores(module, model, test_images)


@pytest.mark.slow
def test_a_linear_classifier_without_support_reads_its_nonzero_columns():
    features = IntermediateFeatureTransformer(**TINY)
    model = make_pipeline(features, LogisticRegression(max_iter=500)).fit(IMAGES, LABELS)
    module = compact_module(model)
    nonzero = np.any(model[-1].coef_ != 0, axis=0)
    assert 0 < module.n_features == nonzero.sum() <= features.taps_[-1].stop
    assert_same_scores(module, model, IMAGES)


class _ChangesItsTap(nn.Module):
    """ReLU(inplace=True) right after the tapped convolution output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.conv(x)).mean(dim=(2, 3))


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return (y if y.shape[-1] > 2 else -y).mean(dim=(2, 3))  # fx cannot branch on a shape


class _Copy(nn.Module):
    def forward(self, x):
        return x.clone()


def test_readers_see_each_activation_before_later_in_place_operations():
    model = _ChangesItsTap().eval()
    example = torch.randn(2, 3, 8, 8)
    taps, readers = [TapRef("conv"), TapRef("act")], [_Copy(), _Copy()]
    extractor = tap_extractor(model, taps, readers, example)
    assert isinstance(extractor, fx.GraphModule)
    with torch.inference_mode():
        conv_out, act_out = extractor(example)
        expected = model.conv(example)
    assert (conv_out < 0).any()  # the value the conv returned, before the in-place ReLU
    np.testing.assert_array_equal(conv_out, expected)
    np.testing.assert_array_equal(act_out, expected.clamp_min(0))


class _Wrong(nn.Module):
    def forward(self, x):
        return (torch.zeros(x.shape[0], 4, 6, 6),)


def test_a_graph_that_disagrees_with_the_hooks_is_not_used(monkeypatch):
    monkeypatch.setattr("skh2t.export.taps.traced_taps", lambda *args: _Wrong())
    model, example = _ChangesItsTap().eval(), torch.randn(2, 3, 8, 8)
    extractor = tap_extractor(model, [TapRef("conv")], [_Copy()], example)
    assert isinstance(extractor, HookedTaps)
    with torch.inference_mode():
        np.testing.assert_array_equal(extractor(example)[0], model.conv(example))


def test_an_untraceable_backbone_runs_whole_with_hooks():
    example = torch.randn(2, 3, 8, 8)
    extractor = tap_extractor(_DataDependent().eval(), [TapRef("conv")], [nn.Identity()], example)
    assert isinstance(extractor, HookedTaps)


def test_a_user_module_backbone_without_fx_support_still_exports(tmp_path):
    backbone = nn.Sequential(_DataDependent(), nn.Linear(4, 3))
    features = IntermediateFeatureTransformer(backbone=backbone, image_size=16, target_size=64)
    model = make_pipeline(features, GroupLassoClassifier(alpha_fraction=0.1)).fit(IMAGES, LABELS)
    module = compact_module(model)
    assert isinstance(module.taps, HookedTaps)
    assert_same_scores(module, model, IMAGES)
    with pytest.warns(torch.jit.TracerWarning):  # the user's branch, fixed at trace time
        run = load_exported(export_model(module, tmp_path / "m.pt"))
    np.testing.assert_allclose(
        run(module.prepare(IMAGES).numpy()), logits(module, IMAGES), atol=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_exported_files_give_the_module_logits_for_any_batch_size(suffix, tmp_path):
    model = fitted_pipeline(y=np.arange(40) % 3)
    module = compact_module(model)
    path = export_model(model, tmp_path / f"model{suffix}")
    info = read_metadata(path)
    assert info["classes"] == [0, 1, 2]
    assert info["image_size"] == [32, 32]
    assert info["taps"] == [r.name for r in module.readouts]
    assert info["n_features"] == module.n_features
    run = load_exported(path)
    for n in (1, 5):
        batch = module.prepare(IMAGES[:n]).numpy()
        got = run(batch)
        assert got.shape == (n, 3)
        np.testing.assert_allclose(got, logits(module, IMAGES[:n]), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_onnx_on_200_real_images_predicts_as_the_fitted_model(tmp_path):
    from skh2t.datasets import load_fashion_mnist

    try:
        train = load_fashion_mnist(subset="train")
        test = load_fashion_mnist(subset="test")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    model = Head2ToeClassifier(
        image_size=32,
        target_sizes=[512],
        alpha_fractions=[0.03],
        keep_fractions=[0.05],
        cv=2,
    ).fit(train.images[:200], train.target[:200])
    module = compact_module(model)
    path = export_model(module, tmp_path / "fashion.onnx")
    images = test.images[:200]
    got = load_exported(path)(module.prepare(images).numpy())
    expected = model.decision_function(images)
    tolerance = 1e-4 * np.abs(expected).max()
    assert np.abs(got - expected).max() <= tolerance
    predicted = model.classes_[got.argmax(axis=1)]  # onnxruntime's kernels against NumPy's
    assert_same_classes_away_from_ties(predicted, model, images, expected, tolerance)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_module_runs_on_cuda():
    model = fitted_pipeline()
    module = compact_module(model, device="cuda")
    batch = module.prepare(IMAGES).cuda()
    with torch.inference_mode():
        got = module(batch).cpu().numpy()
    np.testing.assert_allclose(got, logits(compact_module(model), IMAGES), rtol=1e-3, atol=1e-4)


def test_compact_module_refuses_what_it_cannot_export():
    with pytest.raises(NotFittedError):
        compact_module(Head2ToeClassifier())
    with pytest.raises(TypeError, match="Expected a fitted Head2ToeClassifier"):
        compact_module(GroupLassoClassifier())
    three = Pipeline(
        [
            ("f", IntermediateFeatureTransformer(**TINY)),
            ("s", StandardScaler()),
            ("c", LogisticRegression()),
        ]
    )
    with pytest.raises(TypeError, match="two steps"):
        compact_module(three)


def test_export_paths_are_checked_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"use a name ending in \.onnx"):
        check_export_path(tmp_path / "model.joblib")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        check_export_path(tmp_path / "dir.onnx")
    with pytest.raises(ValueError, match="does not exist"):
        check_export_path(tmp_path / "missing" / "model.pt")


def test_onnx_without_the_extra_names_the_fix(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnxscript":
            raise ImportError("No module named 'onnxscript'", name="onnxscript")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ImportError, match=r'pip install "skh2t\[export\]"'):
        check_export_path(tmp_path / "model.onnx")


@pytest.mark.slow
def test_the_module_is_a_plain_torch_module():
    module = compact_module(fitted_pipeline())
    assert isinstance(module, CompactHead2Toe)
    assert not module.training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = module.prepare(IMAGES[:3])
    assert batch.dtype == torch.float32
    assert tuple(batch.shape) == (3, 3, 32, 32)
    assert batch.min() >= 0
    assert batch.max() <= 1


# --- prepare_images resizes as the model records (issue 25, defect 15) ----------------------

LARGER, _ = images_and_labels(40, seed=1, size=45)  # resized to 32: the interpolation matters


def relative_error(got, expected):
    return np.abs(got - expected).max() / np.abs(expected).max()


@pytest.mark.slow
def test_prepare_images_resizes_as_a_bilinear_model_by_default(tmp_path):
    model = fitted_pipeline(y=np.arange(40) % 4)
    assert model[0].data_config_["interpolation"] == "bilinear"
    path = export_model(model, tmp_path / "bilinear.onnx")
    info = read_metadata(path)
    assert info["interpolation"] == "bilinear"
    run = load_exported(path)
    expected = model.decision_function(LARGER)
    reference = prepare_images(LARGER, path)
    for source in (model, model[0], compact_module(model), info, str(path)):
        np.testing.assert_array_equal(prepare_images(LARGER, source), reference)  # same ops
    got = run(reference.numpy())
    assert relative_error(got, expected) <= 1e-4
    tolerance = 1e-4 * np.abs(expected).max()  # onnxruntime's kernels against NumPy's
    predicted = model.classes_[got.argmax(axis=1)]
    assert_same_classes_away_from_ties(predicted, model, LARGER, expected, tolerance)
    # An explicit interpolation still overrides (and here would not reproduce the model).
    bicubic = run(prepare_images(LARGER, path, interpolation="bicubic").numpy())
    assert relative_error(bicubic, expected) > 1e-3


def test_prepare_images_reads_a_head2toe_classifier():
    backbone = {k: v for k, v in TINY.items() if k != "target_size"}
    options = {"target_sizes": [256], "alpha_fractions": [0.1], "keep_fractions": [0.05]}
    model = Head2ToeClassifier(**backbone, **options, cv=2).fit(IMAGES, LABELS)
    module = compact_module(model)
    assert module.interpolation == "bilinear"
    np.testing.assert_array_equal(prepare_images(LARGER, model), module.prepare(LARGER))
    with torch.inference_mode():
        got = module(prepare_images(LARGER, model)).numpy()
    expected = class_scores(model, LARGER)  # NumPy's kernels against PyTorch's
    tolerance = 1e-4 * np.abs(expected).max()
    assert np.abs(got - expected).max() <= tolerance
    predicted = module.classes_[got.argmax(axis=1)]
    assert_same_classes_away_from_ties(predicted, model, LARGER, expected, tolerance)


def test_prepare_images_says_what_it_needs():
    with pytest.raises(ValueError, match="An image size alone does not say how the model resizes"):
        prepare_images(IMAGES[:2], 32)
    batch = prepare_images(IMAGES[:2], (16, 24), "nearest")
    assert tuple(batch.shape) == (2, 3, 16, 24)
    with pytest.raises(ValueError, match=r"interpolation must be one of \('bicubic'"):
        prepare_images(IMAGES[:2], 32, "lanczos")
    with pytest.raises(ValueError, match="image size must be a positive int"):
        prepare_images(IMAGES[:2], (0, 32), "bilinear")
    for unfitted in (IntermediateFeatureTransformer(**TINY), Head2ToeClassifier()):
        with pytest.raises(NotFittedError):
            prepare_images(IMAGES[:2], unfitted)
    with pytest.raises(TypeError, match="source must be a fitted Head2ToeClassifier"):
        prepare_images(IMAGES[:2], GroupLassoClassifier())
    with pytest.raises(ValueError, match="no 'image_size'"):
        prepare_images(IMAGES[:2], {"classes": [0, 1]})


# --- load_exported takes what prepare_images returns (issue 25, defect 18) ------------------


@pytest.fixture(scope="module")
def binary_model():
    return fitted_pipeline()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".onnx", ".pt", ".pt2"])
def test_exported_files_take_torch_tensors_and_numpy_batches(suffix, binary_model, tmp_path):
    path = export_model(binary_model, tmp_path / f"model{suffix}")
    run = load_exported(path)
    tensor = prepare_images(IMAGES[:5], path)
    from_tensor = run(tensor)
    assert isinstance(from_tensor, np.ndarray)
    assert from_tensor.shape == (5, 2)
    # The tensor becomes the same float32 array: the runtime gets the same input.
    np.testing.assert_array_equal(from_tensor, run(tensor.numpy()))
    np.testing.assert_allclose(
        from_tensor, logits(compact_module(binary_model), IMAGES[:5]), rtol=1e-4, atol=1e-5
    )
    read_only = tensor.numpy().copy()
    read_only.flags.writeable = False
    for layout in (
        tensor.contiguous(memory_format=torch.channels_last),
        tensor.clone().requires_grad_(True),
        np.asfortranarray(tensor.numpy()),
        read_only,
    ):
        np.testing.assert_allclose(run(layout), from_tensor, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_exported_files_refuse_other_inputs_before_the_runtime(suffix, binary_model, tmp_path):
    run = load_exported(export_model(binary_model, tmp_path / f"model{suffix}"))
    batch = prepare_images(IMAGES[:2], binary_model)
    bad = [
        (batch.tolist(), TypeError, "got list.*prepare_images"),
        (IMAGES[:2], ValueError, "dtype uint8; the exported model takes float32"),
        (batch.double(), ValueError, "dtype float64"),
        (batch.numpy().astype(np.float16), ValueError, "dtype float16"),
        (batch.permute(0, 2, 3, 1), ValueError, r"shape \(2, 32, 32, 3\).*\(N, 3, 32, 32\)"),
        (batch[:, :, :16, :16], ValueError, r"shape \(2, 3, 16, 16\).*\(N, 3, 32, 32\)"),
        (batch[0], ValueError, r"shape \(3, 32, 32\)"),
        (batch[:0], ValueError, "N >= 1"),
    ]
    for images, error, message in bad:
        with pytest.raises(error, match=message):
            run(images)


@pytest.fixture(scope="module")
def small_module():
    return compact_module(fitted_pipeline())


@pytest.mark.parametrize("opset", [-3, 0, 7, 17, 99, True, 18.0, "18"])
def test_an_opset_the_exporter_does_not_write_is_refused_before_any_work(
    opset, small_module, tmp_path, monkeypatch
):
    from skh2t.export import files

    def no_export(*args, **kwargs):
        raise AssertionError("the exporter ran")

    monkeypatch.setattr(files, "_write_onnx", no_export)
    with pytest.raises(ValueError, match=rf"^opset_version={opset!r} is not an ONNX opset"):
        export_model(small_module, tmp_path / "m.onnx", opset_version=opset)
    with pytest.raises(ValueError, match="use one from 18 to "):
        check_opset(opset)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_opsets_the_exporter_writes_are_honoured(small_module, tmp_path):
    import onnx

    supported = onnx_opsets()
    assert supported[0] == 18
    for opset in sorted({supported[0], supported[-1]}):
        path = export_model(small_module, tmp_path / f"m{opset}.onnx", opset_version=opset)
        versions = {o.domain: o.version for o in onnx.load(path).opset_import}
        assert versions[""] == opset


@pytest.mark.slow
def test_a_file_of_another_opset_than_asked_is_an_error_and_removed(
    small_module, tmp_path, monkeypatch
):
    from skh2t.export import files

    monkeypatch.setattr(files, "onnx_opsets", lambda: range(18, 100))  # as if 99 were valid
    with pytest.raises(ValueError, match="The ONNX exporter wrote opset 18, not opset_version=99"):
        export_model(small_module, tmp_path / "m.onnx", opset_version=99)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", ["writer", "check"])
def test_a_failed_export_leaves_no_file_and_the_old_one_as_it_was(
    stage, small_module, tmp_path, monkeypatch
):
    from skh2t.export import files

    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def half_write(module, example, path, **options):
        path.write_bytes(b"half")
        raise OSError("disk full")

    def bad_check(*args, **kwargs):
        raise RuntimeError("does not reproduce the model")

    if stage == "writer":
        monkeypatch.setattr(files, "_write_torchscript", half_write)
    else:
        monkeypatch.setattr(files, "_check_file", bad_check)
    with pytest.raises((OSError, RuntimeError)):
        export_model(small_module, target)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_export_path_where_no_file_can_be_created_fails_before_any_work(small_module):
    with pytest.raises(ValueError, match=r"^Cannot write '/proc/model\.pt': "):
        check_export_path("/proc/model.pt")
    with pytest.raises(ValueError, match=r"^Cannot write '/proc/model\.pt': "):
        export_model(small_module, "/proc/model.pt")


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_read_metadata_reads_only_the_record_not_the_program(
    suffix, small_module, tmp_path, monkeypatch
):
    from skh2t.export import metadata

    path = export_model(small_module, tmp_path / f"model{suffix}", check=False)

    def no_program(*args, **kwargs):
        raise AssertionError("the program was loaded")

    monkeypatch.setattr(torch.export, "load", no_program)
    monkeypatch.setattr(torch.jit, "load", no_program)
    assert read_metadata(path) == metadata(small_module)
    (tmp_path / f"text{suffix}").write_text("not an archive")
    with pytest.raises(ValueError, match="not a zip archive"):
        read_metadata(tmp_path / f"text{suffix}")
