"""The compact Head2Toe module: images in, logits out, computing only what the head reads."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import NamedTuple

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
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
        return prepare_images(images, self)

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
                batch = prepare_images(data.batch(start, stop), self)
                logits = self(batch.to(device))
                labels.append(logits.argmax(dim=1).cpu().numpy())
        indices = np.concatenate(labels) if labels else np.zeros(0, dtype=np.intp)
        return self.classes_[indices]


# The interpolations :func:`prepare_images` takes as an explicit argument.
_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


class _ResizeSettings(NamedTuple):
    """How a model resizes its input: the image size and the interpolation."""

    image_size: tuple[int, int]
    interpolation: str


def prepare_images(images, source, interpolation: str | None = None) -> torch.Tensor:
    """A batch for an exported Head2Toe model, from images as the fitted model reads them.

    Exactly the fitted model's resizing, with the image size and
    interpolation it records: each image resized whole (no crop, aspect
    ratio not kept) to the image size with antialiasing, values scaled to
    ``[0, 1]``, grey images repeated to 3 channels; no mean/std
    normalisation (the exported model does it).

    Parameters
    ----------
    images : array-like of images, list of paths / PIL images, or torch.Tensor
        As for the fitted model's ``predict``; or one ``(N, C, H, W)`` tensor.
    source : model, path, dict, int or (int, int)
        Where the image size and interpolation come from: a fitted
        :class:`~skh2t.Head2ToeClassifier`, ``Pipeline`` or
        :class:`~skh2t.features.IntermediateFeatureTransformer` (its
        ``data_config_``), a :class:`CompactHead2Toe`, the path of a file
        written by :func:`~skh2t.export.export_model` or the dict
        :func:`~skh2t.export.read_metadata` returns. An image size alone
        (``int`` or ``(H, W)``) records no interpolation: give
        ``interpolation`` with it.
    interpolation : {"bicubic", "bilinear", "nearest"}, default=None
        Overrides the interpolation ``source`` records (None: use it).

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)`` float32 in ``[0, 1]``, contiguous.

    Examples
    --------
    >>> import numpy as np
    >>> batch = prepare_images(np.full((2, 28, 28), 255, np.uint8), 32, "bilinear")
    >>> tuple(batch.shape), batch.min().item(), batch.max().item()
    ((2, 3, 32, 32), 1.0, 1.0)
    >>> prepare_images(np.zeros((2, 28, 28), np.uint8), 32)
    Traceback (most recent call last):
    ...
    ValueError: An image size alone does not say how the model resizes: ...
    """
    settings = _resize_settings(source, interpolation)
    resize = Preprocessor(settings.image_size, (0.0,) * 3, (1.0,) * 3, settings.interpolation)
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return resize.resize(images).contiguous()
    data = as_images(images)
    return resize.resize(data.batch(0, len(data))).contiguous()


def _resize_settings(source, interpolation: str | None = None) -> _ResizeSettings:
    """The image size and interpolation ``source`` records (see :func:`prepare_images`).

    Parameters
    ----------
    source : model, path, dict, int or (int, int)
        As for :func:`prepare_images`.
    interpolation : {"bicubic", "bilinear", "nearest"}, default=None
        Overrides the recorded interpolation; required with a bare image size.

    Returns
    -------
    _ResizeSettings
    """
    if interpolation is not None and interpolation not in _INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {_INTERPOLATIONS} (or None: the model's); "
            f"got {interpolation!r}."
        )
    size, recorded = _recorded_settings(source)
    if interpolation is None and recorded is None:
        raise ValueError(
            "An image size alone does not say how the model resizes: pass the fitted model, "
            "the exported file or its read_metadata() record instead, or give interpolation= "
            f"(one of {_INTERPOLATIONS})."
        )
    return _ResizeSettings(size, interpolation or recorded)


def _recorded_settings(source) -> tuple[tuple[int, int], str | None]:
    if isinstance(source, CompactHead2Toe):
        return tuple(source.image_size), source.interpolation
    if isinstance(source, (str, os.PathLike)):
        from skh2t.export.files import read_metadata

        source = read_metadata(source)
    if isinstance(source, Mapping):
        return _metadata_settings(source)
    if _is_image_size(source):
        return _image_size(source), None
    preprocess = Preprocessor.from_data_config(_data_config(source))
    return preprocess.size, preprocess.interpolation


def _metadata_settings(record: Mapping) -> tuple[tuple[int, int], str | None]:
    if "image_size" not in record:
        raise ValueError(
            "The metadata record has no 'image_size'; pass what read_metadata() returns."
        )
    return _image_size(record["image_size"]), record.get("interpolation")


def _data_config(model) -> Mapping:
    """The timm data config of a fitted model's feature transformer."""
    from skh2t.features.transformer import IntermediateFeatureTransformer
    from skh2t.head2toe import Head2ToeClassifier

    if isinstance(model, Pipeline):
        kinds = (IntermediateFeatureTransformer, Head2ToeClassifier)
        model = next((step for _, step in model.steps if isinstance(step, kinds)), model)
    if isinstance(model, Head2ToeClassifier):
        check_is_fitted(model)
        model = model.transformer_
    if not isinstance(model, IntermediateFeatureTransformer):
        raise TypeError(
            "source must be a fitted Head2ToeClassifier, Pipeline or "
            "IntermediateFeatureTransformer, a CompactHead2Toe, an exported file's path or "
            f"metadata, or an image size; got {type(model).__name__}."
        )
    check_is_fitted(model)
    return model.data_config_


def _is_image_size(value) -> bool:
    if isinstance(value, (Integral, np.integer)):
        return True
    return isinstance(value, (tuple, list)) and len(value) == 2


def _image_size(value) -> tuple[int, int]:
    size = (value, value) if isinstance(value, (Integral, np.integer)) else tuple(value)
    if not all(
        isinstance(v, (Integral, np.integer)) and not isinstance(v, bool) and v >= 1 for v in size
    ):
        raise ValueError(f"An image size must be a positive int or (H, W); got {value!r}.")
    return int(size[0]), int(size[1])


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Row L2 norms, clamped away from zero so that all-zero rows stay zero."""
    return torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
