"""One cross-validation fold of a group-lasso grid: the warm path, every keep fraction, scored.

Shared by :class:`~skh2t.GroupLassoClassifierCV` and
:class:`~skh2t.Head2ToeClassifier`. The penalised fit does not depend on the
keep fraction: it is solved once per alpha (:func:`group_lasso_path`), and
only the selection and the refit run once per keep fraction. Every grid point
is scored on a fresh ``GroupLassoClassifier`` holding that point's model
(what ``GridSearchCV`` would score); no estimator is refitted or changed.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from skh2t.linear_model._group_lasso import GroupLassoClassifier, Problem, record_fit
from skh2t.linear_model._path import (
    SolverSettings,
    alpha_max,
    group_lasso_path,
    n_to_keep,
    refit_kept,
    select_features,
)
from skh2t.linear_model._search import cv_results
from skh2t.linear_model._solver.dask_rows import is_dask_array
from skh2t.linear_model._solver.rows import StackedRows
from skh2t.linear_model._solver.working_set import ColumnSummary
from skh2t.threads import on_one_blas_thread


@dataclass(frozen=True)
class PathGrid:
    """The grid of one path: alphas (decreasing) and keep fractions (increasing).

    ``relative``: the alphas are fractions of each fold's own ``alpha_max``.
    ``keep_fractions`` is ``[None]`` without selection.
    """

    alphas: np.ndarray
    keep_fractions: list
    relative: bool = False


@dataclass(frozen=True)
class FoldPath:
    """A fold's results on a :class:`PathGrid`, each of shape (n_alphas, n_keep_fractions).

    ``fit_times``: a point's share of the path, its alpha's penalised solve
    divided evenly among the keep fractions, plus its own refit.
    """

    scores: np.ndarray
    fit_times: np.ndarray
    score_times: np.ndarray
    n_not_converged: int  # penalised solves and refits that stopped short of tol


@on_one_blas_thread
def score_path_on_fold(
    params: dict,
    X: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    grid: PathGrid,
    scorer: Callable,
    weighted_scores: bool = True,
    on_alpha: Callable[[], None] | None = None,
    by_weight: bool = False,
) -> FoldPath:
    """Scores of one fold along the warm-started alpha path, every keep fraction per alpha.

    Parameters
    ----------
    params : dict
        ``GroupLassoClassifier.get_params()`` of the model of every point (its
        ``alpha``, ``alpha_fraction`` and ``keep_fraction`` are the grid's);
        groups as arrays, not ``"feature_name_prefix"``.
    X, y, sample_weight : ndarray
        All rows; ``train`` and ``test`` index them. ``X`` may be a numpy memmap
        or a 2-D dask array (float32 or float64, validated, chunked by rows),
        which are never gathered whole: see ``by_weight``.
    grid : PathGrid
    scorer : callable or None
        ``scorer(estimator, X_test, y_test)``, with ``sample_weight=`` the
        test rows' weights when ``weighted_scores``; ``None``: the
        estimators' ``score`` (accuracy).
    on_alpha : callable, default=None
        Called after every alpha (progress bars).
    by_weight : bool, default=False
        Train on all rows of ``X`` with the validation rows' weights set to
        zero, instead of on the training rows: the same problem, without
        gathering the training rows (for an ``X`` on disk, such as a memmap,
        the products then stream it). Used only when every class keeps a
        positive training weight (else the fold's rows are gathered). With
        ``scorer=None`` too, the accuracy is computed block by block of
        validation rows, which are then never gathered at once either. For a
        dask array, the products are dask reductions, and without
        ``by_weight`` the training rows are a lazy selection of its rows.

    Returns
    -------
    FoldPath

    Notes
    -----
    BLAS runs on one thread throughout (not only in the solvers): the number
    of threads changes the last bits of its products, and this function runs
    in this process or in a joblib worker depending on ``n_jobs``. On one
    thread, a fold gives the same floats wherever it runs.
    """
    X_train, y_train, w_train = _training_rows(X, y, sample_weight, train, test, by_weight)
    selecting = grid.keep_fractions != [None]
    problem = Problem.of(
        {**params, "keep_fraction": grid.keep_fractions[-1] if selecting else None},
        X.shape[1],
        y_train,
        w_train,
    )
    settings = SolverSettings(
        params["fit_intercept"], params["tol"], params["max_iter"], params["verbose"]
    )
    columns = ColumnSummary.of(X_train, problem.datafit, settings.fit_intercept)
    alphas = grid.alphas
    if grid.relative:
        top = alpha_max(X_train, problem.datafit, problem.groups, settings.fit_intercept, columns)
        alphas = alphas * top
    test_weight = sample_weight[test] if weighted_scores else None
    score = _validation_score(X, y, test, test_weight, scorer, blockwise=by_weight)
    shape = (len(alphas), len(grid.keep_fractions))
    scores, fit_times, score_times = np.empty(shape), np.empty(shape), np.empty(shape)
    n_not_converged = 0
    path = group_lasso_path(
        X_train, problem.datafit, problem.groups, alphas, settings, columns=columns
    )
    for i, fit in enumerate(path):
        n_not_converged += not fit.converged
        for j, fraction in enumerate(grid.keep_fractions):
            point = dataclasses.replace(problem, n_keep=n_to_keep(X.shape[1], fraction, None))
            support = select_features(fit, point.n_keep)
            refit = None
            if selecting:
                refit = refit_kept(
                    X_train,
                    point.datafit,
                    support,
                    params["refit_l2"],
                    settings,
                    renormalize_index=point.renormalize_index,
                    intercept_init=fit.intercept,
                )
                n_not_converged += not refit.converged
            head = _head(params, grid, i, fraction, point, fit, support, refit, X.shape[1])
            fit_times[i, j] = fit.seconds / len(grid.keep_fractions) + (
                refit.seconds if refit is not None else 0.0
            )
            started = time.perf_counter()
            scores[i, j] = score(head)
            score_times[i, j] = time.perf_counter() - started
        if on_alpha is not None:
            on_alpha()
    return FoldPath(scores, fit_times, score_times, n_not_converged)


SCORE_BLOCK_ROWS = 4096  # validation rows gathered at most at a time when scoring block by block
SCORE_BLOCK_BYTES = 8 * 2**20  # and at most this many bytes of them (a wide X: fewer rows)


def _validation_score(X, y, test, weight, scorer, *, blockwise: bool) -> Callable:
    """``score(head)`` on the validation rows: ``scorer`` on their gathered rows, or, for
    the accuracy (``scorer=None``) with ``blockwise``, accumulated block by block."""
    y_test = y[test]
    if scorer is None and blockwise:
        row_bytes = X.shape[1] * X.dtype.itemsize
        step = max(1, min(SCORE_BLOCK_ROWS, SCORE_BLOCK_BYTES // max(1, row_bytes)))

        def accuracy(head) -> float:
            correct = np.concatenate(
                [
                    head.predict(X[test[start : start + step]]) == y_test[start : start + step]
                    for start in range(0, len(test), step)
                ]
            )
            return float(np.average(correct, weights=weight))

        return accuracy
    # A dask array's validation rows stay lazy: the estimators predict on them block by block.
    X_test = X[test] if is_dask_array(X) else StackedRows.of(X, test).as_array()
    params = {} if weight is None else {"sample_weight": weight}
    if scorer is None:
        return lambda head: head.score(X_test, y_test, **params)
    return lambda head: scorer(head, X_test, y_test, **params)


def _training_rows(X, y, sample_weight, train, test, by_weight: bool):
    """The fold's training problem: its rows (views where they form a few runs, else a copy),
    or with ``by_weight`` all rows with the validation rows' weights at zero."""
    if by_weight and np.array_equal(np.unique(y[train]), np.unique(y)):
        weight = np.array(sample_weight, dtype=np.float64)
        weight[test] = 0.0
        return StackedRows.of(X), y, weight
    return StackedRows.of(X, train), y[train], sample_weight[train]


def _head(params, grid, alpha_index, fraction, problem, fit, support, refit, n_features):
    """A fitted GroupLassoClassifier holding one grid point's model."""
    point_params = {**params, "keep_fraction": fraction}
    if grid.relative:
        point_params["alpha_fraction"] = float(grid.alphas[alpha_index])
    else:
        point_params["alpha"] = float(fit.alpha)
    head = GroupLassoClassifier(**point_params)
    head.n_features_in_ = n_features
    return record_fit(head, problem, fit, support, refit)


def path_cv_results(points: list[dict], paths: list[FoldPath], leading: int = 0) -> dict:
    """``cv_results_`` of a path search, one point per (alpha, keep fraction) in C order.

    ``paths`` are the folds' results, in fold order; with ``leading`` > 0 the
    paths come in blocks of ``len(paths) // leading`` folds, one block per
    leading grid value (e.g. per target size), and ``points`` list the leading
    value first.
    """
    blocks = [paths] if leading == 0 else _blocks(paths, leading)

    def split(field: str) -> np.ndarray:
        per_block = [
            np.stack([getattr(path, field).ravel() for path in block], axis=1) for block in blocks
        ]
        return np.concatenate(per_block, axis=0)  # (n_points, n_folds)

    return cv_results(points, split("scores"), split("fit_times"), split("score_times"))


def _blocks(paths: list[FoldPath], n_blocks: int) -> list[list[FoldPath]]:
    size = len(paths) // n_blocks
    return [paths[b * size : (b + 1) * size] for b in range(n_blocks)]


@dataclass(frozen=True)
class FoldOrder:
    """Rows reordered so that every fold's validation rows form one contiguous block.

    ``order``: the permutation (``X[order]`` is the reordered data, which
    :meth:`apply_in_place` makes without a copy);
    ``folds``: the same folds as ``(train, test)`` indices into the reordered
    rows. A fold's training rows are then two runs at most, which
    :class:`~skh2t.linear_model._solver.rows.StackedRows` holds as views.
    """

    order: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def of(cls, folds: list[tuple[np.ndarray, np.ndarray]], n_rows: int) -> FoldOrder | None:
        """The order of ``folds``; ``None`` unless their validation sets partition the rows
        and every fold trains on all its other rows (not so for ``ShuffleSplit`` or repeated
        folds)."""
        tests = [np.asarray(test, dtype=np.intp) for _, test in folds]
        if not tests or not _partitions(tests, n_rows):
            return None
        if not all(
            _partitions([np.asarray(train), test], n_rows)
            for (train, _), test in zip(folds, tests, strict=True)
        ):
            return None
        bounds = np.cumsum([0] + [test.shape[0] for test in tests])
        rows = np.arange(n_rows)
        reordered = [
            (np.concatenate([rows[:start], rows[end:]]), rows[start:end])
            for start, end in itertools.pairwise(bounds)
        ]
        return cls(np.concatenate(tests), reordered)

    def apply_in_place(self, X: np.ndarray) -> np.ndarray:
        """Reorder the rows of ``X`` into fold order (``X[order]``), in place; returns ``X``."""
        return _take_rows_in_place(X, self.order)

    def restore_in_place(self, X: np.ndarray) -> np.ndarray:
        """Put the rows of reordered data ``X`` back in their original order, in place;
        returns ``X``."""
        original = np.empty_like(self.order)
        original[self.order] = np.arange(self.order.shape[0])
        return _take_rows_in_place(X, original)


def _take_rows_in_place(X: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``X[:] = X[source]`` for a permutation ``source``, with one row of extra memory (not
    a copy of ``X``): each cycle of the permutation is followed, moving whole rows."""
    placed = np.zeros(source.shape[0], dtype=bool)
    for start in range(source.shape[0]):
        if placed[start] or source[start] == start:
            continue
        saved, row = X[start].copy(), start
        while source[row] != start:
            X[row], placed[row], row = X[source[row]], True, source[row]
        X[row], placed[row] = saved, True
    return X


def _partitions(parts: list[np.ndarray], n_rows: int) -> bool:
    """Whether every row is in exactly one of ``parts``."""
    rows = np.concatenate(parts).astype(np.intp, copy=False)
    return rows.shape[0] == n_rows and bool(np.all(np.bincount(rows, minlength=n_rows) == 1))
