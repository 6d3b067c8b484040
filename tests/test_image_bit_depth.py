"""16-bit and float image files are scaled, not clipped (Pillow's own conversion clips at 255)."""

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from skh2t._image_modes import convert_image
from skh2t.datasets import read_images
from skh2t.features.images import ImageReadError, as_images, check_image_files

RAMP_12_BIT = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)  # 0 .. 4092


@pytest.fixture
def sixteen_bit_files(tmp_path):
    """A 12-bit ramp and a full 16-bit ramp saved as 16-bit grayscale PNGs (mode I;16)."""
    full = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    paths = []
    for name, values in (("ramp12", RAMP_12_BIT), ("full16", full)):
        path = tmp_path / f"{name}.png"
        Image.fromarray(values).save(path)
        assert Image.open(path).mode == "I;16"
        paths.append(str(path))
    return paths, full


def expected_8_bit(values):
    return np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def test_read_images_scales_16_bit_files(sixteen_bit_files):
    paths, full = sixteen_bit_files
    images = read_images(paths, mode="L")
    np.testing.assert_array_equal(images[0], expected_8_bit(RAMP_12_BIT))
    np.testing.assert_array_equal(images[1], expected_8_bit(full))
    assert images[0].max() == 16  # 4092 / 65535 of white, not clipped to 255
    rgb = read_images(paths[:1])
    np.testing.assert_array_equal(rgb[0], np.repeat(images[0][..., None], 3, axis=2))


def test_the_transformer_reads_16_bit_files_and_images_scaled(sixteen_bit_files):
    paths, full = sixteen_bit_files
    from_files = as_images(paths).batch(0, 2)
    np.testing.assert_array_equal(from_files[1].numpy()[0], expected_8_bit(full))
    from_pil = as_images([Image.open(paths[0])]).batch(0, 1)[0]
    np.testing.assert_array_equal(from_pil.numpy()[0], expected_8_bit(RAMP_12_BIT))
    assert from_pil.shape == (3, 32, 32)


def test_8_bit_modes_are_converted_as_pillow_does():
    rgba = Image.fromarray(np.full((4, 4, 4), 200, dtype=np.uint8), mode="RGBA")
    assert np.array_equal(np.asarray(convert_image(rgba)), np.asarray(rgba.convert("RGB")))


def test_32_bit_integers_beyond_16_bits_are_refused():
    wide = Image.fromarray(np.array([[0, 70_000]], dtype=np.int32))
    assert wide.mode == "I"
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        convert_image(wide)


# --- floating-point images (mode "F", e.g. 32-bit float TIFFs) --------------------------------

FLOAT_RAMP = np.linspace(0.0, 1.0, 24 * 20, dtype=np.float32).reshape(20, 24)


def write_float_tiff(path, values, writer):
    """A one-channel float32 TIFF written by Pillow or by tifffile; Pillow reads both as "F"."""
    if writer == "pillow":
        Image.fromarray(values.astype(np.float32)).save(path)
    else:
        tifffile.imwrite(path, values.astype(np.float32))
    with Image.open(path) as image:
        assert image.mode == "F"
    return str(path)


@pytest.fixture
def float_files(tmp_path):
    return [write_float_tiff(tmp_path / f"{w}.tif", FLOAT_RAMP, w) for w in ("pillow", "tifffile")]


@pytest.fixture(scope="module")
def transformer():
    from skh2t.features import IntermediateFeatureTransformer

    return IntermediateFeatureTransformer(
        backbone="test_resnet", weights=None, image_size=32, target_size=64
    ).fit(np.zeros((2, 20, 24), dtype=np.uint8))


def test_read_images_scales_float_files_from_the_unit_range(float_files):
    images = read_images(float_files, mode="L")
    expected = np.rint(FLOAT_RAMP.astype(np.float64) * 255).astype(np.uint8)
    for image in images:
        np.testing.assert_array_equal(image, expected)
    assert len(np.unique(images)) == 256  # every level, not 0/1 out of 255
    rgb = read_images(float_files[:1])
    np.testing.assert_array_equal(rgb[0], np.repeat(expected[..., None], 3, axis=2))


def test_the_transformer_reads_float_files_and_images_as_the_float_array(float_files, transformer):
    pil = Image.fromarray(FLOAT_RAMP)
    assert pil.mode == "F"
    batch = as_images([*float_files, pil]).batch(0, 3)
    for image in batch:
        assert image.dtype == torch.float32
        np.testing.assert_array_equal(image.numpy()[0], FLOAT_RAMP)
    # A list of the same float32 array: the same tensors through the same code, the same floats.
    same_arrays = transformer.transform([FLOAT_RAMP] * 3)
    np.testing.assert_array_equal(transformer.transform([*float_files, pil]), same_arrays)
    # One (N, H, W) array batch: another code path, equal up to float32 rounding.
    as_array = transformer.transform(np.stack([FLOAT_RAMP] * 3))
    np.testing.assert_allclose(transformer.transform(float_files), as_array[:2], atol=1e-5)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (FLOAT_RAMP * 2, r"outside \[0, 1\] \(from 0 to 2\)"),
        (FLOAT_RAMP - 0.5, r"outside \[0, 1\] \(from -0\.5 to 0\.5\)"),
        (np.where(FLOAT_RAMP > 0.5, np.nan, FLOAT_RAMP), "NaN or infinite"),
        (np.where(FLOAT_RAMP > 0.5, np.inf, FLOAT_RAMP), "NaN or infinite"),
    ],
)
def test_float_images_out_of_range_are_refused_naming_the_image(values, message, tmp_path):
    path = write_float_tiff(tmp_path / "bad.tif", values, "tifffile")
    with pytest.raises(ValueError, match=rf"bad\.tif.*{message}"):
        read_images([path])
    with pytest.raises(ValueError, match=rf"bad\.tif.*{message}"):
        as_images([path]).batch(0, 1)
    with pytest.raises(ValueError, match=rf"X\[1\]: .*{message}"):  # in memory: before any work
        as_images([FLOAT_RAMP, Image.fromarray(values.astype(np.float32))])
    with pytest.raises(ImageReadError, match=rf"bad\.tif.*{message}"):  # the CLI's early check
        check_image_files([write_float_tiff(tmp_path / "good.tif", FLOAT_RAMP, "pillow"), path])


def test_float_images_within_rounding_of_the_unit_range_are_read_as_arrays_are(tmp_path):
    values = FLOAT_RAMP.copy()
    values[0, 0], values[-1, -1] = -1e-4, 1 + 1e-4
    path = write_float_tiff(tmp_path / "rounded.tif", values, "pillow")
    assert read_images([path], mode="L")[0, -1, -1] == 255
    np.testing.assert_array_equal(as_images([path]).batch(0, 1)[0].numpy()[0], values)


def test_integer_files_beyond_16_bits_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, np.array([[0, 70_000]], dtype=np.int32))
    assert Image.open(path).mode == "I"
    with pytest.raises(ValueError, match=r"wide\.tif.*outside 0\.\.65535"):
        read_images([path])
    with pytest.raises(ValueError, match=r"wide\.tif.*outside 0\.\.65535"):
        as_images([path]).batch(0, 1)
    with pytest.raises(ImageReadError, match=r"wide\.tif.*outside 0\.\.65535"):
        check_image_files([path])
