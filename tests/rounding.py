"""Tolerances for floats that are equal up to rounding, derived from the dtype and the computation.

Two BLAS kernels (or two batch sizes, thread counts, oneDNN convolution algorithms) sum
in different orders, so their results agree to rounding, not bit for bit: an Intel CPU
and an AMD one pick different kernels for the same call. The bounds here are the
textbook ones (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1): a
computed dot product of length ``n`` is within ``gamma_n * sum |a_i| |b_i|`` of the
exact one, ``gamma_n = n u / (1 - n u)`` with ``u`` the unit roundoff; two computed
products are therefore within twice that of each other, whatever their order.
"""

import numpy as np


def product_rounding_bound(a: np.ndarray, b: np.ndarray, dtype=None) -> np.ndarray:
    """Elementwise bound on the difference of two computations of ``a @ b`` in ``dtype``.

    ``dtype`` defaults to the product's; ``a @ b`` is a matrix or vector product.
    """
    dtype = np.result_type(a, b) if dtype is None else dtype
    n = np.shape(a)[-1]
    unit_roundoff = np.finfo(dtype).eps / 2
    gamma = n * unit_roundoff / (1 - n * unit_roundoff)
    magnitude = np.abs(np.asarray(a, dtype=np.float64)) @ np.abs(np.asarray(b, dtype=np.float64))
    return 2 * gamma * magnitude


def assert_product_close(actual, expected, a, b, dtype=None, err_msg: str = "") -> None:
    """``actual`` and ``expected`` are two computations of ``a @ b`` (in ``dtype``), up to
    the rounding of a dot product of their length."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, err_msg
    bound = product_rounding_bound(a, b, dtype)
    excess = np.abs(actual.astype(np.float64) - expected) - bound
    assert (excess <= 0).all(), (
        f"{err_msg} differ by more than the rounding bound at {np.argwhere(excess > 0)[:5]}: "
        f"excess up to {excess.max():.3g}"
    )


def assert_rows_close(actual, expected, ulps: float = 64) -> None:
    """Every row of ``actual`` is within ``ulps`` machine epsilons of its row of ``expected``,
    relative to that row's norm.

    For features computed through a network by other kernels or batch sizes: the
    rounding of a forward pass grows with its depth and is not bounded elementwise
    (the pooled and normalised activations cancel), but relative to the row norm
    it stays within a few epsilons on the suite's small backbones; the default
    leaves a wide margin while a wrong row, another image or a stale cache entry
    is off by a sizeable fraction of the norm.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    eps = np.finfo(expected.dtype).eps
    difference = np.linalg.norm(actual.astype(np.float64) - expected, axis=-1)
    scale = np.linalg.norm(expected.astype(np.float64), axis=-1)
    assert (difference <= ulps * eps * scale).all(), (
        f"rows differ by up to {(difference / np.maximum(scale, 1e-300)).max() / eps:.3g} "
        f"epsilons of their norm (allowed: {ulps})"
    )


def head_rounding_bound(pipeline, images) -> np.ndarray:
    """Bound on how much two BLAS kernels' float32 products of a Head2Toe pipeline's head can
    differ, per score (the features being the same floats)."""
    from skh2t._prediction import renormalize_columns

    X, head = pipeline[:-1].transform(images), pipeline[-1]
    kept = np.flatnonzero(head.support_)
    X_kept = renormalize_columns(X[:, kept], head.renormalize_index_[kept])
    return product_rounding_bound(X_kept, head.coef_[:, kept].T, np.float32).ravel()


def assert_same_support(ours, reference, rtol: float = 1e-3) -> None:
    """Two group-lasso models of the same problem, solved along other code paths (each
    within its tolerance of the optimum), keep the same features but for near-ties.

    A feature kept by only one of them must sit at the edge of the selection in both:
    within ``rtol`` of the weakest kept feature's weight (``feature_scores_``; among
    zero weights, its dual score), or at the edge of the non-zero weights (a weight
    below ``rtol`` of the largest, or a zero weight whose dual score is within ``rtol``
    of 1, about to enter). On a CPU whose kernels round as the reference's, none differ.
    """
    differ = np.flatnonzero(ours.support_ != reference.support_)
    for model in (ours, reference):
        edge = _selection_edge(model, rtol)
        outside = [j for j in differ if not edge(j)]
        assert not outside, (
            f"features {outside[:5]} are kept by one model only, away from the edge of the "
            f"selection (weights {model.feature_scores_[outside[:5]]}, dual scores "
            f"{model.dual_scores_[outside[:5]]})"
        )


def _selection_edge(model, rtol: float):
    scores, dual = model.feature_scores_, model.dual_scores_
    kept = np.flatnonzero(model.support_)
    weakest = kept[np.lexsort((-dual[kept], -scores[kept]))[-1]] if kept.size else None

    def near(a: float, b: float) -> bool:
        return abs(a - b) <= rtol * max(abs(a), abs(b))

    def edge(j: int) -> bool:
        at_zero = scores[j] <= rtol * scores.max() or (scores[j] == 0 and dual[j] >= 1 - rtol)
        if weakest is None:
            return at_zero
        if scores[weakest] > 0:
            return at_zero or near(scores[j], scores[weakest])
        return at_zero or (scores[j] == 0 and near(dual[j], dual[weakest]))

    return edge


def assert_same_predictions(predicted, model, X) -> np.ndarray:
    """``predicted``: ``model``'s classes of the rows of ``X`` computed along another path
    (other blocks of rows, another memory layout). They must equal ``model.predict(X)``
    on every row whose winning score leads by more than twice the rounding bound of the
    product ``X @ coef_.T``; returns the mask of those rows (most of them, checked)."""
    X = np.asarray(X)
    scores = model.decision_function(X)
    bound = product_rounding_bound(X, model.coef_.T)
    if scores.ndim == 1:  # binary: the sign of one score
        margin, slack = np.abs(scores), bound.ravel()
    else:
        top = np.sort(scores, axis=1)
        margin, slack = top[:, -1] - top[:, -2], 2 * bound.max(axis=1)
    clear = margin > 2 * slack
    assert clear.mean() >= 0.9, "too many near-ties for the comparison to mean anything"
    np.testing.assert_array_equal(np.asarray(predicted)[clear], model.predict(X)[clear])
    return clear
