"""The linear-probe baselines of Head2Toe: L2 logistic regression on the last layer or all taps.

- :func:`last_layer_columns`: the columns of a transformer's pre-logits tap
  (the input of the backbone's classifier), the classic linear probe.
- :func:`l2_probe_cv`: an L2 logistic-regression probe cross-validated over
  ``C`` (and over several feature matrices, e.g. target sizes), refitted on
  all rows. ``skh2t run`` reports both probes next to Head2Toe.

The probes are fitted through the Gram matrix. With ``n`` training rows and
``d >> n`` features, an L2-penalised linear model only ever uses weights in
the row space of ``X``: writing ``X = U S V^T`` (thin SVD), ``X w = (U S)
(V^T w)`` and ``||V^T w|| <= ||w||``, so fitting
scikit-learn's ``LogisticRegression`` on the ``n x r`` matrix ``Z = U S`` and
mapping its coefficients back by ``w = V b`` gives the same model as fitting it
on ``X``, at a fraction of the cost. ``U`` and ``S`` come from the eigenvectors
of the Gram matrix ``X X^T``, computed once per feature matrix; every
cross-validation fold then only needs the eigen-decomposition of its own block.
Directions whose singular value is below ``1e-5`` of the largest are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.linear_model import LogisticRegression

from skh2t.linear_model._search import (
    ConvergenceCount,
    cv_results,
    first_best,
    positive_grid,
    simplicity_order,
)
from skh2t.linear_model._solver.row_space import to_column_coefficients
from skh2t.threads import on_one_blas_thread

__all__ = [
    "LinearHead",
    "ProbeSearch",
    "gram_matrix",
    "l2_probe_cv",
    "last_layer_columns",
    "last_layer_tap",
]

_GRAM_BLOCK = 8192  # columns per block of the float64 Gram product
_RELATIVE_EIGENVALUE_FLOOR = 1e-10  # singular values below 1e-5 of the largest are dropped


def gram_matrix(X: np.ndarray) -> np.ndarray:
    """``X @ X.T`` in float64, computed in column blocks (bounded memory).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)

    Returns
    -------
    ndarray of shape (n_samples, n_samples), float64

    Examples
    --------
    >>> X = np.arange(6, dtype=np.float32).reshape(2, 3)
    >>> gram_matrix(X)
    array([[ 5., 14.],
           [14., 50.]])
    """
    gram = np.zeros((X.shape[0], X.shape[0]))
    for start in range(0, X.shape[1], _GRAM_BLOCK):
        block = np.asarray(X[:, start : start + _GRAM_BLOCK], dtype=np.float64)
        gram += block @ block.T
    return gram


@dataclass
class _RowSpace:
    """Coordinates of training rows in the row space of their feature matrix.

    Attributes
    ----------
    basis : ndarray of shape (n_train, r)
        ``U / s``: maps Gram columns ``K[:, train]`` to coordinates ``Z``.
    Z : ndarray of shape (n_train, r)
        ``U s``, the training rows' coordinates.
    """

    basis: np.ndarray
    Z: np.ndarray

    @classmethod
    def from_gram(cls, gram: np.ndarray) -> _RowSpace:
        """Eigen-decompose the training rows' Gram block ``gram`` (n_train x n_train)."""
        eigenvalues, vectors = np.linalg.eigh(gram)
        top = eigenvalues.max(initial=0.0)
        keep = eigenvalues > top * _RELATIVE_EIGENVALUE_FLOOR
        if not keep.any():  # all-zero features: one zero coordinate
            return cls(np.zeros((gram.shape[0], 1)), np.zeros((gram.shape[0], 1)))
        root = np.sqrt(eigenvalues[keep])
        return cls(vectors[:, keep] / root, vectors[:, keep] * root)

    def coordinates(self, cross_gram: np.ndarray) -> np.ndarray:
        """Coordinates of other rows from their Gram block with the training rows."""
        return cross_gram @ self.basis


@dataclass
class LinearHead:
    """A fitted linear probe in the full feature space (or on a column subset).

    Attributes
    ----------
    coef : ndarray of shape (n_classes, n_columns)
    intercept : ndarray of shape (n_classes,)
    classes : ndarray of shape (n_classes,)
    columns : ndarray of int or None
        The feature columns it reads; ``None`` for all.
    """

    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    columns: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        """Number of features the model reads."""
        return self.coef.shape[1]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Class scores of every row of the full feature matrix ``X``; 1-D for binary."""
        if self.columns is not None:
            X = X[:, self.columns]
        scores = X @ self.coef.T.astype(X.dtype) + self.intercept
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class of every row of the full feature matrix ``X``."""
        scores = self.decision_function(X)
        if scores.ndim == 1:  # binary: one score, of classes[1]
            return self.classes[(scores > 0).astype(int)]
        return self.classes[np.argmax(scores, axis=1)]


def _logistic(C: float, max_iter: int) -> LogisticRegression:
    """The multinomial L2 logistic regression used by both probes."""
    return LogisticRegression(C=C, max_iter=max_iter)


@dataclass
class _FoldResult:
    """Validation accuracy and seconds of every ``C`` on one fold."""

    scores: np.ndarray
    fit_times: np.ndarray
    score_times: np.ndarray
    n_not_converged: int


@on_one_blas_thread
def _fold_scores(
    gram: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    valid: np.ndarray,
    Cs: list[float],
    max_iter: int,
) -> _FoldResult:
    """Validation accuracy of every ``C`` on one fold, its seconds, and the unconverged fits.

    The fold's eigen-decomposition (shared by its ``Cs``) is split evenly over
    their fit times, the coordinates of its validation rows over their score
    times. BLAS (the eigen-decomposition, L-BFGS) runs on one thread, so that
    the fold gives the same floats in this process and in a joblib worker.
    """
    started = time.perf_counter()
    space = _RowSpace.from_gram(gram[np.ix_(train, train)])
    shared_fit = time.perf_counter() - started
    started = time.perf_counter()
    Z_valid = space.coordinates(gram[np.ix_(valid, train)])
    shared_score = time.perf_counter() - started
    result = _FoldResult(
        np.zeros(len(Cs)),
        np.full(len(Cs), shared_fit / len(Cs)),
        np.full(len(Cs), shared_score / len(Cs)),
        0,
    )
    for i, C in enumerate(Cs):
        started = time.perf_counter()
        model, not_converged = _fit_logistic(space.Z, y[train], C, max_iter)
        result.fit_times[i] += time.perf_counter() - started
        result.n_not_converged += not_converged
        started = time.perf_counter()
        result.scores[i] = model.score(Z_valid, y[valid])
        result.score_times[i] += time.perf_counter() - started
    return result


def _fit_logistic(
    Z: np.ndarray, y: np.ndarray, C: float, max_iter: int
) -> tuple[LogisticRegression, int]:
    """The probe fitted on coordinates ``Z``, and 1 if it stopped at ``max_iter`` (else 0)."""
    with ConvergenceCount() as count:
        model = _logistic(C, max_iter).fit(Z, y)
    return model, int(count.n > 0)


def _fit_head(
    X: np.ndarray, y: np.ndarray, C: float, *, max_iter: int = 1000, columns=None
) -> tuple[LinearHead, int]:
    """Fit the L2 probe on all rows and express it in the space of ``X``'s columns.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The features the probe reads (already restricted to ``columns``).
    y : ndarray of shape (n,)
    C : float
    max_iter : int, default=1000
    columns : ndarray of int, default=None
        Recorded in the head: the columns of the full matrix that ``X`` holds.

    Returns
    -------
    head : LinearHead
    n_not_converged : int
        1 if the fit stopped at ``max_iter``, else 0.
    """
    space = _RowSpace.from_gram(gram_matrix(X))
    model, not_converged = _fit_logistic(space.Z, y, C, max_iter)
    coef = to_column_coefficients(model.coef_ @ space.basis.T, X)  # w = X^T (U / s) b
    head = LinearHead(coef, model.intercept_.copy(), model.classes_, columns)
    return head, not_converged


@dataclass
class ProbeSearch:
    """The result of :func:`l2_probe_cv`.

    Attributes
    ----------
    keys : list
        The feature matrices searched over (e.g. target sizes), in the order given.
    Cs : list of float
        The inverse L2 strengths, increasing (strongest penalty first).
    scores : ndarray of shape (n_keys, n_Cs, n_folds)
        Validation accuracy of every matrix, ``C`` and fold.
    cv_results : dict
        The same search in ``GridSearchCV``'s ``cv_results_`` schema, the layout
        shared by skh2t's other searches (``cv_results_`` of
        :class:`~skh2t.GroupLassoClassifierCV` and :class:`~skh2t.Head2ToeClassifier`);
        ``pandas.DataFrame(search.cv_results)`` shows it. One point per
        (matrix, ``C``), matrices outer and ``Cs`` inner (point
        ``i * n_Cs + j`` is ``scores[i, j]``), with parameters
        ``{"features": key, "C": C}``; the splits are the folds. A point's
        ``fit_time`` on a fold is its ``LogisticRegression`` fit plus an even
        share of the fold's eigen-decomposition (shared by its ``Cs``), its
        ``score_time`` its scoring plus an even share of the validation rows'
        coordinates; the Gram matrices, computed once on all rows before the
        folds, are in neither.
    best_key : hashable
        The chosen matrix.
    best_C : float
        The chosen ``C``.
    best_score : float
        Its mean validation accuracy.
    head : LinearHead
        The probe refitted on all rows of the chosen matrix; it reads the
        columns of that matrix given by ``columns``.
    n_not_converged : int
        Fits that stopped at ``max_iter``.
    fit_seconds : float
        Seconds of the final fit on all rows.
    """

    keys: list
    Cs: list[float]
    scores: np.ndarray
    best_key: Hashable
    best_C: float
    best_score: float
    head: LinearHead
    n_not_converged: int
    fit_seconds: float
    cv_results: dict[str, Any]


def l2_probe_cv(
    features: Mapping[Hashable, np.ndarray],
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    Cs: list[float],
    *,
    columns: np.ndarray | None = None,
    max_iter: int = 1000,
    n_jobs: int | None = None,
    on_fold: Callable[[], None] | None = None,
) -> ProbeSearch:
    """Cross-validate an L2 logistic-regression probe over ``C`` and feature matrices; refit.

    scikit-learn's ``LogisticRegression(C=C)`` (multinomial, lbfgs) on every
    fold, fitted in the row space of the features (see the module docstring:
    the same model, at the cost of an ``n x n`` problem). The best mean
    accuracy wins; ties go to the smaller ``C`` (the stronger penalty), then
    to the earlier matrix, as in skh2t's other searches (the simpler model).

    Parameters
    ----------
    features : mapping of key -> ndarray of shape (n_samples, n_features_key)
        The training features, e.g. one matrix per target size.
    y : ndarray of shape (n_samples,)
    folds : list of (train, validation) index arrays
    Cs : list of float
        Inverse L2 strengths: finite and positive (a ``ValueError`` otherwise,
        before any work).
    columns : ndarray of int, default=None
        Only these columns of every matrix (e.g. :func:`last_layer_columns`).
    max_iter : int, default=1000
        ``LogisticRegression``'s iteration limit.
    n_jobs : int, default=None
        Processes for the (matrix, fold) pairs (joblib; ``-1``: all cores).
        The scores do not depend on it: every pair runs BLAS on one thread,
        here as in a worker.
    on_fold : callable, default=None
        Called after every (matrix, fold) pair (progress bars).

    Returns
    -------
    ProbeSearch

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import StratifiedKFold
    >>> X, y = load_digits(return_X_y=True)
    >>> folds = list(StratifiedKFold(3).split(X, y))
    >>> search = l2_probe_cv({"pixels": X / 16, "half": X[:, :32] / 16}, y, folds, [0.1, 1.0])
    >>> search.scores.shape, search.best_key
    ((2, 2, 3), 'pixels')
    >>> search.cv_results["params"][0], search.cv_results["rank_test_score"].shape
    ({'features': 'pixels', 'C': 0.1}, (4,))
    >>> bool((search.head.predict(X / 16) == y).mean() > 0.95)
    True
    """
    Cs = positive_grid(Cs, "Cs")
    keys = list(features)
    grams = [gram_matrix(_columns(features[key], columns)) for key in keys]
    tasks = [(i, j) for i in range(len(keys)) for j in range(len(folds))]
    done = Parallel(n_jobs=min(effective_n_jobs(n_jobs), len(tasks)), return_as="generator")(
        delayed(_fold_scores)(grams[i], y, *folds[j], Cs, max_iter) for i, j in tasks
    )
    shape = (len(keys), len(Cs), len(folds))
    scores, fit_times, score_times, n_not_converged = _collect(tasks, done, shape, on_fold)
    flat = (len(keys) * len(Cs), len(folds))
    params = [{"features": key, "C": C} for key in keys for C in Cs]
    results = cv_results(
        params, scores.reshape(flat), fit_times.reshape(flat), score_times.reshape(flat)
    )
    best = first_best(results["mean_test_score"], _probe_simplicity(len(keys), len(Cs)))
    best_key, best_C = np.unravel_index(best, shape[:2])
    X = _columns(features[keys[best_key]], columns)
    started = time.perf_counter()
    head, bad = _fit_head(X, y, Cs[best_C], max_iter=max_iter, columns=columns)
    fit_seconds = time.perf_counter() - started
    return ProbeSearch(
        keys=keys,
        Cs=Cs,
        scores=scores,
        best_key=keys[best_key],
        best_C=Cs[best_C],
        best_score=float(results["mean_test_score"][best]),
        head=head,
        n_not_converged=n_not_converged + bad,
        fit_seconds=fit_seconds,
        cv_results=results,
    )


def _collect(
    tasks: list[tuple[int, int]],
    done: Any,
    shape: tuple[int, int, int],
    on_fold: Callable[[], None] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Scores, fit and score times of shape (n_keys, n_Cs, n_folds), and the unconverged fits."""
    scores, fit_times, score_times = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    n_not_converged = 0
    for (i, j), fold in zip(tasks, done, strict=True):
        scores[i, :, j] = fold.scores
        fit_times[i, :, j], score_times[i, :, j] = fold.fit_times, fold.score_times
        n_not_converged += fold.n_not_converged
        if on_fold is not None:
            on_fold()
    return scores, fit_times, score_times, n_not_converged


def _probe_simplicity(n_keys: int, n_Cs: int) -> np.ndarray:
    """The (matrix, ``C``) points simplest first: the smaller ``C``, then the earlier matrix."""
    return simplicity_order((n_keys, n_Cs), [(1, True), (0, True)])


def _columns(X: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
    return X if columns is None else X[:, columns]


def last_layer_columns(transformer: Any) -> np.ndarray:
    """Columns of a fitted transformer's last-layer tap: the input of the backbone's classifier.

    That is the pre-logits vector (``classifier:input`` for EfficientNets,
    ``fc:input`` for ResNets, ``head:input`` for ViTs), the features of the
    classic linear probe; the same at every target size (a vector is never
    pooled). Without such a tap, the last tap that is not the model's output.

    Parameters
    ----------
    transformer : IntermediateFeatureTransformer
        Fitted.

    Returns
    -------
    ndarray of int

    Examples
    --------
    >>> from skh2t.features import IntermediateFeatureTransformer
    >>> images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    >>> features = IntermediateFeatureTransformer(
    ...     backbone="test_resnet", weights=None, image_size=32, target_size=64
    ... ).fit(images)
    >>> columns = last_layer_columns(features)
    >>> features.get_feature_names_out()[columns[0]]
    'fc:input__0'
    """
    tap = transformer.taps_[last_layer_tap(transformer)]
    return np.arange(tap.start, tap.stop)


def last_layer_tap(transformer: Any) -> int:
    """Index in ``taps_`` of the tap :func:`last_layer_columns` reads."""
    from skh2t.features.taps import _classifier_name  # torch: imported when needed

    taps = transformer.taps_
    head = _classifier_name(transformer.backbone_)
    if head is not None:
        for index, tap in enumerate(taps):
            if tap.module == head and tap.hook == "input":
                return index
    outputs = {head, ""} if head is not None else {""}
    candidates = [i for i, tap in enumerate(taps) if tap.module not in outputs]
    return candidates[-1] if candidates else len(taps) - 1
