"""skh2t: Head2Toe transfer learning from pretrained vision backbones, for scikit-learn.

- :class:`Head2ToeClassifier`: the whole Head2Toe protocol on images
  (extraction for every pooling of the grid in one pass, cross-validation,
  refit), prediction in bounded memory.
- :class:`GroupLassoClassifier`: softmax regression with a group-lasso penalty
  and Head2Toe's select-and-refit; :class:`GroupLassoClassifierCV` chooses its
  alpha and keep fraction by cross-validation on a warm-started path.
- :class:`IntermediateFeatureTransformer` (from :mod:`skh2t.features`): images
  in, pooled and normalised activations of (nearly) every layer out.
- :class:`FineTuneClassifier` (from :mod:`skh2t.finetune`): fine-tuning of the
  whole backbone after preparing its head, with energy and feature drift.
- :func:`compare_methods` (from :mod:`skh2t.protocol`): Head2Toe against the
  last-layer and all-taps linear probes on the same folds (``skh2t run``'s table).
- :mod:`skh2t.datasets`: Fashion-MNIST, image folders, VTAB-1k subsampling.
"""

from importlib import import_module
from typing import Any

from skh2t.head2toe import Head2ToeClassifier
from skh2t.linear_model import GroupLassoClassifier, GroupLassoClassifierCV
from skh2t.protocol import Comparison, MethodResult, compare_methods

__version__ = "0.1.0.dev0"

# Importing torch and timm takes seconds: the feature extraction loads on first use.
_LAZY_SUBMODULES = {"datasets", "features", "finetune"}
_LAZY_ATTRIBUTES = {
    "IntermediateFeatureTransformer": "skh2t.features",
    "FineTuneClassifier": "skh2t.finetune",
}

__all__ = [
    "Comparison",
    "FineTuneClassifier",
    "GroupLassoClassifier",
    "GroupLassoClassifierCV",
    "Head2ToeClassifier",
    "IntermediateFeatureTransformer",
    "MethodResult",
    "__version__",
    "compare_methods",
    "datasets",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return import_module(f"skh2t.{name}")
    if name in _LAZY_ATTRIBUTES:
        return getattr(import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'skh2t' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
