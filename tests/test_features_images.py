"""Image inputs (arrays, paths, PIL images), their validation errors, and preprocessing."""

import numpy as np
import pytest
import torch
from PIL import Image

from skh2t.datasets import read_images
from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.images import ImageArray, ImageList, as_images
from skh2t.features.preprocessing import Preprocessor

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)  # NHWC, not square
GRAY = RNG.integers(0, 256, (3, 20, 24), dtype=np.uint8)


@pytest.fixture(scope="module")
def transformer():
    return IntermediateFeatureTransformer(
        backbone="test_resnet", weights=None, image_size=32, target_size=64
    ).fit(RGB)


# --- accepted formats give the same features ---------------------------------------------------


def test_channels_first_and_last_arrays_agree(transformer):
    reference = transformer.transform(RGB)
    # Bit for bit: every layout becomes the same channels-last float32 batch before any
    # arithmetic (Preprocessor), so the resize and the backbone see the same tensor.
    np.testing.assert_array_equal(transformer.transform(RGB.transpose(0, 3, 1, 2)), reference)
    np.testing.assert_array_equal(transformer.transform(np.asfortranarray(RGB)), reference)


def test_float_images_in_unit_range_match_uint8(transformer):
    reference = transformer.transform(RGB)
    for dtype in (np.float32, np.float64):
        features = transformer.transform(RGB.astype(dtype) / 255)
        np.testing.assert_allclose(features, reference, atol=1e-5)


def test_grayscale_is_expanded_to_three_channels(transformer):
    expanded = np.repeat(GRAY[..., None], 3, axis=-1)
    reference = transformer.transform(expanded)
    for gray in (GRAY, GRAY[..., None], GRAY[:, None]):
        np.testing.assert_array_equal(transformer.transform(gray), reference)


def test_lists_of_pil_images_paths_and_arrays(transformer, tmp_path):
    reference = transformer.transform(RGB)
    paths = []
    for index, image in enumerate(RGB):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image).save(paths[-1])
    np.testing.assert_array_equal(
        transformer.transform([Image.fromarray(i) for i in RGB]), reference
    )
    np.testing.assert_array_equal(transformer.transform(paths), reference)
    np.testing.assert_array_equal(transformer.transform([str(p) for p in paths]), reference)
    np.testing.assert_array_equal(
        transformer.transform(np.array([str(p) for p in paths])), reference
    )
    np.testing.assert_array_equal(transformer.transform(list(RGB)), reference)
    mixed = [paths[0], Image.fromarray(RGB[1]), RGB[2]]
    np.testing.assert_array_equal(transformer.transform(mixed), reference)


def test_lists_may_mix_sizes_and_modes(transformer):
    images = [
        Image.fromarray(GRAY[0]),  # mode L
        Image.fromarray(RNG.integers(0, 256, (50, 10, 4), dtype=np.uint8)),  # RGBA PIL image
        RNG.random((7, 9)),  # float grayscale array
    ]
    features = transformer.transform(images)
    assert features.shape == (3, transformer.taps_[-1].stop)
    expected = transformer.transform(np.repeat(GRAY[:1, ..., None], 3, axis=-1))
    np.testing.assert_allclose(features[:1], expected, atol=1e-5)  # batch of 3 vs 1: rounding


def test_read_only_arrays_are_fine(transformer):
    frozen = RGB.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(transformer.transform(frozen), transformer.transform(RGB))


def test_inputs_are_never_modified(transformer):
    images = RGB.astype(np.float32) / 255
    before = images.copy()
    transformer.transform(images)
    np.testing.assert_array_equal(images, before)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("X", "error", "message"),
    [
        (np.zeros((5, 784)), ValueError, r"batch of images; got a 2-D array of shape \(5, 784\)"),
        (np.zeros((2, 3, 8, 8, 1)), ValueError, "got a 5-D array"),
        (np.zeros((32, 32, 3)), ValueError, r"looks like a single \(H, W, 3\) image"),
        (np.zeros((2, 8, 8, 4), np.uint8), ValueError, "RGBA"),
        (np.zeros((2, 5, 8, 7), np.uint8), ValueError, "no channel axis of size 1 or 3"),
        (np.zeros((0, 8, 8), np.uint8), ValueError, "no images"),
        (np.zeros((2, 8, 8), np.int64), ValueError, "dtype int64; images must be uint8"),
        (np.zeros((2, 8, 8), bool), ValueError, "dtype bool"),
        (np.full((2, 8, 8), np.nan), ValueError, "NaN or infinite"),
        (np.full((2, 8, 8), 16.0), ValueError, r"scaled to \[0, 1\].*\[16, 16\]"),
        (np.full((2, 8, 8), -0.5), ValueError, r"scaled to \[0, 1\]"),
        ([], ValueError, "no images"),
        ([np.zeros((8, 8)), 3], TypeError, r"X\[1\] is a int"),
        ([np.zeros((8, 8, 4), np.uint8)], ValueError, r"X\[0\] is an RGBA image"),
        ([np.zeros((2, 8, 8, 3))], ValueError, r"X\[0\] has shape \(2, 8, 8, 3\)"),
        ([np.full((8, 8), np.inf)], ValueError, r"X\[0\] contains NaN"),
        ("images/", TypeError, "got str"),
        (torch.zeros(2, 3, 8, 8), TypeError, "got Tensor"),
    ],
)
def test_invalid_inputs_fail_clearly(X, error, message):
    with pytest.raises(error, match=message):
        as_images(X)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found"):
        as_images([tmp_path / "missing.png"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    images = as_images([broken])
    with pytest.raises(ValueError, match="Could not read the image file"):
        images.batch(0, 1)


def test_a_directory_is_not_an_image_file(transformer, tmp_path):
    (tmp_path / "good").mkdir()
    message = r"X\[1\]: '.*good' is a directory, not an image file; .*load_image_folder"
    with pytest.raises(IsADirectoryError, match=message):
        as_images([RGB[0], tmp_path / "good"])
    with pytest.raises(IsADirectoryError, match=message):
        transformer.transform([RGB[0], str(tmp_path / "good")])
    with pytest.raises(IsADirectoryError, match=r"'.*good' is a directory, not an image file"):
        read_images([tmp_path / "good"])


def test_tolerates_rounding_just_outside_unit_range(transformer):
    images = RGB.astype(np.float32) / 255
    images[0, 0, 0, 0] = 1.0 + 1e-4
    images[0, 0, 0, 1] = -1e-4
    assert transformer.transform(images).shape[0] == 3


def test_errors_surface_in_fit_and_transform(transformer):
    with pytest.raises(ValueError, match="2-D array"):
        transformer.transform(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="NaN"):
        IntermediateFeatureTransformer(backbone="test_resnet", weights=None).fit(
            np.full((2, 8, 8), np.nan)
        )


# --- batches and preprocessing --------------------------------------------------------------


def test_image_array_batches_are_channels_first_with_the_original_dtype():
    images = as_images(RGB)
    assert isinstance(images, ImageArray)
    batch = images.batch(1, 3)
    assert batch.dtype == torch.uint8
    assert tuple(batch.shape) == (2, 3, 20, 24)
    assert torch.equal(batch[0], torch.from_numpy(RGB[1]).permute(2, 0, 1))
    assert isinstance(as_images(list(RGB)), ImageList)


def test_preprocessor_scales_normalises_and_resizes():
    prep = Preprocessor(size=(20, 24), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    batch = torch.from_numpy(RGB).permute(0, 3, 1, 2)
    out = prep(batch)
    expected = (
        batch.float() / 255 - torch.tensor([0.5, 0.25, 0.0]).view(1, 3, 1, 1)
    ) / torch.tensor([0.5, 0.25, 1.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last)
    resized = Preprocessor(size=(7, 5), mean=(0,) * 3, std=(1,) * 3)(batch)
    assert tuple(resized.shape) == (3, 3, 7, 5)
    assert resized.min() >= 0  # bicubic overshoot is clipped
    assert resized.max() <= 1


def test_preprocessor_downsampling_is_antialiased():
    stripes = torch.zeros(1, 1, 64, 64)
    stripes[..., ::2] = 1.0  # one-pixel stripes average to 0.5 when shrunk
    prep = Preprocessor(size=(8, 8), mean=(0,) * 3, std=(1,) * 3, interpolation="bilinear")
    torch.testing.assert_close(prep(stripes), torch.full((1, 3, 8, 8), 0.5), atol=0.02, rtol=0)


def test_preprocessor_from_data_config_and_dtype():
    config = {
        "input_size": (3, 6, 8),
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
        "interpolation": "random",
    }
    prep = Preprocessor.from_data_config(config)
    assert prep.size == (6, 8)
    out = prep(torch.zeros(2, 3, 12, 16, dtype=torch.uint8), dtype=torch.float64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, torch.full((2, 3, 6, 8), -1.0, dtype=torch.float64))
