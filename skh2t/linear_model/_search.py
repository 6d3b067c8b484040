"""The search core shared by every model selection of skh2t.

One place for what every search does the same way:

- validating a grid (:func:`fraction_grid`, :func:`integer_grid`,
  :func:`positive_grid`);
- the single tie rule (:func:`first_best`): among equal mean scores, the
  simplest point, in an order each search states once (sparser, more
  strongly penalised, smaller);
- the folds of a ``cv`` parameter (:func:`split_folds`);
- counting the fits that did not converge (:class:`ConvergenceCount`) and one
  warning for them (:func:`warn_not_converged`);
- the results, in ``GridSearchCV``'s ``cv_results_`` schema (:func:`cv_results`).

:class:`~skh2t.GroupLassoClassifierCV`, :class:`~skh2t.Head2ToeClassifier`,
:func:`skh2t.probes.l2_probe_cv` and :class:`~skh2t.FineTuneClassifier`'s
probe search all go through it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, check_cv


def fraction_grid(values: Any, name: str) -> list[float]:
    """A grid of distinct fractions in (0, 1], sorted increasingly.

    Parameters
    ----------
    values : array-like of float
        The grid as given.
    name : str
        The parameter's name, for the error message.

    Returns
    -------
    list of float

    Raises
    ------
    ValueError
        Unless ``values`` is a non-empty 1-D list of distinct fractions in (0, 1].

    Examples
    --------
    >>> fraction_grid([0.2, 0.05], "keep_fractions")
    [0.05, 0.2]
    """
    fractions = _floats(values)
    if (
        fractions.size == 0
        or np.any(~((fractions > 0) & (fractions <= 1)))
        or np.unique(fractions).size != fractions.size
    ):
        raise ValueError(
            f"{name} must be a non-empty 1-D list of distinct fractions in (0, 1]; got {values!r}."
        )
    return sorted(float(f) for f in fractions)


def integer_grid(values: Any, name: str, *, minimum: int = 1) -> list[int]:
    """A grid of distinct integers ``>= minimum``, sorted increasingly.

    Parameters
    ----------
    values : array-like of int
        The grid as given; floats, even integral ones, and booleans are refused.
    name : str
        The parameter's name, for the error message.
    minimum : int, default=1
        The smallest allowed value.

    Returns
    -------
    list of int

    Examples
    --------
    >>> integer_grid((2048, 1024), "target_sizes")
    [1024, 2048]
    """
    array = np.asarray(values) if _is_flat_sequence(values) else np.empty((0, 0))
    if (
        array.ndim != 1
        or array.size == 0
        or array.dtype.kind not in "iu"
        or any(isinstance(v, bool | np.bool_) for v in values)
        or np.any(array < minimum)
        or np.unique(array).size != array.size
    ):
        kind = "positive integers" if minimum == 1 else f"integers >= {minimum}"
        raise ValueError(f"{name} must be a non-empty 1-D list of distinct {kind}; got {values!r}.")
    return sorted(int(v) for v in array)


def positive_grid(values: Any, name: str) -> list[float]:
    """A grid of finite numbers ``> 0`` (e.g. inverse penalty strengths ``Cs``), sorted.

    Parameters
    ----------
    values : array-like of float
    name : str
        The parameter's name, for the error message.

    Returns
    -------
    list of float

    Examples
    --------
    >>> positive_grid([1.0, 0.1], "Cs")
    [0.1, 1.0]
    """
    numbers = _floats(values)
    if numbers.size == 0 or not np.all(np.isfinite(numbers) & (numbers > 0)):
        raise ValueError(
            f"{name} must be a non-empty 1-D list of finite numbers > 0; got {values!r}."
        )
    return sorted(float(v) for v in numbers)


def _is_flat_sequence(values: Any) -> bool:
    return not isinstance(values, str | bytes) and np.ndim(values) == 1


def _floats(values: Any) -> np.ndarray:
    if not _is_flat_sequence(values):
        return np.empty(0)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([np.nan])
    return array


def first_best(mean_scores: np.ndarray, simplicity: Sequence[int]) -> int:
    """The point with the best mean score; among equal means, the first in ``simplicity``.

    skh2t's one tie rule: every search lists its points from the simplest
    model to the most complex (e.g. the smaller keep fraction first, then the
    larger alpha, then the smaller target size), and the first maximum in
    that order wins.

    Parameters
    ----------
    mean_scores : ndarray of shape (n_points,)
        Mean validation score of every point (NaN never wins).
    simplicity : sequence of int
        A permutation of ``range(n_points)``, simplest first.

    Returns
    -------
    int
        The chosen point's index in ``mean_scores``.

    Examples
    --------
    >>> first_best(np.array([0.8, 0.9, 0.9]), simplicity=[2, 1, 0])
    2
    """
    order = np.asarray(simplicity, dtype=np.intp)
    ranked = np.where(np.isnan(mean_scores), -np.inf, mean_scores)[order]
    return int(order[int(np.argmax(ranked))])


def cheapest_within_one_standard_error(
    mean_scores: np.ndarray,
    std_scores: np.ndarray,
    n_splits: int,
    cost: np.ndarray,
    simplicity: Sequence[int],
) -> int:
    """The best point of the cheapest cost level that comes within one standard error of the best.

    The one-standard-error rule (Breiman et al., 1984): ``best`` is
    :func:`first_best`; its standard error is ``std / sqrt(n_splits)``; among
    the points whose mean score is at least ``mean[best] - se``, the smallest
    ``cost`` wins, and within that cost level :func:`first_best` chooses.

    Examples
    --------
    >>> mean, std = np.array([0.80, 0.88, 0.90]), np.array([0.05, 0.05, 0.05])
    >>> cheapest_within_one_standard_error(mean, std, 5, np.array([0.1, 0.5, 1.0]), [0, 1, 2])
    1
    """
    best = first_best(mean_scores, simplicity)
    bar = mean_scores[best] - std_scores[best] / np.sqrt(n_splits)
    cheapest = np.min(cost[mean_scores >= bar])
    return first_best(np.where(cost == cheapest, mean_scores, -np.inf), simplicity)


def simplicity_order(shape: Sequence[int], axes: Sequence[tuple[int, bool]]) -> np.ndarray:
    """The flat indices of a grid of ``shape``, simplest first, for :func:`first_best`.

    Parameters
    ----------
    shape : sequence of int
        The grid's shape (C order: the flat index of ``(i, j, k)`` is that of
        ``np.ravel_multi_index``).
    axes : sequence of (axis, increasing)
        The axes from the most to the least important for simplicity, each
        with whether a smaller index is simpler (``True``) or a larger one.

    Returns
    -------
    ndarray of int

    Examples
    --------
    >>> simplicity_order((2, 2), [(1, True), (0, False)]).tolist()
    [2, 0, 3, 1]
    """
    grids = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    keys = [
        grids[axis].ravel() if increasing else -grids[axis].ravel() for axis, increasing in axes
    ]
    return np.lexsort(keys[::-1])


class ConvergenceCount:
    """Context manager that counts the ``ConvergenceWarning`` raised inside it, and hides them.

    A search runs many fits; it reports how many did not converge once, in
    one warning and one attribute, rather than one warning per fit. Other
    warnings go through.

    Attributes
    ----------
    n : int
        The number of ``ConvergenceWarning`` caught.

    Examples
    --------
    >>> with ConvergenceCount() as count:
    ...     warnings.warn("did not converge", ConvergenceWarning)
    >>> count.n
    1
    """

    def __init__(self) -> None:
        self.n = 0
        self._catcher = warnings.catch_warnings(record=True)
        self._caught: list[warnings.WarningMessage] = []

    def __enter__(self) -> ConvergenceCount:
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always", ConvergenceWarning)
        return self

    def __exit__(self, *exc_info) -> None:
        self._catcher.__exit__(*exc_info)
        for caught in self._caught:
            if issubclass(caught.category, ConvergenceWarning):
                self.n += 1
            else:
                warnings.warn_explicit(
                    caught.message, caught.category, caught.filename, caught.lineno
                )


def split_folds(cv: Any, y: np.ndarray, random_state: Any = None) -> list[tuple]:
    """The (train, validation) index arrays of a classifier's ``cv`` parameter on labels ``y``.

    An int is the number of stratified folds, shuffled with ``random_state``;
    anything else goes through scikit-learn's ``check_cv``.

    Examples
    --------
    >>> folds = split_folds(3, np.arange(12) % 2, random_state=0)
    >>> validation = np.concatenate([valid for _, valid in folds])
    >>> len(folds), np.array_equal(np.sort(validation), np.arange(12))
    (3, True)
    """
    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        cv = StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=random_state)
    splitter = check_cv(cv, y, classifier=True)
    folds = list(splitter.split(np.zeros((len(y), 1)), y))
    for rows in (np.asarray(part) for fold in folds for part in fold):
        outside = rows[(rows < 0) | (rows >= len(y))]
        if outside.size:
            raise ValueError(
                f"cv's folds index row {outside[0]} but there are {len(y)} rows: give folds "
                f"of these {len(y)} rows."
            )
    return folds


def warn_not_converged(n_not_converged: int, what: str, fix: str) -> None:
    """One ``ConvergenceWarning`` for a search's ``n_not_converged`` unconverged fits."""
    if n_not_converged:
        warnings.warn(
            f"{n_not_converged} {what} did not converge; {fix}.", ConvergenceWarning, stacklevel=3
        )


def cv_results(
    params: list[dict[str, Any]],
    test_scores: np.ndarray,
    fit_times: np.ndarray | None = None,
    score_times: np.ndarray | None = None,
) -> dict[str, Any]:
    """Results of a search in ``GridSearchCV``'s ``cv_results_`` schema.

    Parameters
    ----------
    params : list of dict
        The parameters of every grid point, all with the same keys.
    test_scores : ndarray of shape (n_points, n_splits)
        Validation score of every point and fold.
    fit_times, score_times : ndarray of shape (n_points, n_splits), default=None
        Seconds of fitting and scoring every point on every fold; ``None``:
        zeros. In a path search a point's fit time is its share of the work
        the points share (see the estimator's documentation).

    Returns
    -------
    dict
        ``mean_fit_time``, ``std_fit_time``, ``mean_score_time``,
        ``std_score_time``, ``param_<name>`` (masked arrays), ``params``,
        ``split<k>_test_score``, ``mean_test_score``, ``std_test_score`` and
        ``rank_test_score`` (1 for the best mean; equal means share the
        smallest rank, as in ``GridSearchCV``); ``pandas.DataFrame`` shows it.

    Examples
    --------
    >>> results = cv_results([{"C": 0.1}, {"C": 1.0}], np.array([[0.7, 0.8], [0.9, 0.9]]))
    >>> results["mean_test_score"].tolist(), results["rank_test_score"].tolist()
    ([0.75, 0.9], [2, 1])
    """
    test_scores = np.asarray(test_scores, dtype=np.float64)
    zeros = np.zeros_like(test_scores)
    fit_times = zeros if fit_times is None else np.asarray(fit_times, dtype=np.float64)
    score_times = zeros if score_times is None else np.asarray(score_times, dtype=np.float64)
    results: dict[str, Any] = {
        "mean_fit_time": fit_times.mean(axis=1),
        "std_fit_time": fit_times.std(axis=1),
        "mean_score_time": score_times.mean(axis=1),
        "std_score_time": score_times.std(axis=1),
    }
    for name in params[0]:
        results[f"param_{name}"] = np.ma.MaskedArray([point[name] for point in params], mask=False)
    results["params"] = [dict(point) for point in params]
    for split in range(test_scores.shape[1]):
        results[f"split{split}_test_score"] = test_scores[:, split]
    mean = test_scores.mean(axis=1)
    results["mean_test_score"] = mean
    results["std_test_score"] = test_scores.std(axis=1)
    ranked = np.where(np.isnan(mean), -np.inf, mean)
    results["rank_test_score"] = (np.searchsorted(np.sort(-ranked), -ranked) + 1).astype(np.int32)
    return results
