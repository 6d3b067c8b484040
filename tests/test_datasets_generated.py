"""Tests of the generated structured tasks: labels read back from the pixels, seeds, errors."""

import numpy as np
import pytest
from scipy import ndimage

from skh2t.datasets import make_scenes, make_sprites
from skh2t.datasets._scenes import (
    COUNT_RANGE,
    DEPTH_RANGE,
    HORIZON,
    N_DISTANCE_BINS,
    distance_bin_edges,
    ground_row,
)
from skh2t.datasets._sprites import N_BINS, SHAPES, SYMMETRY_ORDER


def _bins_touched(low: np.ndarray, high: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The first and last of ``n_bins`` equal bins of [0, 1] that [low, high] touches."""
    first = np.clip(np.floor(low * n_bins), 0, n_bins - 1)
    last = np.clip(np.floor(high * n_bins), 0, n_bins - 1)
    return first, last


def _intensity_moments(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel weights and centred complex coordinates (x right, y up) of a sprite image."""
    weight = image[..., 0].astype(np.float64) / 255
    rows, cols = np.indices(weight.shape) + 0.5
    total = weight.sum()
    cx, cy = (weight * cols).sum() / total, (weight * rows).sum() / total
    return weight, (cols - cx) - 1j * (rows - cy)


@pytest.fixture(scope="module")
def location_sprites():
    return make_sprites(300, task="location", random_state=0)


@pytest.fixture(scope="module")
def orientation_sprites():
    return make_sprites(300, task="orientation", image_size=96, random_state=1)


def test_sprite_location_is_the_centroid_bin(location_sprites):
    images, target = location_sprites.images, location_sprites.target
    size = images.shape[1]
    weight = images[..., 0].astype(np.float64)
    cols = np.arange(size) + 0.5
    centroid = (weight.sum(axis=1) * cols).sum(axis=1) / weight.sum(axis=(1, 2))
    margin = 0.2 * size + 1
    x = (centroid - margin) / (size - 2 * margin)
    tolerance = 0.1 / (size - 2 * margin)  # anti-aliasing moves the centroid by < 0.1 px
    first, last = _bins_touched(x - tolerance, x + tolerance, N_BINS)
    assert np.all((first <= target) & (target <= last))
    assert np.mean(first == last) > 0.8  # the check pins the bin down almost always
    assert set(np.unique(target)) == set(range(N_BINS))


def _orientation_from_pixels(image: np.ndarray, name: str) -> float:
    """Complex moments of order k turn by k * angle: order 2 for the ellipse, 4 for the square,
    3 (mod 120 degrees, disambiguated by order 2) for the heart, whose tip points down at 0."""
    weight, z = _intensity_moments(image)
    phase = {order: np.angle((weight * z**order).sum()) for order in (2, 3, 4)}
    if name == "ellipse":
        return phase[2] / 2
    if name == "square":
        return (phase[4] - np.pi) / 4  # corners at 45 degrees when upright
    candidates = (phase[3] - np.pi / 2) / 3 + 2 * np.pi / 3 * np.arange(3)
    axis_error = np.angle(np.exp(1j * (2 * candidates - phase[2])))
    return candidates[np.argmin(np.abs(axis_error))]


def test_sprite_orientation_is_read_from_the_moments(orientation_sprites):
    sprites = orientation_sprites
    checked = dict.fromkeys(SHAPES, 0)
    for image, label, shape in zip(
        sprites.images, sprites.target, sprites.factors.shape, strict=True
    ):
        name = SHAPES[shape]
        period = 2 * np.pi / SYMMETRY_ORDER[name]
        fraction = (_orientation_from_pixels(image, name) % period) / period
        tolerance = np.deg2rad(1.5 if name != "heart" else 3) / period
        first, last = _bins_touched(fraction - tolerance, fraction + tolerance, N_BINS)
        wraps_up = fraction + tolerance >= 1 and label == 0
        wraps_down = fraction - tolerance < 0 and label == N_BINS - 1
        assert first <= label <= last or wraps_up or wraps_down, (name, label, fraction * N_BINS)
        checked[name] += 1
    assert min(checked.values()) > 50


def test_sprites_stay_inside_and_are_grey():
    images = make_sprites(100, image_size=32, random_state=3).images
    assert images.shape == (100, 32, 32, 3)
    assert np.array_equal(images[..., 0], images[..., 1])
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]])
    assert border.max() == 0
    assert images.max(axis=(1, 2, 3)).min() == 255  # every sprite has a fully covered pixel


def _object_mask(images: np.ndarray) -> np.ndarray:
    """Pixels that differ from the grey floor and wall in hue."""
    return images.max(axis=-1).astype(int) - images.min(axis=-1) > 8


def test_scene_count_is_the_number_of_connected_objects():
    scenes = make_scenes(200, task="count", random_state=0)
    counts = [ndimage.label(mask)[1] for mask in _object_mask(scenes.images)]
    assert np.array_equal(np.array(counts) - COUNT_RANGE[0], scenes.target)
    assert set(np.unique(scenes.target)) == set(range(COUNT_RANGE[1] - COUNT_RANGE[0] + 1))


def test_scene_distance_is_the_bin_of_the_lowest_object():
    """The closest object stands lowest in the image; its base row gives its depth."""
    size = 128
    scenes = make_scenes(200, task="distance", image_size=size, random_state=0)
    lowest_row = np.array(
        [np.flatnonzero(mask.any(axis=1)).max() for mask in _object_mask(scenes.images)]
    )
    # The base lies within the lowest row hit, or just below it (anti-aliasing).
    horizon = HORIZON * size
    scale = (size - 0.5 - horizon) * DEPTH_RANGE[0]
    far, near = scale / (lowest_row - 0.5 - horizon), scale / (lowest_row + 1.5 - horizon)
    edges = distance_bin_edges()
    first = np.searchsorted(edges, near, side="right") - 1
    last = np.searchsorted(edges, far, side="right") - 1
    assert np.all((first <= scenes.target) & (scenes.target <= last))
    assert np.mean(first == last) > 0.6
    assert np.allclose(ground_row(scenes.factors.closest_depth(), size), lowest_row + 0.5, atol=1.5)
    assert set(np.unique(scenes.target)) == set(range(N_DISTANCE_BINS))


def test_scene_floor_is_grey_and_objects_are_apart():
    scenes = make_scenes(50, task="count", random_state=2)
    floor = ~ndimage.binary_dilation(_object_mask(scenes.images), iterations=1, axes=(1, 2))
    pixels = scenes.images[floor]
    assert np.array_equal(pixels[:, 0], pixels[:, 1])
    assert np.array_equal(pixels[:, 1], pixels[:, 2])
    assert np.array_equal(np.bincount(scenes.factors.image, minlength=50), scenes.factors.count)


@pytest.mark.parametrize(
    ("make", "task"),
    [
        (make_sprites, "location"),
        (make_sprites, "orientation"),
        (make_scenes, "count"),
        (make_scenes, "distance"),
    ],
)
def test_a_seed_gives_the_same_images(make, task):
    first = make(30, task=task, random_state=7)
    again = make(30, task=task, random_state=np.random.RandomState(7))
    other = make(30, task=task, random_state=8)
    assert np.array_equal(first.images, again.images)
    assert np.array_equal(first.target, again.target)
    assert not np.array_equal(first.images, other.images)
    images, target = make(30, task=task, random_state=7, return_X_y=True)
    assert np.array_equal(images, first.images)
    assert np.array_equal(target, first.target)
    assert len(first.target_names) > target.max()


@pytest.mark.parametrize("make", [make_sprites, make_scenes])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "scale"}, "task must be one of"),
        ({"n_samples": 0}, "n_samples must be an int >= 1"),
        ({"n_samples": 2.5}, "n_samples must be an int"),
        ({"image_size": 8}, "image_size must be an int"),
    ],
)
def test_bad_arguments_are_named(make, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_a_scene_that_cannot_be_placed_is_an_error_not_a_hang(monkeypatch):
    from skh2t.datasets import _scenes

    monkeypatch.setattr(_scenes, "_SCENE_TRIES", 3)
    monkeypatch.setattr(_scenes, "_place_objects", lambda *args: None)
    with pytest.raises(RuntimeError, match="without overlap in 3 tries at image_size=64"):
        make_scenes(2, random_state=0)
