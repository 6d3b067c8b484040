"""Decode image files into one uint8 array."""

import os
from collections.abc import Iterable
from numbers import Integral

import numpy as np
from PIL import Image, UnidentifiedImageError

from skh2t._image_modes import convert_image

_MODES = ("RGB", "L", "RGBA")


def read_images(
    filenames: Iterable[str | os.PathLike[str]],
    *,
    size: int | tuple[int, int] | None = None,
    mode: str = "RGB",
) -> np.ndarray:
    """Decode image files into one array.

    Parameters
    ----------
    filenames : iterable of str or path-like
        The image files, e.g. the ``filenames`` of :func:`load_image_folder`
        or a subset of them.
    size : int or (height, width), default=None
        Resize every image to this size (bilinear). An int means a square.
        If None, all images must already have the same size.
    mode : {"RGB", "L", "RGBA"}, default="RGB"
        The PIL mode every image is converted to: "RGB" gives an array of
        shape (n, height, width, 3), "L" (grayscale) (n, height, width),
        "RGBA" (n, height, width, 4).

    Returns
    -------
    images : ndarray of dtype uint8
        The images, in the order of ``filenames``.

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    IsADirectoryError
        If a path is a directory.
    ValueError
        If a file cannot be decoded, has pixel values out of range (16-bit
        beyond 0..65535; floating point, mode ``"F"``, outside ``[0, 1]`` or
        NaN), or if the images differ in size and ``size`` is None; the
        message names the file.

    Notes
    -----
    16-bit files are scaled to 8 bits (a fraction of 65535), floating-point
    files (mode ``"F"``, e.g. 32-bit float TIFFs) from ``[0, 1]``, as float
    arrays are; Pillow's own conversion would clip both to 255.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from skh2t.datasets import read_images
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = pathlib.Path(tmp.name) / "red.png"
    >>> Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    >>> read_images([path]).shape
    (1, 30, 40, 3)
    >>> read_images([path], size=16, mode="L").shape
    (1, 16, 16)
    >>> tmp.cleanup()
    """
    paths = [os.fspath(path) for path in filenames]
    if not paths:
        raise ValueError("No image files given.")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    size = _check_size(size)
    return _read_all(paths, size, mode)


def _check_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        height, width = (size, size) if isinstance(size, Integral) else size
        valid = all(_is_positive_int(v) for v in (height, width))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}.")
    return int(height), int(width)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


def _read_all(paths: list[str], size: tuple[int, int] | None, mode: str) -> np.ndarray:
    first = _read_one(paths[0], size, mode)
    images = np.empty((len(paths), *first.shape), dtype=np.uint8)
    images[0] = first
    for i, path in enumerate(paths[1:], start=1):
        image = _read_one(path, size, mode)
        if image.shape != first.shape:
            raise ValueError(
                f"Images differ in size: {paths[0]!r} is {first.shape[:2]} but {path!r} is "
                f"{image.shape[:2]} (height, width); pass size=(height, width) to resize."
            )
        images[i] = image
    return images


def _read_one(path: str, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path!r} is a directory, not an image file; load_image_folder(path) lists the "
            "images in it."
        )
    try:
        with Image.open(path) as image:
            image = convert_image(image, mode)
            if size is not None and image.size != size[::-1]:
                image = image.resize(size[::-1], Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"Cannot read image file {path!r}: {exc}") from exc
