"""16-bit image files are scaled to 8 bits, not clipped (Pillow's own conversion clips at 255)."""

import numpy as np
import pytest
from PIL import Image

from skh2t._image_modes import convert_image
from skh2t.datasets import read_images
from skh2t.features.images import as_images

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
