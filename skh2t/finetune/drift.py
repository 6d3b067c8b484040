"""Feature drift: how far the current penultimate features are from the original ones."""

from __future__ import annotations

from typing import Any

import torch
from sklearn.utils.validation import check_is_fitted

#: Keys of :func:`feature_drift`, in plotting order.
DRIFT_METRICS = ("feature_distance", "feature_cosine", "feature_dot", "feature_norm")


def feature_drift(original: torch.Tensor, current: torch.Tensor) -> dict[str, float]:
    """Mean per-example drift between two ``(n, d)`` feature matrices of the same images.

    Returns ``feature_distance`` (mean Euclidean distance), ``feature_cosine``
    (mean cosine similarity; 1 for a zero pair), ``feature_dot`` (mean dot
    product) and ``feature_norm`` (mean norm of the current features).

    Examples
    --------
    >>> f = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    >>> feature_drift(f, f)
    {'feature_distance': 0.0, 'feature_cosine': 1.0, 'feature_dot': 13.0, 'feature_norm': 3.0}
    """
    if original.shape != current.shape or original.dim() != 2:
        raise ValueError(
            f"Feature matrices must be 2-D and of the same shape; got {tuple(original.shape)} "
            f"and {tuple(current.shape)}."
        )
    original, current = original.double(), current.double()
    distance = torch.linalg.vector_norm(current - original, dim=1)
    norm_original = torch.linalg.vector_norm(original, dim=1)
    norm_current = torch.linalg.vector_norm(current, dim=1)
    dot = (original * current).sum(dim=1)
    denominator = norm_original * norm_current
    cosine = torch.where(
        denominator > 0, dot / denominator.clamp_min(torch.finfo(torch.float64).tiny), 1.0
    )
    return {
        "feature_distance": float(distance.mean()),
        "feature_cosine": float(cosine.mean()),
        "feature_dot": float(dot.mean()),
        "feature_norm": float(norm_current.mean()),
    }


def kept_feature_drift(estimator: Any) -> dict[str, float]:
    """The feature drift of the weights a fitted fine-tuning kept.

    The four :data:`DRIFT_METRICS` of ``estimator.history_`` at the epoch
    whose weights the estimator kept, ``best_epoch_`` (the last epoch run,
    or with early stopping the best one): how far its penultimate features
    of the held-out images (the training images without a validation split)
    are from the pretrained ones.

    Parameters
    ----------
    estimator : FineTuneClassifier
        A fitted :class:`~skh2t.finetune.FineTuneClassifier`.

    Returns
    -------
    dict
        ``{"feature_distance": ..., "feature_cosine": ..., "feature_dot": ...,
        "feature_norm": ...}``, as :func:`feature_drift` returns.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.

    Examples
    --------
    >>> import numpy as np
    >>> from skh2t.finetune import FineTuneClassifier
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), np.repeat([0, 1], 6)
    >>> clf = FineTuneClassifier(
    ...     backbone="test_resnet", weights=None, image_size=32, probe_epochs=1, epochs=2,
    ...     batch_size=6, validation_fraction=None, random_state=0,
    ... ).fit(X, y)
    >>> drift = kept_feature_drift(clf)
    >>> sorted(drift) == sorted(DRIFT_METRICS), clf.best_epoch_
    (True, 2)
    >>> drift["feature_distance"] == clf.history_["feature_distance"][2]
    True
    """
    check_is_fitted(estimator, ["history_", "best_epoch_"])
    history = estimator.history_
    row = list(history["epoch"]).index(estimator.best_epoch_)
    return {key: float(history[key][row]) for key in DRIFT_METRICS}
