"""Class-balanced ("VTAB-1k style") subsampling of a labelled data set."""

from collections.abc import Mapping
from numbers import Integral

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils import check_random_state, column_or_1d

_DEFAULT_N_SAMPLES = 1000


def stratified_subsample(
    y: ArrayLike,
    *,
    n_samples: int | None = None,
    n_per_class: int | Mapping[object, int] | None = None,
    random_state: int | np.random.RandomState | None = None,
) -> np.ndarray:
    """Draw a class-balanced random subset, VTAB-1k style.

    VTAB-1k trains on 1000 images of each task. This draws ``n_samples``
    indices spread evenly over the classes: each of the ``k`` classes gets
    ``n_samples // k`` samples, and the remainder goes one by one to the
    first classes in sorted label order (so the number per class never
    depends on the seed). Within a class, samples are drawn uniformly
    without replacement. Alternatively ``n_per_class`` fixes the count of
    each class.

    Parameters
    ----------
    y : array-like of shape (n_total,)
        Class labels of the full data set.
    n_samples : int, default=None
        Total number of samples to draw. If both ``n_samples`` and
        ``n_per_class`` are None, 1000.
    n_per_class : int or mapping, default=None
        Number of samples per class instead: an int for every class, or a
        mapping ``{label: count}`` (labels left out get 0). Exclusive with
        ``n_samples``.
    random_state : int, RandomState instance or None, default=None
        Controls the draw. Pass an int for reproducible output.

    Returns
    -------
    indices : ndarray of shape (n_selected,), dtype int64
        Indices into ``y``, in increasing order (the order of the data is
        kept; shuffle them if needed).

    Raises
    ------
    ValueError
        If a class has fewer samples than requested from it, if
        ``n_samples`` exceeds ``len(y)`` or is smaller than the number of
        classes, or if the arguments are invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from skh2t.datasets import stratified_subsample
    >>> y = np.repeat([0, 1, 2], 50)
    >>> idx = stratified_subsample(y, n_samples=10, random_state=0)
    >>> np.bincount(y[idx]).tolist()
    [4, 3, 3]
    >>> idx = stratified_subsample(y, n_per_class={0: 5, 2: 1}, random_state=0)
    >>> np.bincount(y[idx], minlength=3).tolist()
    [5, 0, 1]
    """
    y = column_or_1d(y, warn=True)
    classes, y_index = np.unique(y, return_inverse=True)
    counts = _requested_counts(classes, len(y), n_samples, n_per_class)
    _check_available(classes, np.bincount(y_index, minlength=len(classes)), counts)
    rng = check_random_state(random_state)
    chosen = [
        rng.choice(np.flatnonzero(y_index == k), size=n, replace=False)
        for k, n in enumerate(counts)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64, copy=False)


def _requested_counts(
    classes: np.ndarray,
    n_total: int,
    n_samples: int | None,
    n_per_class: int | Mapping[object, int] | None,
) -> np.ndarray:
    if n_samples is not None and n_per_class is not None:
        raise ValueError("Pass n_samples or n_per_class, not both.")
    if n_per_class is None:
        n = _DEFAULT_N_SAMPLES if n_samples is None else n_samples
        return _balanced_counts(len(classes), n_total, _check_count(n, "n_samples"))
    if isinstance(n_per_class, Mapping):
        return _mapped_counts(classes, n_per_class)
    return np.full(len(classes), _check_count(n_per_class, "n_per_class"))


def _check_count(value: object, name: str) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}.")
    return int(value)


def _balanced_counts(n_classes: int, n_total: int, n_samples: int) -> np.ndarray:
    if n_samples > n_total:
        raise ValueError(f"n_samples={n_samples} is larger than the data set ({n_total} samples).")
    if n_samples < n_classes:
        raise ValueError(
            f"n_samples={n_samples} is smaller than the number of classes ({n_classes}); "
            "every class needs at least one sample."
        )
    counts = np.full(n_classes, n_samples // n_classes)
    counts[: n_samples % n_classes] += 1
    return counts


def _mapped_counts(classes: np.ndarray, n_per_class: Mapping[object, int]) -> np.ndarray:
    known = {label: k for k, label in enumerate(classes.tolist())}
    unknown = [label for label in n_per_class if label not in known]
    if unknown:
        raise ValueError(f"n_per_class has labels {unknown} not in y; labels: {list(known)}.")
    counts = np.zeros(len(classes), dtype=np.int64)
    for label, n in n_per_class.items():
        counts[known[label]] = _check_count(n, f"n_per_class[{label!r}]")
    return counts


def _check_available(classes: np.ndarray, available: np.ndarray, counts: np.ndarray) -> None:
    short = np.flatnonzero(available < counts)
    if short.size:
        labels = classes.tolist()
        details = ", ".join(
            f"class {labels[k]!r} has {available[k]} (requested {counts[k]})" for k in short
        )
        raise ValueError(f"Not enough samples to draw from: {details}.")
