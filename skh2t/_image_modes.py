"""Reading image files with Pillow: every bit depth to 8-bit modes (no torch needed)."""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIXTEEN_BIT_MAX = 65535.0
#: How far outside [0, 1] floating-point pixels may stray (rounding) before they are refused.
FLOAT_TOLERANCE = 1e-3

__all__ = ["FLOAT_TOLERANCE", "check_pixel_range", "convert_image", "float_pixels"]


def convert_image(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """``image.convert(mode)``, with 16-bit and float images scaled to 8 bits instead of clipped.

    Pillow's own conversion clips the integer modes (``"I;16"`` and the like,
    e.g. 16-bit grayscale PNGs, and ``"I"``) and the float mode ``"F"`` (e.g.
    32-bit float TIFFs) to 0..255, which turns most of a 12- or 16-bit image
    white and a float image in ``[0, 1]`` black. Here integer values are read
    as fractions of 65535, the PNG meaning of a 16-bit sample, and float
    values as fractions of 1, as float arrays are; both are rounded to 8 bits.
    Values outside those ranges, NaN and infinity are refused
    (:func:`check_pixel_range`), never clipped.

    Parameters
    ----------
    image : PIL.Image.Image
        Any image Pillow reads.
    mode : str, default="RGB"
        The mode wanted, e.g. ``"RGB"`` or ``"L"``.

    Returns
    -------
    PIL.Image.Image

    Raises
    ------
    ValueError
        If a ``"I"`` or ``"F"`` image has values out of range (see above).

    Examples
    --------
    >>> ramp = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    >>> ramp.mode, np.asarray(convert_image(ramp, "L")).tolist()
    ('I;16', [[0, 128, 255]])
    >>> unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    >>> unit.mode, np.asarray(convert_image(unit, "L")).tolist()
    ('F', [[0, 128, 255]])
    """
    if image.mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        check_pixel_range(image, values)
        image = _eight_bit(values * (255.0 / _SIXTEEN_BIT_MAX))
    elif image.mode == "F":
        image = _eight_bit(float_pixels(image).astype(np.float64) * 255.0)
    return image.convert(mode)


def float_pixels(image: Image.Image) -> np.ndarray:
    """The ``(H, W)`` float32 pixels of a mode ``"F"`` image, checked to be in ``[0, 1]``.

    Values within :data:`FLOAT_TOLERANCE` of the range are kept as they are,
    as in a float array.

    Examples
    --------
    >>> float_pixels(Image.fromarray(np.full((1, 2), 2.0, dtype=np.float32)))
    Traceback (most recent call last):
    ...
    ValueError: The image has mode 'F' (floating-point) pixels outside [0, 1] ...
    """
    values = np.asarray(image, dtype=np.float32)
    check_pixel_range(image, values)
    return values


def check_pixel_range(image: Image.Image, values: np.ndarray | None = None) -> None:
    """Raise ``ValueError`` if a ``"I"`` or ``"F"`` image has values it cannot mean.

    Integer modes must lie in 0..65535; ``"F"`` must be finite and in
    ``[0, 1]`` (up to :data:`FLOAT_TOLERANCE`). Other modes are always fine.

    Parameters
    ----------
    image : PIL.Image.Image
        The image.
    values : numpy.ndarray, default=None
        Its pixels, if already read.
    """
    if image.mode != "F" and not image.mode.startswith("I"):
        return
    values = np.asarray(image, dtype=np.float64) if values is None else values
    if not values.size:
        return
    if image.mode == "F":
        _check_float_range(values)
        return
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > _SIXTEEN_BIT_MAX:
        raise ValueError(
            f"The image has {image.mode!r} integer pixels outside 0..65535 "
            f"(from {low:g} to {high:g}); convert it to 8-bit or 16-bit first."
        )


def _check_float_range(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise ValueError(
            "The image has mode 'F' (floating-point) pixels that are NaN or infinite; "
            "replace them first."
        )
    low, high = float(values.min()), float(values.max())
    if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
        raise ValueError(
            f"The image has mode 'F' (floating-point) pixels outside [0, 1] (from {low:g} to "
            f"{high:g}); floating-point images must be scaled to [0, 1]: rescale it (e.g. "
            "divide by its maximum) or save it as 8 or 16 bits."
        )


def _eight_bit(levels: np.ndarray) -> Image.Image:
    """Checked levels (within rounding of 0..255) as a mode ``"L"`` image (2-D ``uint8``)."""
    return Image.fromarray(np.rint(np.clip(levels, 0.0, 255.0)).astype(np.uint8))
