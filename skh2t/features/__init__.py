"""Head2Toe feature extraction: images in, pooled intermediate activations out.

The public entry point is :class:`IntermediateFeatureTransformer`. The modules
below it do one job each: :mod:`~skh2t.features.backbones` (backbone specs to
modules), :mod:`~skh2t.features.weights` (offline weight sources),
:mod:`~skh2t.features.taps` (which activations to read),
:mod:`~skh2t.features.pooling` (the pooling rule a(.)),
:mod:`~skh2t.features.images` and :mod:`~skh2t.features.preprocessing` (inputs),
:mod:`~skh2t.features.hooks`, :mod:`~skh2t.features.discovery` and
:mod:`~skh2t.features.extraction` (reading activations during a forward pass),
:mod:`~skh2t.features.cache` (the on-disk feature cache),
:mod:`~skh2t.features.store` (many images' features on disk, in row chunks),
:mod:`~skh2t.features.costs` (what each tap costs in FLOPs),
:mod:`~skh2t.features.fitted` (the fitted record ``extraction_``) and
:mod:`~skh2t.features.lazy` (a module kept as the recipe that rebuilds it).
"""

from skh2t.features.backbones import Backbone, BackboneReference, WeightSource, load_backbone
from skh2t.features.costs import ComputeBudgetError
from skh2t.features.devices import resolve_device, resolve_precision
from skh2t.features.images import ImageReadError, check_image_files
from skh2t.features.store import FeatureStore, InsufficientDiskSpaceError, write_features
from skh2t.features.taps import TapInfo, default_taps, model_family
from skh2t.features.transformer import IntermediateFeatureTransformer
from skh2t.features.weights import (
    OFFLINE_WEIGHTS,
    CheckpointError,
    OfflineWeights,
    WeightsChangedError,
    WeightsNotFoundError,
)

__all__ = [
    "OFFLINE_WEIGHTS",
    "Backbone",
    "BackboneReference",
    "CheckpointError",
    "ComputeBudgetError",
    "FeatureStore",
    "ImageReadError",
    "InsufficientDiskSpaceError",
    "IntermediateFeatureTransformer",
    "OfflineWeights",
    "TapInfo",
    "WeightSource",
    "WeightsChangedError",
    "WeightsNotFoundError",
    "check_image_files",
    "default_taps",
    "load_backbone",
    "model_family",
    "resolve_device",
    "resolve_precision",
    "write_features",
]
