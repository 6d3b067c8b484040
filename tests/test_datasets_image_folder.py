"""Tests of skh2t.datasets.load_image_folder and read_images."""

import os

import numpy as np
import pytest
from PIL import Image

from skh2t.datasets import (
    IMG_EXTENSIONS,
    load_image_folder,
    read_images,
    stratified_subsample,
)

COLORS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "bird": (0, 0, 255)}


def save(path, color=(10, 20, 30), size=(12, 8), mode="RGB"):
    """Write an image of ``size`` (width, height) filled with ``color``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """cat: 3 images, dog: 2 (one nested), bird: 4, plus files to ignore."""
    root = tmp_path / "pets"
    for i in range(3):
        save(root / "cat" / f"c{i}.png", COLORS["cat"])
    save(root / "dog" / "d0.jpg", COLORS["dog"])
    save(root / "dog" / "puppies" / "d1.PNG", COLORS["dog"])
    for i in range(4):
        save(root / "bird" / f"b{i}.bmp", COLORS["bird"])
    (root / "cat" / "notes.txt").write_text("not an image")
    save(root / "cat" / ".hidden.png")
    save(root / "cat" / ".thumbnails" / "t.png")
    save(root / ".ipynb_checkpoints" / "x.png")
    (root / "README.md").write_text("top-level files are not classes")
    return root


def test_classes_labels_and_order(folder):
    bunch = load_image_folder(folder)
    assert bunch.target_names.tolist() == ["bird", "cat", "dog"]
    assert bunch.target.dtype == np.int64
    assert bunch.target.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert bunch.filenames.tolist() == [
        str(folder / "bird" / "b0.bmp"),
        str(folder / "bird" / "b1.bmp"),
        str(folder / "bird" / "b2.bmp"),
        str(folder / "bird" / "b3.bmp"),
        str(folder / "cat" / "c0.png"),
        str(folder / "cat" / "c1.png"),
        str(folder / "cat" / "c2.png"),
        str(folder / "dog" / "d0.jpg"),
        str(folder / "dog" / "puppies" / "d1.PNG"),
    ]
    assert "images" not in bunch
    assert "Number of Instances: 9" in bunch.DESCR
    assert "Number of Classes: 3" in bunch.DESCR


def test_lazy_by_default(folder):
    (folder / "cat" / "broken.png").write_bytes(b"not a png")
    bunch = load_image_folder(folder)  # nothing decoded: no error
    assert str(folder / "cat" / "broken.png") in bunch.filenames
    with pytest.raises(ValueError, match=r"Cannot read image file .*broken\.png"):
        load_image_folder(folder, load_images=True)


def test_load_images(folder):
    bunch = load_image_folder(folder, load_images=True)
    assert bunch.images.shape == (9, 8, 12, 3)
    assert bunch.images.dtype == np.uint8
    for image, label in zip(bunch.images, bunch.target, strict=True):
        expected = COLORS[bunch.target_names[label]]
        # JPEG is lossy: compare approximately.
        np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), expected, atol=3)


def test_load_images_resized_grayscale(folder):
    X, y = load_image_folder(folder, load_images=True, size=(5, 6), mode="L", return_X_y=True)
    assert X.shape == (9, 5, 6)
    assert y.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]


def test_return_X_y_lazy(folder):
    X, y = load_image_folder(folder, return_X_y=True)
    assert X.dtype == object
    assert X.shape == y.shape == (9,)


def test_different_sizes_need_size(folder):
    save(folder / "cat" / "big.png", size=(30, 20))
    with pytest.raises(ValueError, match=r"Images differ in size.*big\.png.*pass size="):
        load_image_folder(folder, load_images=True)
    bunch = load_image_folder(folder, load_images=True, size=7)
    assert bunch.images.shape == (10, 7, 7, 3)


def test_extensions(folder):
    # Without the leading dot, case-insensitive: dog keeps d1.PNG, loses d0.jpg.
    bunch = load_image_folder(folder, extensions=["png", ".BMP"])
    assert bunch.target.tolist() == [0, 0, 0, 0, 1, 1, 1, 2]
    assert bunch.filenames[-1].endswith("d1.PNG")
    assert len(load_image_folder(folder, extensions=".jpg", categories=["dog"]).target) == 1


def test_categories(folder):
    bunch = load_image_folder(folder, categories=["dog", "bird"])
    assert bunch.target_names.tolist() == ["bird", "dog"]
    assert bunch.target.tolist() == [0, 0, 0, 0, 1, 1]
    with pytest.raises(FileNotFoundError, match=r"Categories \['fish'\] not found.*available"):
        load_image_folder(folder, categories=["cat", "fish"])
    with pytest.raises(ValueError, match="categories must not be empty"):
        load_image_folder(folder, categories=[])


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        load_image_folder(tmp_path / "nope")
    save(tmp_path / "file.png")
    with pytest.raises(FileNotFoundError, match="does not exist or is not a folder"):
        load_image_folder(tmp_path / "file.png")


def test_no_class_subfolders(tmp_path):
    save(tmp_path / "a.png")
    (tmp_path / ".git").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No class sub-folders in .*one sub-folder"):
        load_image_folder(tmp_path)


def test_empty_class(folder):
    (folder / "fish").mkdir()
    (folder / "fish" / "readme.txt").write_text("no images yet")
    with pytest.raises(FileNotFoundError, match=r"No image files .* sub-folder\(s\) \['fish'\]"):
        load_image_folder(folder)
    with pytest.raises(FileNotFoundError, match=r"\['bird', 'fish'\]"):
        load_image_folder(folder, extensions=[".png", ".jpg"])


def test_empty_extensions(folder):
    with pytest.raises(ValueError, match="extensions must not be empty"):
        load_image_folder(folder, extensions=[])


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_symlink_loop_terminates(folder):
    os.symlink(folder / "cat", folder / "cat" / "loop")
    bunch = load_image_folder(folder)
    assert len(bunch.target) == 9


def test_subsample_then_read(folder):
    bunch = load_image_folder(folder)
    idx = stratified_subsample(bunch.target, n_per_class=2, random_state=0)
    images = read_images(bunch.filenames[idx], size=4)
    assert images.shape == (6, 4, 4, 3)
    assert np.bincount(bunch.target[idx]).tolist() == [2, 2, 2]


def test_read_images_modes(tmp_path):
    path = save(tmp_path / "a.png", (1, 2, 3), size=(5, 4))
    assert read_images([path]).shape == (1, 4, 5, 3)
    assert read_images([str(path)], mode="L").shape == (1, 4, 5)
    rgba = read_images((p for p in [path, path]), mode="RGBA")  # any iterable
    assert rgba.shape == (2, 4, 5, 4)
    np.testing.assert_array_equal(rgba[0, 0, 0], [1, 2, 3, 255])
    gray = save(tmp_path / "g.png", 7, mode="L")
    np.testing.assert_array_equal(read_images([gray])[0, 0, 0], [7, 7, 7])


@pytest.mark.parametrize("size", [0, -3, (4,), (4, 0), (4, 2.5), "4", True, (4, 4, 4)])
def test_read_images_invalid_size(tmp_path, size):
    path = save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="size must be a positive int or"):
        read_images([path], size=size)


def test_read_images_errors(tmp_path):
    with pytest.raises(ValueError, match="No image files given"):
        read_images([])
    path = save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="mode must be one of"):
        read_images([path], mode="CMYK")
    with pytest.raises(FileNotFoundError):
        read_images([tmp_path / "missing.png"])
    truncated = tmp_path / "t.png"
    truncated.write_bytes(path.read_bytes()[:30])
    with pytest.raises(ValueError, match=r"Cannot read image file .*t\.png"):
        read_images([truncated])


def test_default_extensions():
    assert ".png" in IMG_EXTENSIONS
    assert ".jpeg" in IMG_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMG_EXTENSIONS)
