"""Feature drift: how far the current penultimate features are from the original ones."""

from __future__ import annotations

import torch

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
