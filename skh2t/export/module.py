"""The compact Head2Toe module: images in, logits out, computing only what the head reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from skh2t.features.images import as_images
from skh2t.features.pooling import PoolingPlan, pool_activation
from skh2t.features.preprocessing import Preprocessor


@dataclass(frozen=True)
class TapReadout:
    """How one used tap becomes kept features.

    Attributes
    ----------
    name : str
        The tap's name.
    plan : PoolingPlan
        Its pooling, as at fit time.
    kept : tuple of int
        The kept positions among the tap's pooled features, ascending.
    full_norm : bool
        Divide the pooled vector by its L2 norm (over all its features) before
        keeping the kept ones.
    """

    name: str
    plan: PoolingPlan
    kept: tuple[int, ...]
    full_norm: bool


class TapReader(nn.Module):
    """One tap's activation to its kept features: pooling, normalisation, column selection.

    Parameters
    ----------
    readout : TapReadout
        What to compute.
    """

    def __init__(self, readout: TapReadout) -> None:
        super().__init__()
        self.plan = readout.plan
        self.full_norm = readout.full_norm
        self.register_buffer("kept", torch.tensor(readout.kept, dtype=torch.long))

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        pooled = pool_activation(activation, self.plan).float()
        if self.full_norm:
            pooled = pooled / _norm(pooled)
        return pooled.index_select(1, self.kept)


class CompactHead2Toe(nn.Module):
    """A fitted Head2Toe model as one ``torch.nn.Module``: images to logits.

    Built by :func:`skh2t.export.compact_module`; it reads only the taps with
    kept features, pools and normalises them as at fit time, keeps the kept
    columns and applies the linear head to them alone.

    Input: a float32 batch ``(N, 3, H, W)`` of RGB images with values in
    ``[0, 1]``, already resized to ``image_size`` (see :meth:`prepare`). The
    mean/std normalisation happens inside. Output: the logits
    ``(N, n_classes)``, columns in the order of ``classes_`` (for two classes,
    ``[0, s]`` with ``s`` the fitted model's decision function, so that softmax
    and argmax agree with it).

    Attributes
    ----------
    classes_ : ndarray
        The class labels, in the order of the logits.
    image_size : tuple of int
        ``(H, W)`` the input must have.
    readouts : tuple of TapReadout
        The used taps, in the order the features are read.
    taps : torch.nn.Module
        The backbone part that computes the used taps' kept features (see
        :func:`skh2t.export.taps.tap_extractor`), one tensor per tap.
    """

    def __init__(
        self,
        *,
        taps: nn.Module,
        readouts: Sequence[TapReadout],
        mean: Sequence[float],
        std: Sequence[float],
        image_size: tuple[int, int],
        standardize: tuple[np.ndarray, np.ndarray] | None,
        order: np.ndarray | None,
        renormalize: Sequence[tuple[int, int]],
        weight: np.ndarray,
        bias: np.ndarray,
        classes: np.ndarray,
        interpolation: str,
    ) -> None:
        super().__init__()
        self.taps = taps
        self.readouts = tuple(readouts)
        self.image_size = tuple(image_size)
        self.interpolation = interpolation
        self.classes_ = np.asarray(classes)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.standardize = standardize is not None
        if standardize is not None:
            mean_, scale_ = (torch.as_tensor(a, dtype=torch.float32) for a in standardize)
            self.register_buffer("feature_mean", mean_)
            self.register_buffer("feature_scale", scale_)
        self.permute = order is not None
        if order is not None:
            self.register_buffer("order", torch.as_tensor(order, dtype=torch.long))
        self.renormalize = tuple(renormalize)
        self.binary = weight.shape[0] == 1
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.eval()

    @property
    def n_features(self) -> int:
        """How many features the head reads."""
        return self.head.in_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes)`` of a ``(N, 3, H, W)`` float batch in ``[0, 1]``."""
        batch = ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        features = torch.cat(self.taps(batch), dim=1)
        if self.standardize:
            features = (features - self.feature_mean) / self.feature_scale
        if self.permute:
            features = features.index_select(1, self.order)
        if self.renormalize:
            features = torch.cat(
                [features[:, a:b] / _norm(features[:, a:b]) for a, b in self.renormalize], dim=1
            )
        logits = self.head(features)
        if self.binary:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits

    def prepare(self, images) -> torch.Tensor:
        """This module's input batch from images as the fitted model reads them.

        :func:`prepare_images` at this module's image size and interpolation.
        """
        return prepare_images(images, self.image_size, interpolation=self.interpolation)

    def predict(self, images, *, batch_size: int = 64) -> np.ndarray:
        """Class labels of ``images`` (anything :meth:`prepare` takes), ``batch_size`` at a time.

        Runs on the module's device; memory stays bounded by the batch size.
        """
        data = as_images(images)
        device = self.head.weight.device
        labels = []
        with torch.inference_mode():
            for start in range(0, len(data), batch_size):
                stop = min(start + batch_size, len(data))
                batch = prepare_images(data.batch(start, stop), self.image_size, self.interpolation)
                logits = self(batch.to(device))
                labels.append(logits.argmax(dim=1).cpu().numpy())
        indices = np.concatenate(labels) if labels else np.zeros(0, dtype=np.intp)
        return self.classes_[indices]


def prepare_images(
    images, image_size: int | tuple[int, int], interpolation: str = "bicubic"
) -> torch.Tensor:
    """A batch for an exported Head2Toe model, from images as the fitted model reads them.

    Exactly the fitted model's resizing: each image resized whole (no crop,
    aspect ratio not kept) to ``image_size`` with antialiasing, values scaled
    to ``[0, 1]``, grey images repeated to 3 channels; no mean/std
    normalisation (the exported model does it).

    Parameters
    ----------
    images : array-like of images, list of paths / PIL images, or torch.Tensor
        As for the fitted model's ``predict``; or one ``(N, C, H, W)`` tensor.
    image_size : int or (int, int)
        The model's image size (``CompactHead2Toe.image_size``).
    interpolation : {"bicubic", "bilinear", "nearest"}, default="bicubic"
        The backbone's interpolation (``CompactHead2Toe.interpolation``).

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)`` float32 in ``[0, 1]``, contiguous.

    Examples
    --------
    >>> import numpy as np
    >>> batch = prepare_images(np.full((2, 28, 28), 255, np.uint8), 32)
    >>> tuple(batch.shape), batch.min().item(), batch.max().item()
    ((2, 3, 32, 32), 1.0, 1.0)
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    resize = Preprocessor(size, (0.0,) * 3, (1.0,) * 3, interpolation)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return resize.resize(images).contiguous()
    data = as_images(images)
    return resize.resize(data.batch(0, len(data))).contiguous()


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Row L2 norms, clamped away from zero so that all-zero rows stay zero."""
    return torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
