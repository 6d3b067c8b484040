"""The three methods compared by ``skh2t run``, each cross-validated then refitted.

1. ``linear probe (last layer)``: L2 logistic regression on the backbone's
   pre-logits tap, ``C`` chosen by cross-validation.
2. ``all taps + L2``: L2 logistic regression on every intermediate feature,
   ``(target size, C)`` chosen by cross-validation.
3. ``Head2Toe``: group lasso, selection and refit, ``(target size, alpha,
   keep fraction)`` chosen by cross-validation.

All use the same feature matrices and the same folds; fit times are those of
the final fit on all training images (features already extracted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skh2t.cli import probes, selection
from skh2t.cli.extraction import last_layer_tap, tap_columns
from skh2t.cli.progress import Progress
from skh2t.features import IntermediateFeatureTransformer

LAST_LAYER = "linear probe (last layer)"
ALL_L2 = "all taps + L2"
HEAD2TOE = "Head2Toe"

Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Outcome:
    """A method's cross-validation results and final model.

    Attributes
    ----------
    method : str
    target_size : int
        The feature matrix (target size) the final model reads.
    model : object
        Has ``predict(X)`` on that full feature matrix.
    params : dict
        Chosen hyper-parameters.
    cv_accuracy : float
        Their mean validation accuracy.
    cv_results : list of dict
        Every grid point: ``params``, ``fold_scores``, ``mean``.
    n_features : int
        Features read by the final model.
    fit_seconds, cv_seconds : float
    n_not_converged : int
        Fits that stopped at their iteration limit.
    test_accuracy : float or None
        Filled in after the test evaluation.
    """

    method: str
    target_size: int
    model: Any
    params: dict[str, Any]
    cv_accuracy: float
    cv_results: list[dict[str, Any]]
    n_features: int
    fit_seconds: float
    cv_seconds: float
    n_not_converged: int
    test_accuracy: float | None = field(default=None)


def _cv_rows(grid: list[dict[str, Any]], scores: list[np.ndarray]) -> list[dict[str, Any]]:
    return [
        {"params": params, "fold_scores": s.tolist(), "mean": float(s.mean())}
        for params, s in zip(grid, scores, strict=True)
    ]


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Best mean accuracy; ties go to the earliest row (grids list cheaper models first)."""
    return max(rows, key=lambda row: row["mean"])  # max keeps the first of equal keys


def last_layer_probe(
    X: np.ndarray,
    transformer: IntermediateFeatureTransformer,
    y: np.ndarray,
    folds: Folds,
    Cs: list[float],
    progress: Progress,
) -> Outcome:
    """Linear probe on the pre-logits tap of ``transformer`` (columns of ``X``)."""
    tap = last_layer_tap(transformer)
    columns = tap_columns(transformer, tap)
    X_last = X[:, columns]
    start = time.perf_counter()
    with progress.bar(len(folds), f"CV {LAST_LAYER}", unit="fold") as bar:
        scores, bad = probes.cv_scores(probes.gram_matrix(X_last), y, folds, Cs, on_fold=bar.update)
    grid = [{"tap": transformer.taps_[tap].name, "C": C} for C in sorted(Cs)]
    order = np.argsort(Cs)  # strongest penalty first: ties go to it
    rows = _cv_rows(grid, [scores[i] for i in order])
    cv_seconds = time.perf_counter() - start
    best = _best(rows)
    start = time.perf_counter()
    head, bad_final = probes.fit_head(X_last, y, best["params"]["C"], columns=columns)
    return Outcome(
        LAST_LAYER,
        transformer.target_size,
        head,
        best["params"],
        best["mean"],
        rows,
        head.n_features,
        time.perf_counter() - start,
        cv_seconds,
        bad + bad_final,
    )


def all_taps_l2(
    features: dict[int, np.ndarray],
    y: np.ndarray,
    folds: Folds,
    Cs: list[float],
    progress: Progress,
) -> Outcome:
    """L2 logistic regression on all features, ``(target size, C)`` by cross-validation."""
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    bad = 0
    with progress.bar(len(features) * len(folds), f"CV {ALL_L2}", unit="fold") as bar:
        for target_size in sorted(features):
            gram = probes.gram_matrix(features[target_size])
            scores, n_bad = probes.cv_scores(gram, y, folds, Cs, on_fold=bar.update)
            bad += n_bad
            grid = [{"target_size": target_size, "C": C} for C in sorted(Cs)]
            rows += _cv_rows(grid, [scores[i] for i in np.argsort(Cs)])
    cv_seconds = time.perf_counter() - start
    best = _best(rows)
    target_size, C = best["params"]["target_size"], best["params"]["C"]
    start = time.perf_counter()
    head, bad_final = probes.fit_head(features[target_size], y, C)
    return Outcome(
        ALL_L2,
        target_size,
        head,
        best["params"],
        best["mean"],
        rows,
        head.n_features,
        time.perf_counter() - start,
        cv_seconds,
        bad + bad_final,
    )


def head2toe(
    features: dict[int, np.ndarray],
    y: np.ndarray,
    folds: Folds,
    alpha_fractions: list[float],
    keep_fractions: list[float],
    solver: selection.SolverSettings,
    progress: Progress,
) -> Outcome:
    """Head2Toe, ``(target size, alpha, keep fraction)`` by cross-validation."""
    start = time.perf_counter()
    total = len(features) * len(folds) * len(alpha_fractions)
    with progress.bar(total, f"CV {HEAD2TOE}", unit="path step") as bar:
        scores, bad = selection.cv_scores(
            features, y, folds, alpha_fractions, sorted(keep_fractions), solver, on_step=bar.update
        )
    cv_seconds = time.perf_counter() - start
    config = selection.best_config(scores)
    rows = _cv_rows([c.as_dict() for c in sorted(scores)], [scores[c] for c in sorted(scores)])
    start = time.perf_counter()
    clf, bad_final = selection.fit_final(features[config.target_size], y, config, solver)
    params = {**config.as_dict(), "alpha": float(clf.alpha)}
    return Outcome(
        HEAD2TOE,
        config.target_size,
        clf,
        params,
        float(scores[config].mean()),
        rows,
        int(clf.get_support().sum()),
        time.perf_counter() - start,
        cv_seconds,
        bad + bad_final,
    )
