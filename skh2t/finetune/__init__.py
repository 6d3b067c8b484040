"""Fine-tuning a whole backbone after preparing its task head (Ren et al., ICLR 2023).

The public entry points are :class:`FineTuneClassifier`,
:func:`plot_feature_drift`, :func:`drift_energy_figure` and
:func:`kept_feature_drift`. The modules below do one job each:
:mod:`~skh2t.finetune.network` (the backbone as a penultimate-feature
extractor plus a linear head), :mod:`~skh2t.finetune.probe` (head probing on
frozen features and the head's energy), :mod:`~skh2t.finetune.schedule` (cosine
learning rate with linear warm-up), :mod:`~skh2t.finetune.drift` (how far the
features moved) and :mod:`~skh2t.finetune.plotting`.
"""

from skh2t.finetune.classifier import DEFAULT_LR, FineTuneClassifier
from skh2t.finetune.drift import DRIFT_METRICS, feature_drift, kept_feature_drift
from skh2t.finetune.plotting import drift_energy_figure, plot_feature_drift

__all__ = [
    "DEFAULT_LR",
    "DRIFT_METRICS",
    "FineTuneClassifier",
    "drift_energy_figure",
    "feature_drift",
    "kept_feature_drift",
    "plot_feature_drift",
]
