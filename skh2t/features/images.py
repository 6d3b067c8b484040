"""Validate image inputs and hand them out in batches of raw tensors.

Accepted inputs:

- a NumPy array of ``uint8`` or floating images scaled to ``[0, 1]``, shaped
  ``(N, H, W)`` (grayscale), ``(N, H, W, C)`` or ``(N, C, H, W)`` with ``C`` 1 or 3
  (channels-last wins when both axes could be channels);
- a list (or 1-D object array) of file paths, PIL images or single-image arrays
  ``(H, W)`` / ``(H, W, C)``, which may differ in size. Files and PIL images
  of 16-bit modes are scaled to 8 bits (``skh2t._image_modes.convert_image``);
  mode ``"F"`` (e.g. float TIFFs) is read as its floats, which must be in
  ``[0, 1]`` as a float array's.

Batches are raw: ``uint8`` or float, 1 or 3 channels, channels first. Resizing,
scaling and normalisation are the job of :mod:`skh2t.features.preprocessing`.

Every image also has a content digest (:meth:`ImageArray.digests`), which keys
the feature cache: a hash of its pixels, channels first, with their dtype and
shape, or of a file's bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import PIL
import torch
from PIL import Image

from skh2t._image_modes import FLOAT_TOLERANCE, check_pixel_range, convert_image, float_pixels

_CHANNELS = (1, 3)
_DIGEST_BYTES = 16
_READ_CHUNK = 1 << 20
#: Bump when the pixels decoded from a file's bytes change (a file's digest keys its features).
_DECODING = 2
_ACCEPTED = (
    "a NumPy array of images shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}, "
    "dtype uint8 or float in [0, 1]; or a list of file paths, PIL images or (H, W[, C]) arrays"
)


class ImageArray:
    """A validated NumPy batch of same-sized images.

    Parameters
    ----------
    array : numpy.ndarray
        See the module docstring for the accepted shapes and dtypes.
    """

    def __init__(self, array: np.ndarray) -> None:
        _check_dtype(array, "X")
        if array.shape[0] == 0:
            raise ValueError(f"X contains no images (shape {array.shape}).")
        self.channels_last = _channels_last(array)
        _check_values(array, "X")
        self._array = array

    def __len__(self) -> int:
        return self._array.shape[0]

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Images ``start:stop`` as a ``(B, C, H, W)`` tensor with their original dtype."""
        chunk = self._array[start:stop]
        if not chunk.flags.writeable:
            chunk = chunk.copy()
        images = torch.from_numpy(np.ascontiguousarray(chunk))
        if images.dim() == 3:
            return images.unsqueeze(1)
        return images.permute(0, 3, 1, 2) if self.channels_last else images

    def take(self, indices: Sequence[int] | np.ndarray) -> ImageArray:
        """The images at ``indices``, in that order (already validated)."""
        taken = object.__new__(ImageArray)
        taken.channels_last = self.channels_last
        taken._array = self._array[np.asarray(indices, dtype=np.intp)]
        return taken

    def digests(self) -> list[str]:
        """A hash of every image's pixels (channels first), dtype and shape.

        The same pixels give the same digest whatever the array layout.

        Examples
        --------
        >>> gray = np.zeros((2, 8, 8), dtype=np.uint8)
        >>> a, b = ImageArray(gray).digests()
        >>> a == b, a == ImageArray(gray[..., None]).digests()[0]
        (True, True)
        >>> a == ImageArray(gray.astype(np.float32)).digests()[0]
        False
        """
        return [_pixel_digest(self._channels_first(index)) for index in range(len(self))]

    def _channels_first(self, index: int) -> np.ndarray:
        image = self._array[index]
        if image.ndim == 2:
            return image[np.newaxis]
        return np.moveaxis(image, -1, 0) if self.channels_last else image


class ImageList:
    """A validated list of images that are read one by one (and may differ in size).

    Parameters
    ----------
    items : sequence
        File paths (``str`` or ``os.PathLike``), PIL images or ``(H, W[, C])`` arrays.
    """

    def __init__(self, items: Sequence[object]) -> None:
        if len(items) == 0:
            raise ValueError("X contains no images (an empty list).")
        for position, item in enumerate(items):
            _check_item(item, position)
        self._items = list(items)

    def __len__(self) -> int:
        return len(self._items)

    def batch(self, start: int, stop: int) -> list[torch.Tensor]:
        """Images ``start:stop`` as ``(C, H, W)`` tensors with their original dtype."""
        return [_item_tensor(item) for item in self._items[start:stop]]

    def take(self, indices: Sequence[int] | np.ndarray) -> ImageList:
        """The images at ``indices``, in that order (already validated)."""
        taken = object.__new__(ImageList)
        taken._items = [self._items[index] for index in np.asarray(indices, dtype=np.intp)]
        return taken

    def digests(self) -> list[str]:
        """A hash of every image: a file's bytes (and the Pillow version that decodes
        them), or the pixels of a PIL image or array as :meth:`batch` hands them out.

        Files are hashed without being decoded.
        """
        return [_item_digest(item) for item in self._items]


def as_images(X: object) -> ImageArray | ImageList:
    """Validate ``X`` as a batch of images.

    Raises ``ValueError`` or ``TypeError`` that say what is wrong and what is accepted.

    Examples
    --------
    >>> import numpy as np
    >>> images = as_images(np.zeros((5, 28, 28), dtype=np.uint8))
    >>> len(images), tuple(images.batch(0, 2).shape)
    (5, (2, 1, 28, 28))
    >>> as_images(np.zeros((5, 784)))
    Traceback (most recent call last):
    ...
    ValueError: X must be a batch of images; got a 2-D array of shape (5, 784). ...
    """
    if isinstance(X, (ImageArray, ImageList)):
        return X
    if isinstance(X, (list, tuple)):
        return ImageList(X)
    if isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype.kind in "OUS":
        return ImageList(list(X))
    if not isinstance(X, np.ndarray):
        raise TypeError(f"X must be {_ACCEPTED}; got {type(X).__name__}.")
    if X.ndim not in (3, 4):
        raise ValueError(
            f"X must be a batch of images; got a {X.ndim}-D array of shape {X.shape}. "
            f"Expected {_ACCEPTED}."
        )
    return ImageArray(X)


def _channels_last(array: np.ndarray) -> bool:
    if array.ndim == 3:
        if array.shape[-1] in (3, 4):
            raise ValueError(
                f"X has shape {array.shape}, which looks like a single (H, W, {array.shape[-1]}) "
                "image rather than a batch of grayscale images; pass a batch, e.g. X[np.newaxis]."
            )
        return False
    if array.shape[-1] in _CHANNELS:
        return True
    if array.shape[1] in _CHANNELS:
        return False
    if 4 in (array.shape[1], array.shape[-1]):
        raise ValueError(
            f"X has shape {array.shape}: 4-channel (RGBA) images are not supported; drop the "
            "alpha channel, e.g. X[..., :3]."
        )
    raise ValueError(
        f"X has shape {array.shape}, with no channel axis of size 1 or 3 (neither axis 1 nor "
        f"the last). Expected {_ACCEPTED}."
    )


def _check_dtype(array: np.ndarray, what: str) -> None:
    if array.dtype == np.uint8 or np.issubdtype(array.dtype, np.floating):
        return
    raise ValueError(
        f"{what} has dtype {array.dtype}; images must be uint8 (0-255) or floating point scaled "
        "to [0, 1]. Convert, e.g. X.astype(np.uint8) or X / 255."
    )


def _check_values(array: np.ndarray, what: str) -> None:
    if array.dtype == np.uint8:
        return
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contains NaN or infinite values.")
    low, high = float(array.min()), float(array.max())
    if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
        raise ValueError(
            f"Floating-point images must be scaled to [0, 1]; {what} ranges over "
            f"[{low:g}, {high:g}]. Rescale it (e.g. X / X.max() or X / 255) or pass uint8."
        )


def _check_item(item: object, position: int) -> None:
    what = f"X[{position}]"
    if isinstance(item, (str, os.PathLike)):
        if os.path.isdir(item):
            raise IsADirectoryError(
                f"{what}: {os.fspath(item)!r} is a directory, not an image file; pass the files "
                "in it, e.g. skh2t.datasets.load_image_folder(path).filenames."
            )
        if not os.path.isfile(item):
            raise FileNotFoundError(f"{what}: image file not found: {os.fspath(item)!r}.")
    elif isinstance(item, np.ndarray):
        _check_single_array(item, what)
    elif isinstance(item, Image.Image):
        try:
            check_pixel_range(item)
        except ValueError as error:
            raise ValueError(f"{what}: {error}") from None
    else:
        raise TypeError(
            f"{what} is a {type(item).__name__}; list items must be file paths, PIL images or "
            "(H, W[, C]) arrays."
        )


def _check_single_array(image: np.ndarray, what: str) -> None:
    if image.ndim == 3 and image.shape[-1] == 4:
        raise ValueError(f"{what} is an RGBA image; drop the alpha channel, e.g. image[..., :3].")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in _CHANNELS):
        raise ValueError(
            f"{what} has shape {image.shape}; a single image must be (H, W) or (H, W, C) "
            "with C in {1, 3}."
        )
    _check_dtype(image, what)
    _check_values(image, what)


def _item_tensor(item: object) -> torch.Tensor:
    if isinstance(item, (str, os.PathLike)):
        item = _read_file(item)
    elif isinstance(item, Image.Image):
        item = _pixels(item)
    image = torch.from_numpy(np.array(item, copy=True))
    return image.unsqueeze(0) if image.dim() == 2 else image.permute(2, 0, 1)


def _item_digest(item: object) -> str:
    if isinstance(item, (str, os.PathLike)):
        return _file_digest(item)
    return _pixel_digest(_item_tensor(item).numpy())


def _pixel_digest(image: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    digest.update(f"pixels:{image.dtype.str}:{image.shape};".encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def _file_digest(path: str | os.PathLike) -> str:
    # A decoder upgrade could decode the same bytes differently: Pillow's version is hashed too.
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    digest.update(f"file:Pillow {PIL.__version__};decoding {_DECODING};".encode())
    with open(path, "rb") as file:
        while chunk := file.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ImageReadError(ValueError):
    """An image file that cannot be opened or decoded."""


def check_image_files(paths: Sequence[str | os.PathLike]) -> None:
    """Raise :class:`ImageReadError` naming the first file that is not a readable image.

    Every file is opened and checked without decoding its pixels (Pillow's
    ``verify``: a file's structure and, for PNG, its checksums), so that a
    broken file in a folder is reported before any extraction starts. A file
    whose pixels are damaged past its structure is still reported, by name,
    when it is decoded. Files of 16-bit or floating-point modes (``"I;16"``,
    ``"I"``, ``"F"``) are decoded too, and refused if their values are out of
    range (16-bit beyond 0..65535; floating point outside ``[0, 1]``, NaN or
    infinite).

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        Image files.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "broken.png")
    >>> with open(path, "wb") as file:
    ...     _ = file.write(b"not an image")
    >>> check_image_files([path])
    Traceback (most recent call last):
    ...
    skh2t.features.images.ImageReadError: Could not read the image file '...broken.png': ...
    """
    for path in paths:
        try:
            with Image.open(path) as image:
                mode = image.mode
                image.verify()
            if mode == "F" or mode.startswith("I"):  # rare modes whose values can be out of range
                with Image.open(path) as image:
                    check_pixel_range(image)
        except (OSError, SyntaxError, ValueError) as error:  # verify raises all three
            raise _read_error(path, error) from error


def _read_file(path: str | os.PathLike) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return _pixels(image)
    except (OSError, ValueError) as error:  # ValueError: pixel values out of range
        raise _read_error(path, error) from error


def _pixels(image: Image.Image) -> np.ndarray:
    """A PIL image's pixels as a float array would give them: ``"F"`` as its floats in
    ``[0, 1]``, ``(H, W)``; every other mode as 8-bit RGB, ``(H, W, 3)``."""
    if image.mode == "F":
        return float_pixels(image)
    return np.asarray(convert_image(image))


def _read_error(path: str | os.PathLike, error: Exception) -> ImageReadError:
    return ImageReadError(f"Could not read the image file {os.fspath(path)!r}: {error}")
