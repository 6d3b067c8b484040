"""CLEVR-style scenes: a few shaded objects on a grey floor, with count and distance tasks."""

from dataclasses import dataclass

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._descr import SCENES as _DESCR
from ._generated import check_arguments, generated_data
from ._render import coverage, paint, to_uint8

OBJECT_SHAPES = ("sphere", "cube", "cylinder")
# CLEVR's colours but grey, which the floor is: objects differ from it in hue.
COLOURS = {
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 150, 44),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 190, 190),
    "yellow": (225, 200, 45),
}
SIZES = {"small": 0.07, "large": 0.11}  # object radius at depth 1, in image widths
SCENE_TASKS = ("count", "distance")
COUNT_RANGE = (3, 10)  # objects per scene of the count task, inclusive (8 classes)
DISTANCE_COUNT_RANGE = (3, 6)  # objects per scene of the distance task
N_DISTANCE_BINS = 6
DEPTH_RANGE = (1.0, 3.0)
HORIZON = 0.3  # row of the horizon, in image heights
_PLACEMENT_TRIES = 200  # random positions tried per object before the scene is redrawn
_SCENE_TRIES = 1000  # redrawn scenes before giving up (a few are ever needed)


@dataclass(frozen=True)
class SceneFactors:
    """The objects of generated scenes: one entry per object, over all images.

    Attributes
    ----------
    image : ndarray of int
        The image the object is in.
    shape, colour, size : ndarray of int
        Indices into :data:`OBJECT_SHAPES`, ``list(COLOURS)`` and ``list(SIZES)``.
    depth : ndarray of float
        Distance from the camera, in :data:`DEPTH_RANGE`: the object stands on
        the floor with its base on row ``ground_row(depth, image_size)``.
    x : ndarray of float
        Column of the object's centre, in pixels.
    count : ndarray of int
        Objects per image.
    """

    image: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    depth: np.ndarray
    x: np.ndarray
    count: np.ndarray

    def closest_depth(self) -> np.ndarray:
        """Depth of each image's closest object."""
        closest = np.full(len(self.count), np.inf)
        np.minimum.at(closest, self.image, self.depth)
        return closest


def ground_row(depth: np.ndarray | float, image_size: int) -> np.ndarray | float:
    """The row (continuous, downwards) where the floor at ``depth`` is seen.

    A pinhole camera above a flat floor: rows below the horizon map to depth
    as ``1 / depth``; depth 1 is the bottom of the image (less half a pixel).
    """
    horizon = HORIZON * image_size
    return horizon + (image_size - 0.5 - horizon) * DEPTH_RANGE[0] / np.asarray(depth)


def distance_bin_edges() -> np.ndarray:
    """Depths bounding the classes of the distance task, nearest first.

    The bins are equally wide in ``1 / depth``, hence in image rows: each
    covers the same height of the floor in the image.
    """
    near, far = DEPTH_RANGE
    return 1 / np.linspace(1 / near, 1 / far, N_DISTANCE_BINS + 1)


def make_scenes(
    n_samples: int = 1000,
    *,
    task: str = "count",
    image_size: int = 64,
    random_state: int | np.random.RandomState | None = None,
    return_X_y: bool = False,
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Generate CLEVR-style scenes for a structured classification task.

    Each image shows a few objects (shaded spheres, cubes and cylinders in
    seven colours and two sizes) standing on a grey floor seen by a pinhole
    camera: farther objects are smaller and higher in the image. Objects never
    overlap in the image. As in VTAB's CLEVR tasks, the label is:

    - ``"count"``: the number of objects, 3 to 10 (8 classes; label ``n - 3``);
    - ``"distance"``: the depth bin of the closest object (6 classes, nearest
      first; :func:`distance_bin_edges`), in scenes of 3 to 6 objects.

    The label is drawn first (balanced classes in expectation), then the
    scene: for ``"distance"`` the closest object's depth within its bin and
    the others' beyond it. A seed gives the same images.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of images.
    task : {"count", "distance"}, default="count"
        The label.
    image_size : int, default=64
        Images are ``image_size x image_size``. At least 32.
    random_state : int, RandomState instance or None, default=None
        Pass an int for reproducible output.
    return_X_y : bool, default=False
        If True, return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        images : ndarray of shape (n_samples, image_size, image_size, 3), uint8
            The images.
        target : ndarray of shape (n_samples,), int64
            The class: the number of objects minus 3, or the distance bin.
        target_names : ndarray
            ``"3"`` to ``"10"`` objects, or the depth ranges.
        factors : :class:`SceneFactors`
            Every object's image, shape, colour, size, depth and position.
        task : str
            The task.
        DESCR : str
            Description of the data set.

    (images, target) : tuple if ``return_X_y`` is True

    See Also
    --------
    make_sprites : dSprites-style images (location, orientation).

    Examples
    --------
    >>> from skh2t.datasets import make_scenes
    >>> scenes = make_scenes(10, task="count", random_state=0)
    >>> scenes.images.shape
    (10, 64, 64, 3)
    >>> bool((scenes.factors.count == scenes.target + 3).all())
    True
    """
    n_samples, image_size = check_arguments(n_samples, task, image_size, SCENE_TASKS, 32)
    rng = check_random_state(random_state)
    n_classes = COUNT_RANGE[1] - COUNT_RANGE[0] + 1 if task == "count" else N_DISTANCE_BINS
    target = rng.randint(n_classes, size=n_samples)
    scenes = [_draw_scene(rng, task, label, image_size) for label in target]
    factors = _factors(scenes)
    images = np.stack([_render(scene, image_size) for scene in scenes])
    return generated_data(
        images,
        target,
        target_names=_target_names(task),
        factors=factors,
        task=task,
        descr=_DESCR,
        return_X_y=return_X_y,
    )


@dataclass(frozen=True)
class _Object:
    shape: int
    colour: int
    size: int
    depth: float
    x: float
    radius: float  # in pixels

    def box(self, image_size: int) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) in pixels, one pixel of margin around."""
        half_width = self.radius
        bottom = float(ground_row(self.depth, image_size))
        return (
            self.x - half_width - 1,
            bottom - 2 * self.radius - 1,
            self.x + half_width + 1,
            bottom + 1,
        )


def _draw_scene(rng: np.random.RandomState, task: str, label: int, size: int) -> list[_Object]:
    for _ in range(_SCENE_TRIES):  # a seeded retry: deterministic
        if task == "count":
            n, nearest = label + COUNT_RANGE[0], None
        else:
            n = rng.randint(DISTANCE_COUNT_RANGE[0], DISTANCE_COUNT_RANGE[1] + 1)
            edges = 1 / distance_bin_edges()
            nearest = 1 / rng.uniform(edges[label + 1], edges[label])
        scene = _place_objects(rng, n, nearest, size)
        if scene is not None:
            return scene
    raise RuntimeError(
        f"Could not place the objects of a {task} scene (label {label}) without overlap "
        f"in {_SCENE_TRIES} tries at image_size={size}."
    )


def _place_objects(
    rng: np.random.RandomState, n: int, nearest: float | None, size: int
) -> list[_Object] | None:
    placed: list[_Object] = []
    for i in range(n):
        depth_low = DEPTH_RANGE[0] if nearest is None else nearest
        for _ in range(_PLACEMENT_TRIES):
            depth = (
                nearest
                if (i == 0 and nearest is not None)
                else rng.uniform(depth_low, DEPTH_RANGE[1])
            )
            candidate = _random_object(rng, depth, size)
            if not any(_overlap(candidate.box(size), other.box(size)) for other in placed):
                placed.append(candidate)
                break
        else:
            return None
    return placed


def _random_object(rng: np.random.RandomState, depth: float, size: int) -> _Object:
    shape, colour, size_index = (
        rng.randint(k) for k in (len(OBJECT_SHAPES), len(COLOURS), len(SIZES))
    )
    radius = list(SIZES.values())[size_index] * size / depth
    x = rng.uniform(radius + 1, size - radius - 1)
    return _Object(shape, colour, size_index, depth, x, radius)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _factors(scenes: list[list[_Object]]) -> SceneFactors:
    objects = [(i, obj) for i, scene in enumerate(scenes) for obj in scene]

    def column(name: str, dtype: type) -> np.ndarray:
        return np.array([getattr(obj, name) for _, obj in objects], dtype=dtype)

    return SceneFactors(
        image=np.array([i for i, _ in objects], dtype=np.int64),
        shape=column("shape", np.int64),
        colour=column("colour", np.int64),
        size=column("size", np.int64),
        depth=column("depth", np.float64),
        x=column("x", np.float64),
        count=np.array([len(scene) for scene in scenes], dtype=np.int64),
    )


def _render(scene: list[_Object], size: int) -> np.ndarray:
    image = _background(size)
    for obj in sorted(scene, key=lambda o: -o.depth):  # far to near
        _draw_object(image, obj, size)
    return to_uint8(image)


def _background(size: int) -> np.ndarray:
    """A dark wall above the horizon, a floor getting lighter towards the camera; grey."""
    rows = (np.arange(size) + 0.5) / size
    floor = 110 + 70 * np.clip((rows - HORIZON) / (1 - HORIZON), 0, 1)
    level = np.where(rows < HORIZON, 80 + 20 * rows / HORIZON, floor)
    return np.repeat(np.repeat(level[:, None, None], size, axis=1), 3, axis=2)


def _draw_object(image: np.ndarray, obj: _Object, size: int) -> None:
    r = obj.radius
    bottom = float(ground_row(obj.depth, size))
    cx, cy = obj.x, bottom - r
    inside = _SHAPE_MASKS[OBJECT_SHAPES[obj.shape]](cx, cy, r)
    rows, cols, alpha = coverage(inside, (cx, cy), r * np.sqrt(2) + 1, size)
    ys = np.arange(rows.start, rows.stop)[:, None] + 0.5
    xs = np.arange(cols.start, cols.stop)[None, :] + 0.5
    light = 1 - 0.45 * np.clip(np.hypot(xs - (cx - 0.4 * r), ys - (cy - 0.4 * r)) / (2 * r), 0, 1)
    colour = np.asarray(list(COLOURS.values())[obj.colour], dtype=np.float64)
    paint(image, rows, cols, alpha, light[..., None] * colour)


def _sphere(cx: float, cy: float, r: float):
    return lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 <= r**2


def _cube(cx: float, cy: float, r: float):
    half = 0.85 * r  # a cube as wide as the sphere is heavy looks right
    return lambda x, y: (np.abs(x - cx) <= half) & (y >= cy + r - 2 * half) & (y <= cy + r)


def _cylinder(cx: float, cy: float, r: float):
    """A body of width 1.6 r from the base up to a cap (an ellipse) at height 2 r."""
    half, cap = 0.8 * r, 0.3 * r
    top = cy - r + cap

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        body = (np.abs(x - cx) <= half) & (y >= top) & (y <= cy + r - cap)
        ends = ((x - cx) / half) ** 2 + ((y - top) / cap) ** 2 <= 1
        base = ((x - cx) / half) ** 2 + ((y - (cy + r - cap)) / cap) ** 2 <= 1
        return body | ends | base

    return inside


_SHAPE_MASKS = {"sphere": _sphere, "cube": _cube, "cylinder": _cylinder}


def _target_names(task: str) -> list[str]:
    if task == "count":
        return [str(n) for n in range(COUNT_RANGE[0], COUNT_RANGE[1] + 1)]
    edges = distance_bin_edges()
    return [
        f"closest depth in [{edges[k]:.2f}, {edges[k + 1]:.2f})" for k in range(N_DISTANCE_BINS)
    ]
