"""What a fitted transformer extracts with, as one frozen record.

:class:`FittedExtraction` is the ``extraction_`` attribute of a fitted
:class:`~skh2t.features.IntermediateFeatureTransformer`: the backbone (a
:class:`~skh2t.features.lazy.LazyModule`), the taps with their pooling, the
preprocessing, the normalisation (with the fitted standardisation, if any)
and the feature cache. The joint extraction engine
(:mod:`skh2t.features.joint`) and the export (:mod:`skh2t.export`) read it,
in the way timm's feature extractors describe their outputs with a
``FeatureInfo`` record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from skh2t.features.backbones import BackboneReference
from skh2t.features.cache import CacheKeeper
from skh2t.features.lazy import LazyModule
from skh2t.features.pooling import plan_pooling
from skh2t.features.preprocessing import Preprocessor
from skh2t.features.taps import TapInfo

__all__ = ["FittedExtraction", "Standardization"]

_CHUNK_ELEMENTS = 1 << 24  # 16 Mi values, 128 MiB in float64


@dataclass(frozen=True, eq=False)
class Standardization:
    """Per-feature standardisation fitted on the training features.

    Attributes
    ----------
    mean, scale : ndarray of shape (n_features,), float32
        Training mean and standard deviation (1 where a feature is constant).
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Standardization:
        """The mean and standard deviation of every column, accumulated in float64.

        Examples
        --------
        >>> s = Standardization.fit(np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32))
        >>> s.mean, s.scale
        (array([2., 5.], dtype=float32), array([1., 1.], dtype=float32))
        """
        mean = features.mean(axis=0, dtype=np.float64)
        squares = np.zeros_like(mean)
        rows = max(1, _CHUNK_ELEMENTS // features.shape[1])  # bounds the float64 temporaries
        for start in range(0, features.shape[0], rows):
            centred = features[start : start + rows] - mean
            squares += np.einsum("ij,ij->j", centred, centred)
        scale = np.sqrt(squares / features.shape[0])
        scale[scale < 10 * np.finfo(np.float32).eps * np.maximum(1.0, np.abs(mean))] = 1.0
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def apply(self, features: np.ndarray) -> None:
        """Standardise ``features`` in place."""
        features -= self.mean
        features /= self.scale


@dataclass(frozen=True, eq=False)
class FittedExtraction:
    """A fitted extraction: backbone, taps, preprocessing, normalisation and cache.

    Attributes
    ----------
    backbone : LazyModule
        The backbone; its ``recipe`` is the :class:`BackboneReference` of a
        named backbone, ``None`` for a module passed as it is.
    taps : tuple of TapInfo
        One per tap, in column order.
    data_config : dict
        ``input_size``, ``interpolation``, ``mean``, ``std``.
    normalization : {"l2", "standard"} or None
        The normalisation fitted.
    cache : CacheKeeper
        The feature cache of this setup, re-keyed when the backbone changes.
    standardization : Standardization or None
        With ``normalization="standard"``: the fitted statistics.
    """

    backbone: LazyModule
    taps: tuple[TapInfo, ...]
    data_config: Mapping[str, Any]
    normalization: str | None
    cache: CacheKeeper
    standardization: Standardization | None = None

    @classmethod
    def build(
        cls,
        backbone: LazyModule,
        taps: Sequence[TapInfo],
        data_config: Mapping[str, Any],
        normalization: str | None,
    ) -> FittedExtraction:
        """A record without a bound cache or a standardisation (those come after)."""
        preprocess = Preprocessor.from_data_config(data_config)
        keeper = CacheKeeper(preprocess, taps, l2=normalization == "l2")
        return cls(backbone, tuple(taps), dict(data_config), normalization, keeper)

    @property
    def preprocess(self) -> Preprocessor:
        """The resizing and normalisation of the images."""
        return Preprocessor.from_data_config(self.data_config)

    @property
    def n_features(self) -> int:
        """The number of output columns."""
        return self.taps[-1].stop

    @property
    def l2(self) -> bool:
        """Whether each tap's vector is divided by its L2 norm."""
        return self.normalization == "l2"

    @property
    def reference(self) -> BackboneReference | None:
        """How a named backbone is rebuilt; ``None`` for a module passed as it is."""
        return self.backbone.recipe

    @property
    def module(self) -> nn.Module:
        """The backbone module (built on first use after unpickling)."""
        return self.backbone.module

    def standardize(self, features: np.ndarray) -> None:
        """Apply the fitted standardisation to ``features`` in place (if there is one)."""
        if self.standardization is not None:
            self.standardization.apply(features)

    def with_standardization(self, standardization: Standardization) -> FittedExtraction:
        """This record with the standardisation fitted."""
        return dataclasses.replace(self, standardization=standardization)

    def with_taps(self, refs: Sequence[Any]) -> FittedExtraction:
        """The record reading only the taps at ``refs`` (in their order here), with their
        pooling, renumbered columns and a cache for them, sharing the backbone."""
        wanted = set(refs)
        taps, start = [], 0
        for tap in self.taps:
            if tap.ref in wanted:
                stop = start + tap.n_features
                taps.append(TapInfo.from_plan(tap.ref, tap.raw_shape, tap.plan, start, stop))
                start = stop
        return dataclasses.replace(self, taps=tuple(taps), cache=self.cache.for_taps(taps))

    def repooled(self, *, target_size: int, pool_stride: int | None) -> FittedExtraction:
        """The record with another pooling of the same taps, sharing the backbone.

        The tap shapes seen at fit time decide the new pooling plans; the
        cache keeps the backbone's identity and gets the new taps' entries.
        """
        if self.normalization == "standard":
            raise ValueError(
                "repool cannot re-pool a transformer fitted with normalization='standard': its "
                "statistics depend on the pooling. Fit a clone with the new pooling instead."
            )
        taps, start = [], 0
        for tap in self.taps:
            plan = plan_pooling(
                tap.layout, tap.raw_shape, target_size=target_size, pool_stride=pool_stride
            )
            stop = start + plan.n_features
            taps.append(TapInfo.from_plan(tap.ref, tap.raw_shape, plan, start, stop))
            start = stop
        return dataclasses.replace(self, taps=tuple(taps), cache=self.cache.for_taps(taps))
