"""The three methods compared by ``skh2t run``, each cross-validated then refitted.

1. ``linear probe (last layer)``: :func:`skh2t.probes.l2_probe_cv` on the
   backbone's pre-logits tap, ``C`` chosen by cross-validation.
2. ``all taps + L2``: :func:`skh2t.probes.l2_probe_cv` on every intermediate
   feature, ``(target size, C)`` chosen by cross-validation.
3. ``Head2Toe``: :class:`skh2t.Head2ToeClassifier`, ``(target size, alpha
   fraction, keep fraction)`` chosen by cross-validation.

All use the same folds; fit times are those of the final fit on all training
images (features already extracted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skh2t import Head2ToeClassifier
from skh2t.cli.progress import Progress
from skh2t.probes import ProbeSearch, l2_probe_cv, last_layer_columns, last_layer_tap

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
    n_available : int
        Features extracted at ``target_size`` (the table's "of N").
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
    n_available: int
    test_accuracy: float | None = field(default=None)


def last_layer_probe(
    features: dict[int, np.ndarray],
    transformer: Any,
    y: np.ndarray,
    folds: Folds,
    Cs: list[float],
    n_jobs: int | None,
    progress: Progress,
) -> Outcome:
    """Linear probe on the pre-logits tap (the same at every target size: read the smallest)."""
    target_size = min(features)
    tap = transformer.taps_[last_layer_tap(transformer)]
    columns = last_layer_columns(transformer)
    start = time.perf_counter()
    with progress.bar(len(folds), f"CV {LAST_LAYER}", unit="fold") as bar:
        search = l2_probe_cv(
            {target_size: features[target_size]},
            y,
            folds,
            Cs,
            columns=columns,
            n_jobs=n_jobs,
            on_fold=bar.update,
        )
    seconds = time.perf_counter() - start
    return _probe_outcome(LAST_LAYER, search, seconds, {"tap": tap.name}, features)


def all_taps_l2(
    features: dict[int, np.ndarray],
    y: np.ndarray,
    folds: Folds,
    Cs: list[float],
    n_jobs: int | None,
    progress: Progress,
) -> Outcome:
    """L2 logistic regression on all features, ``(target size, C)`` by cross-validation."""
    start = time.perf_counter()
    with progress.bar(len(features) * len(folds), f"CV {ALL_L2}", unit="fold") as bar:
        search = l2_probe_cv(features, y, folds, Cs, n_jobs=n_jobs, on_fold=bar.update)
    return _probe_outcome(ALL_L2, search, time.perf_counter() - start, None, features)


def _probe_outcome(
    method: str,
    search: ProbeSearch,
    seconds: float,
    fixed: dict[str, Any] | None,
    features: dict[int, np.ndarray],
) -> Outcome:
    """``fixed``: parameters shown instead of the target size (the last-layer probe's tap)."""

    def params(key: Any, C: float) -> dict[str, Any]:
        return {**(fixed if fixed is not None else {"target_size": key}), "C": C}

    rows = _cv_rows(search.cv_results, lambda point: params(point["features"], point["C"]))
    return Outcome(
        method,
        search.best_key,
        search.head,
        params(search.best_key, search.best_C),
        search.best_score,
        rows,
        search.head.n_features,
        search.fit_seconds,
        seconds - search.fit_seconds,
        search.n_not_converged,
        features[search.best_key].shape[1],
    )


def head2toe(model: Head2ToeClassifier, seconds: float, n_not_converged: int) -> Outcome:
    """The outcome of a fitted :class:`~skh2t.Head2ToeClassifier` (``seconds``: its fit)."""
    rows = _cv_rows(model.cv_results_, dict)
    return Outcome(
        HEAD2TOE,
        model.best_params_["target_size"],
        model.classifier_,
        {**model.best_params_, "alpha": model.alpha_},
        model.best_score_,
        rows,
        int(model.get_support().sum()),
        model.refit_time_,
        seconds - model.refit_time_,
        n_not_converged,
        model.transformer_.taps_[-1].stop,
    )


def _cv_rows(
    results: dict[str, Any], shown: Callable[[dict[str, Any]], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The JSON rows of a ``cv_results_``-schema dict; ``shown`` maps a point's parameters."""
    n_splits = sum(key.startswith("split") and key.endswith("_test_score") for key in results)
    folds = np.stack([results[f"split{k}_test_score"] for k in range(n_splits)], axis=1)
    return [
        {"params": shown(point), "fold_scores": folds[i].tolist(), "mean": float(mean)}
        for i, (point, mean) in enumerate(
            zip(results["params"], results["mean_test_score"], strict=True)
        )
    ]
