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
        The backbone part that computes the used taps' activations.
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
        for index, readout in enumerate(self.readouts):
            self.register_buffer(f"kept_{index}", torch.tensor(readout.kept, dtype=torch.long))
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
        activations = self.taps(batch)
        parts = []
        for index, (readout, activation) in enumerate(zip(self.readouts, activations, strict=True)):
            pooled = pool_activation(activation, readout.plan).float()
            if readout.full_norm:
                pooled = pooled / _norm(pooled)
            parts.append(pooled.index_select(1, getattr(self, f"kept_{index}")))
        features = torch.cat(parts, dim=1)
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
        """Images as the fitted model reads them, to this module's input batch.

        Parameters
        ----------
        images : array-like of images or list of paths / PIL images
            As for the fitted model's ``predict``.

        Returns
        -------
        torch.Tensor
            ``(N, 3, H, W)`` float32 in ``[0, 1]``: resized whole (no crop) with
            the fitted model's interpolation and antialiasing, grey images
            repeated to 3 channels.
        """
        data = as_images(images)
        return self._resize(data.batch(0, len(data))).contiguous()

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
                logits = self(self._resize(data.batch(start, stop)).to(device))
                labels.append(logits.argmax(dim=1).cpu().numpy())
        indices = np.concatenate(labels) if labels else np.zeros(0, dtype=np.intp)
        return self.classes_[indices]

    def _resize(self, batch) -> torch.Tensor:
        resize = Preprocessor(self.image_size, (0.0,) * 3, (1.0,) * 3, self.interpolation)
        return resize.resize(batch)


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Row L2 norms, clamped away from zero so that all-zero rows stay zero."""
    return torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
