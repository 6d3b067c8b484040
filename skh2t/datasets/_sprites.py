"""dSprites-style images: one white shape on black, with location and orientation tasks."""

from dataclasses import dataclass
from functools import cache

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._descr import SPRITES as _DESCR
from ._generated import check_arguments, generated_data
from ._render import coverage, rotated, to_uint8

SHAPES = ("square", "ellipse", "heart")
# Rotations that map a shape onto itself: its orientation is defined modulo this period.
SYMMETRY_ORDER = {"square": 4, "ellipse": 2, "heart": 1}
SPRITE_TASKS = ("location", "orientation")
N_BINS = 16
SCALE_RANGE = (0.5, 1.0)
_RADIUS = 0.2  # bounding radius of a scale-1 sprite, in image widths


@dataclass(frozen=True)
class SpriteFactors:
    """The latent factors of generated sprites, one entry per image.

    Attributes
    ----------
    shape : ndarray of int
        Index into :data:`SHAPES` ("square", "ellipse", "heart").
    scale : ndarray of float
        In [0.5, 1]: the sprite's bounding radius is ``scale * 0.2 * image_size``.
    orientation : ndarray of float
        Counter-clockwise rotation in radians, in ``[0, 2 pi / k)`` for a shape
        with ``k``-fold symmetry (``SYMMETRY_ORDER``): 0 is a square with
        horizontal sides, an ellipse with a horizontal major axis, a heart with
        its tip pointing down.
    x, y : ndarray of float
        Position of the sprite's centroid in [0, 1], left to right and top to
        bottom, over the range of centres that keeps every sprite inside:
        ``margin + x * (image_size - 2 * margin)`` pixels with
        ``margin = 0.2 * image_size + 1``.
    center : ndarray of shape (n, 2)
        The centroid in pixels: ``(column, row)`` coordinates, pixel ``(i, j)``
        covering ``[j, j + 1) x [i, i + 1)``.
    """

    shape: np.ndarray
    scale: np.ndarray
    orientation: np.ndarray
    x: np.ndarray
    y: np.ndarray
    center: np.ndarray


def make_sprites(
    n_samples: int = 1000,
    *,
    task: str = "location",
    image_size: int = 64,
    random_state: int | np.random.RandomState | None = None,
    return_X_y: bool = False,
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Generate dSprites-style images for a structured classification task.

    Each image is one white shape (square, ellipse or heart) on black, with a
    random scale, orientation and position, anti-aliased. As in VTAB's
    dSprites tasks, the label is one factor binned into 16 classes:

    - ``"location"``: the horizontal position of the sprite's centroid;
    - ``"orientation"``: the rotation, binned over the shape's own symmetry
      period (90 degrees for the square, 180 for the ellipse, 360 for the
      heart), so that every label can be read from the pixels.

    The labelled factor is drawn bin first, so the classes are balanced in
    expectation; the other factors are uniform. A seed gives the same images.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of images.
    task : {"location", "orientation"}, default="location"
        The factor that is the label.
    image_size : int, default=64
        Images are ``image_size x image_size`` (dSprites: 64). At least 16.
    random_state : int, RandomState instance or None, default=None
        Pass an int for reproducible output.
    return_X_y : bool, default=False
        If True, return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        images : ndarray of shape (n_samples, image_size, image_size, 3), uint8
            Grey-level images stored as RGB (the three channels are equal).
        target : ndarray of shape (n_samples,), int64
            The bin, 0 to 15.
        target_names : ndarray of shape (16,)
            The bins' ranges.
        factors : :class:`SpriteFactors`
            Every image's shape, scale, orientation and position.
        task : str
            The task.
        DESCR : str
            Description of the data set.

    (images, target) : tuple if ``return_X_y`` is True

    See Also
    --------
    make_scenes : CLEVR-style scenes of several objects (counting, distance).

    Examples
    --------
    >>> from skh2t.datasets import make_sprites
    >>> sprites = make_sprites(20, task="orientation", random_state=0)
    >>> sprites.images.shape, sprites.target.tolist()[:5]
    ((20, 64, 64, 3), [12, 15, 5, 0, 3])
    >>> str(sprites.target_names[0])
    'orientation in [0/16, 1/16) of the period'
    """
    n_samples, image_size = check_arguments(n_samples, task, image_size, SPRITE_TASKS, 16)
    rng = check_random_state(random_state)
    target = rng.randint(N_BINS, size=n_samples)
    factors = _draw_factors(rng, n_samples, image_size, task, target)
    images = np.stack([_render(factors, i, image_size) for i in range(n_samples)])
    return generated_data(
        images,
        target,
        target_names=_target_names(task),
        factors=factors,
        task=task,
        descr=_DESCR,
        return_X_y=return_X_y,
    )


def _draw_factors(
    rng: np.random.RandomState, n: int, size: int, task: str, target: np.ndarray
) -> SpriteFactors:
    shape = rng.randint(len(SHAPES), size=n)
    scale = rng.uniform(*SCALE_RANGE, size=n)
    within_bin = (target + rng.uniform(size=n)) / N_BINS
    period = 2 * np.pi / np.array([SYMMETRY_ORDER[name] for name in SHAPES])[shape]
    fraction = within_bin if task == "orientation" else rng.uniform(size=n)
    x = within_bin if task == "location" else rng.uniform(size=n)
    y = rng.uniform(size=n)
    margin = _RADIUS * size + 1
    center = margin + np.stack([x, y], axis=1) * (size - 2 * margin)
    return SpriteFactors(shape, scale, fraction * period, x, y, center)


def _render(factors: SpriteFactors, i: int, size: int) -> np.ndarray:
    unit_shape = _UNIT_SHAPES[SHAPES[factors.shape[i]]]
    center = tuple(factors.center[i])
    radius = factors.scale[i] * _RADIUS * size
    inside = rotated(unit_shape, center, radius, factors.orientation[i])
    rows, cols, alpha = coverage(inside, center, radius, size)
    image = np.zeros((size, size), dtype=np.float64)
    image[rows, cols] = 255 * alpha
    return np.repeat(to_uint8(image)[..., None], 3, axis=2)


def _target_names(task: str) -> list[str]:
    if task == "location":
        return [f"x in [{k}/{N_BINS}, {k + 1}/{N_BINS})" for k in range(N_BINS)]
    return [f"orientation in [{k}/{N_BINS}, {k + 1}/{N_BINS}) of the period" for k in range(N_BINS)]


# Unit shapes: y up, centroid at the origin, farthest point at distance 1.
def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= np.sqrt(0.5)


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u**2 + (2 * v) ** 2 <= 1


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    offset, extent = _heart_frame()
    x, y = u * extent, v * extent + offset
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


@cache
def _heart_frame() -> tuple[float, float]:
    """Centroid height and farthest distance from it of the curve ``(x²+y²-1)³ = x²y³``."""
    grid = np.linspace(-1.5, 1.5, 1501)
    x, y = np.meshgrid(grid, grid)
    inside = (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    offset = float(y[inside].mean())
    return offset, float(np.hypot(x[inside], y[inside] - offset).max())


_UNIT_SHAPES = {"square": _square, "ellipse": _ellipse, "heart": _heart}
