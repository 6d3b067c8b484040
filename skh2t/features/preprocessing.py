"""Resize and normalise raw image batches as the backbone's timm data config says.

Images are resized to the input size as a whole (no crop, aspect ratio not
kept), as Head2Toe's VTAB pipeline does, with antialiasing when shrinking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

_TORCH_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}
_SMOOTH_MODES = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocessor:
    """Turns raw image batches into normalised model inputs.

    Parameters
    ----------
    size : tuple of int
        Output ``(height, width)``.
    mean, std : tuple of float
        Per-channel normalisation, applied to pixel values scaled to ``[0, 1]``.
    interpolation : str, default="bicubic"
        ``"bicubic"``, ``"bilinear"`` or ``"nearest"``; other timm names (such as
        ``"random"`` or ``"lanczos"``) fall back to bicubic.

    Examples
    --------
    >>> prep = Preprocessor(size=(4, 4), mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> out = prep(torch.full((2, 1, 8, 8), 255, dtype=torch.uint8))
    >>> tuple(out.shape), out.min().item(), out.max().item()
    ((2, 3, 4, 4), 1.0, 1.0)
    """

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"

    @classmethod
    def from_data_config(cls, config: Mapping[str, Any]) -> Preprocessor:
        """Build from a timm data config (``input_size``, ``mean``, ``std``, ``interpolation``)."""
        _, height, width = config["input_size"]
        return cls(
            size=(int(height), int(width)),
            mean=tuple(config["mean"]),
            std=tuple(config["std"]),
            interpolation=config.get("interpolation", "bicubic"),
        )

    def __call__(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Resize, expand grayscale to RGB and normalise.

        Parameters
        ----------
        images : torch.Tensor or sequence of torch.Tensor
            A ``(B, C, H, W)`` batch or ``(C, H, W)`` images of any size, ``uint8``
            or float in ``[0, 1]``, ``C`` 1 or 3. Never modified.
        device : torch.device or str, default="cpu"
            Where the work happens and the result lives.
        dtype : torch.dtype, default=torch.float32
            Dtype of the result (the backbone's).

        Returns
        -------
        torch.Tensor
            ``(B, 3, *size)``, in channels-last memory format (oneDNN runs
            convolutions on the CPU markedly faster that way).
        """
        batch = self.resize(images, device=device)
        mean = torch.tensor(self.mean, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, -1, 1, 1)
        return batch.sub_(mean).div_(std).to(dtype)

    def resize(
        self, images: torch.Tensor | Sequence[torch.Tensor], *, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Resize and expand grayscale to RGB, without the normalisation.

        Parameters
        ----------
        images : torch.Tensor or sequence of torch.Tensor
            As for calling the preprocessor.
        device : torch.device or str, default="cpu"
            Where the work happens and the result lives.

        Returns
        -------
        torch.Tensor
            ``(B, 3, *size)`` float32 in ``[0, 1]``, channels-last; a new tensor.

        Examples
        --------
        >>> prep = Preprocessor(size=(4, 4), mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> prep.resize(torch.full((1, 1, 8, 8), 255, dtype=torch.uint8)).unique()
        tensor([1.])
        """
        if isinstance(images, torch.Tensor):
            return self._rgb(images.to(device))
        return torch.cat([self._rgb(image.to(device)[None]) for image in images])

    def _rgb(self, batch: torch.Tensor) -> torch.Tensor:
        """Scale to [0, 1], resize and expand grayscale: a new channels-last RGB batch."""
        batch = self._resize(_unit_float(batch))
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        return batch.contiguous(memory_format=torch.channels_last)

    def _resize(self, batch: torch.Tensor) -> torch.Tensor:
        if tuple(batch.shape[-2:]) == self.size:
            return batch
        mode = _TORCH_MODES.get(self.interpolation, "bicubic")
        if mode not in _SMOOTH_MODES:
            return F.interpolate(batch, size=self.size, mode=mode)
        resized = F.interpolate(
            batch, size=self.size, mode=mode, align_corners=False, antialias=True
        )
        return resized.clamp_(0.0, 1.0) if mode == "bicubic" else resized


def _unit_float(images: torch.Tensor) -> torch.Tensor:
    """A new float32 tensor in [0, 1] (channels-last for 4-D), never a view of ``images``."""
    converted = images.to(
        dtype=torch.float32,
        memory_format=torch.channels_last if images.dim() == 4 else torch.preserve_format,
        copy=True,
    )
    if images.dtype == torch.uint8:
        return converted.div_(255.0)
    return converted.clamp_(0.0, 1.0)
