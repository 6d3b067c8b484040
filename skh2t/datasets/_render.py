"""Anti-aliased rasterisation of implicit shapes, for the generated data sets."""

from collections.abc import Callable

import numpy as np

# (x, y) pixel coordinates -> inside mask; x to the right, y downwards, pixel
# (row i, column j) covering [j, j + 1) x [i, i + 1).
Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]

SUPERSAMPLING = 4  # sub-pixel samples per pixel and axis


def coverage(
    inside: Inside,
    center: tuple[float, float],
    radius: float,
    size: int,
) -> tuple[slice, slice, np.ndarray]:
    """Fraction of each pixel inside a shape held within ``radius`` of ``center``.

    Returns the rows and columns of the shape's bounding box (clipped to the
    ``size x size`` image) and the coverage in [0, 1] of each of its pixels,
    estimated on a regular grid of ``SUPERSAMPLING**2`` points per pixel.
    """
    x, y = center
    top, bottom = _clip(y - radius, size), _clip(y + radius, size, upper=True)
    left, right = _clip(x - radius, size), _clip(x + radius, size, upper=True)
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING
    ys = (np.arange(top, bottom)[:, None] + offsets).ravel()
    xs = (np.arange(left, right)[:, None] + offsets).ravel()
    mask = inside(xs[None, :], ys[:, None])
    blocks = mask.reshape(bottom - top, SUPERSAMPLING, right - left, SUPERSAMPLING)
    return slice(top, bottom), slice(left, right), blocks.mean(axis=(1, 3))


def _clip(value: float, size: int, *, upper: bool = False) -> int:
    bound = int(np.ceil(value)) if upper else int(np.floor(value))
    return min(max(bound, 0), size)


def rotated(unit_shape: Inside, center: tuple[float, float], radius: float, angle: float) -> Inside:
    """``unit_shape`` (in y-up coordinates, within the unit disc) scaled, rotated, moved.

    ``angle`` in radians, counter-clockwise on the screen.
    """
    cos, sin = np.cos(angle), np.sin(angle)

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        dx, dy = (x - center[0]) / radius, (center[1] - y) / radius
        return unit_shape(cos * dx + sin * dy, cos * dy - sin * dx)

    return inside


def paint(image: np.ndarray, rows: slice, cols: slice, alpha: np.ndarray, colour) -> None:
    """Blend ``colour`` over ``image[rows, cols]`` (float, H x W x 3) with opacity ``alpha``."""
    region = image[rows, cols]
    region += alpha[..., None] * (np.asarray(colour, dtype=np.float64) - region)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
