"""Reading image files with Pillow: every bit depth to 8-bit modes (no torch needed)."""

from __future__ import annotations

import numpy as np
from PIL import Image

_SIXTEEN_BIT_MAX = 65535.0

__all__ = ["convert_image"]


def convert_image(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """``image.convert(mode)``, with 16-bit images scaled to 8 bits instead of clipped.

    Pillow's own conversion clips the integer modes (``"I;16"`` and the like,
    e.g. 16-bit grayscale PNGs, and ``"I"``) to 255, which turns most of a
    12- or 16-bit image white. Here their values are read as fractions of
    65535, the PNG meaning of a 16-bit sample, and rounded to 8 bits first.

    Parameters
    ----------
    image : PIL.Image.Image
        Any image Pillow reads.
    mode : str, default="RGB"
        The mode wanted, e.g. ``"RGB"`` or ``"L"``.

    Returns
    -------
    PIL.Image.Image

    Examples
    --------
    >>> ramp = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    >>> ramp.mode, np.asarray(convert_image(ramp, "L")).tolist()
    ('I;16', [[0, 128, 255]])
    """
    if image.mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        if values.size and (values.min() < 0 or values.max() > _SIXTEEN_BIT_MAX):
            raise ValueError(
                f"The image has {image.mode!r} integer pixels outside 0..65535 "
                f"(from {values.min():g} to {values.max():g}); convert it to 8-bit or 16-bit "
                "first."
            )
        eight_bit = np.rint(values * (255.0 / _SIXTEEN_BIT_MAX)).astype(np.uint8)
        image = Image.fromarray(eight_bit, mode="L")
    return image.convert(mode)
