"""The Head2Toe protocol (VTAB-1k style): Head2Toe against two linear probes, on the same folds.

:func:`compare_methods` runs three methods on the same training images and
the same folds, with one pass of the backbone over the training images for
all of them (and one over the test images), and returns a
:class:`Comparison`:

1. ``linear probe (last layer)``: an L2 logistic regression on the backbone's
   pre-logits tap (:func:`skh2t.probes.l2_probe_cv`), ``C`` by cross-validation;
2. ``all taps + L2``: the same on every intermediate feature, ``(pooling, C)``
   by cross-validation;
3. ``Head2Toe``: :class:`~skh2t.Head2ToeClassifier`, ``(pooling, alpha
   fraction, keep fraction)`` by cross-validation.

Every method is refitted on all training images with its chosen parameters
and, when test images are given, scored on them. With the estimator's
``selection_samples``, the probes and Head2Toe's selection see only that
stratified subsample of the training images; Head2Toe's head is then refitted
on all of them. ``skh2t run`` prints this
comparison; ``benchmarks/bench_tasks.py`` runs it on every task of the suite.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import clone
from sklearn.utils import check_random_state

from skh2t.head2toe import (
    Head2ToeClassifier,
    check_image_labels,
    selection_folds,
    selection_rows,
)
from skh2t.linear_model._search import positive_grid
from skh2t.probes import ProbeSearch, l2_probe_cv, last_layer_columns, last_layer_tap
from skh2t.progress import progress_bar

__all__ = [
    "ALL_TAPS",
    "HEAD2TOE",
    "LAST_LAYER",
    "Comparison",
    "ComparisonTimes",
    "MethodResult",
    "compare_methods",
    "format_table",
]

LAST_LAYER = "linear probe (last layer)"
ALL_TAPS = "all taps + L2"
HEAD2TOE = "Head2Toe"

Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class MethodResult:
    """One method of a :class:`Comparison`: its search, its final model and its scores.

    Attributes
    ----------
    method : str
        :data:`LAST_LAYER`, :data:`ALL_TAPS` or :data:`HEAD2TOE`.
    params : dict
        The chosen hyper-parameters (the last-layer probe's also name its
        ``tap``; Head2Toe's also give the absolute ``alpha`` of the final refit).
    cv_accuracy : float
        Their mean validation accuracy.
    cv_results : dict of ndarray
        Every grid point, in ``GridSearchCV``'s ``cv_results_`` schema
        (``pandas.DataFrame(cv_results)`` shows it).
    pooling : int
        The target size (or stride) whose features ``model`` reads.
    model : object
        The model refitted on all training images (a probe's: on the
        subsample, with a ``selection_samples``): ``predict(X)`` on the
        features of ``pooling`` (all their columns).
    n_features : int
        Features the final model reads.
    n_available : int
        Features extracted at ``pooling``.
    fit_seconds : float
        The final fit of ``model`` (features already extracted).
    cv_seconds : float
        The cross-validation (Head2Toe's: its fit's time less the final
        refit, so it includes the extraction of the training features).
    n_not_converged : int
        Fits of the cross-validation and the final fit that stopped short of
        their tolerance.
    test_accuracy : float or None
        Accuracy on the test images; ``None`` without them.
    test_predictions : ndarray of shape (n_test_images,) or None
        The final model's predicted labels of the test images (e.g. for a
        confusion matrix, or a paired comparison of two methods); ``None``
        without them.
    """

    method: str
    params: dict[str, Any]
    cv_accuracy: float
    cv_results: dict[str, Any]
    pooling: int
    model: Any
    n_features: int
    n_available: int
    fit_seconds: float
    cv_seconds: float
    n_not_converged: int
    test_accuracy: float | None = field(default=None)
    test_predictions: np.ndarray | None = field(default=None, repr=False)


@dataclass
class ComparisonTimes:
    """Seconds of the parts of :func:`compare_methods`.

    Attributes
    ----------
    head2toe_fit : float
        ``Head2ToeClassifier.fit``: the training features, its cross-validation, its refit.
    probes : float
        Both probes' cross-validations and refits, on Head2Toe's training features.
    test : float
        The test features (one pass) and every method's predictions.
    total : float
    """

    head2toe_fit: float
    probes: float
    test: float
    total: float


@dataclass
class Comparison:
    """The result of :func:`compare_methods`.

    ``str(comparison)`` is the table that ``skh2t run`` prints.

    Attributes
    ----------
    results : list of MethodResult
        One per method: :data:`LAST_LAYER`, :data:`ALL_TAPS`, :data:`HEAD2TOE`.
        ``comparison[HEAD2TOE]`` looks one up by name.
    head2toe : Head2ToeClassifier
        The fitted Head2Toe model (it predicts on images), with the
        parameters of the estimator given.
    transformers : dict of int to IntermediateFeatureTransformer
        A fitted transformer per pooling of the grid, all sharing the backbone.
    folds : list of (train, validation) index arrays
        The folds every method was cross-validated on (with a subsample, they
        index its rows: ``selection_indices[train]`` are training images).
    pooling_name : str
        ``"target_size"`` or ``"pool_stride"``: what the poolings are.
    times : ComparisonTimes
    n_train : int
        The training images.
    selection_indices : ndarray of int or None
        With the estimator's ``selection_samples``: the training images
        (increasing) that the probes and Head2Toe's selection were fitted on,
        ``comparison.head2toe.selection_indices_``; ``None`` when all of them.
    """

    results: list[MethodResult]
    head2toe: Head2ToeClassifier
    transformers: dict[int, Any]
    folds: Folds
    pooling_name: str
    times: ComparisonTimes
    n_train: int = 0
    selection_indices: np.ndarray | None = field(default=None, repr=False)

    def __getitem__(self, method: str) -> MethodResult:
        for result in self.results:
            if result.method == method:
                return result
        raise KeyError(f"no method {method!r}; the methods are {[r.method for r in self.results]}")

    def __str__(self) -> str:
        return self.table()

    def table(self) -> str:
        """The comparison as an aligned plain-text table, one row per method; with a
        subsample, a line under it says how many images the probes were fitted on."""
        caption = self.selection_caption()
        return format_table(self.results) + ("" if caption is None else f"\n{caption}")

    def selection_caption(self) -> str | None:
        """How many training images the probes and Head2Toe's selection saw, with a
        subsample; ``None`` without one."""
        if self.selection_indices is None:
            return None
        return (
            f"probes and Head2Toe's selection: {len(self.selection_indices)} of "
            f"{self.n_train} training images; Head2Toe's head refitted on all"
        )

    def to_frame(self) -> Any:
        """The comparison as a ``pandas.DataFrame``, one row per method (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as error:  # pandas is not a dependency of skh2t
            raise ImportError("Comparison.to_frame needs pandas: pip install pandas") from error
        columns = [
            "cv_accuracy",
            "test_accuracy",
            "n_features",
            "n_available",
            "pooling",
            "fit_seconds",
            "cv_seconds",
            "n_not_converged",
            "params",
        ]
        rows = {r.method: [getattr(r, name) for name in columns] for r in self.results}
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
        frame.index.name = "method"
        return frame

    def kept_per_tap(self) -> list[dict[str, Any]]:
        """Head2Toe's kept features per tap (:func:`skh2t.plotting.kept_features_per_tap`)."""
        from skh2t.plotting import kept_features_per_tap

        return kept_features_per_tap(self.head2toe)

    def plot_kept_per_tap(self, ax: Any = None, *, title: str | None = None) -> Any:
        """Head2Toe's kept features per tap as a bar chart; returns the axes.

        See :func:`skh2t.plotting.plot_kept_features`.
        """
        from skh2t.plotting import plot_kept_features

        return plot_kept_features(self.head2toe, ax, title=title)


def compare_methods(
    head2toe: Head2ToeClassifier,
    X: Any,
    y: ArrayLike,
    *,
    X_test: Any = None,
    y_test: ArrayLike | None = None,
    Cs: Sequence[float] = (1.0, 10.0, 100.0),
    verbose: int = 0,
) -> Comparison:
    """Head2Toe against two linear probes, on the same folds, with one backbone pass.

    A clone of ``head2toe`` is fitted on ``X`` with its features kept
    (``store_features``); the last-layer probe and the all-taps probe are
    then cross-validated over ``Cs`` on those features and on the same folds
    (``head2toe``'s ``cv``, split once), and refitted on all training images.
    The test images, if given, go through the backbone once, in chunks, for
    every pooling a final model reads.

    With the estimator's ``selection_samples`` (fewer than the training
    images), the selection runs on the stratified subsample
    :func:`skh2t.head2toe.selection_rows` draws (the one ``head2toe``'s own
    ``fit`` draws): ``cv`` splits the subsample, and both probes are
    cross-validated **and refitted** on the subsample's features and labels
    only, while Head2Toe refits its head on the kept features of every
    training image (its ``feature_store`` and ``feature_store_dtype`` apply as
    in its ``fit``). ``Comparison.selection_indices`` names the subsample and
    the table says so under its rows.

    With a ``compute_budget``, every
    method reads only the taps within it, and the last-layer probe reads the
    deepest of them (:func:`skh2t.probes.last_layer_columns`: the last tap
    that is not the model's output); its ``params`` name the tap.

    Parameters
    ----------
    head2toe : Head2ToeClassifier
        The backbone, the grid (poolings, alpha and keep fractions), ``cv``,
        ``random_state``, ``n_jobs`` (also the probes'), and the runtime
        settings. Its ``scoring`` must be ``None`` (accuracy, as the probes').
        Not modified.
    X : array-like of images or list of paths / PIL images
        Training images.
    y : array-like of shape (n_images,)
        Their labels.
    X_test, y_test : default=None
        Test images and labels, both or neither.
    Cs : sequence of float, default=(1.0, 10.0, 100.0)
        The probes' inverse L2 strengths.
    verbose : int, default=0
        Progress bars (the extraction, every cross-validation, the test pass).

    Returns
    -------
    Comparison

    Examples
    --------
    >>> import numpy as np
    >>> from skh2t import Head2ToeClassifier, compare_methods
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    >>> labels = np.arange(30) % 2
    >>> images[labels == 1, :16] //= 4  # class 1: a darker top half
    >>> head2toe = Head2ToeClassifier(
    ...     backbone="test_resnet", weights=None, image_size=32, target_sizes=[64, 256],
    ...     alpha_fractions=[0.3, 0.1], keep_fractions=[0.05, 0.2], cv=3, random_state=0,
    ... )
    >>> comparison = compare_methods(
    ...     head2toe, images[:24], labels[:24], X_test=images[24:], y_test=labels[24:], Cs=[1.0]
    ... )
    >>> [result.method for result in comparison.results]
    ['linear probe (last layer)', 'all taps + L2', 'Head2Toe']
    >>> sorted(comparison["Head2Toe"].params)
    ['alpha', 'alpha_fraction', 'keep_fraction', 'target_size']
    >>> comparison.to_frame().columns[:2].tolist()  # needs pandas
    ['cv_accuracy', 'test_accuracy']

    ``print(comparison)`` shows the table of ``skh2t run``.
    """
    from skh2t.features.images import as_images

    started = time.perf_counter()
    images = as_images(X)
    y = check_image_labels(y, len(images))
    test = _test_set(X_test, y_test)
    Cs = positive_grid(Cs, "Cs")
    if head2toe.scoring is not None:
        raise ValueError(
            f"compare_methods compares accuracies: the Head2ToeClassifier's scoring must be "
            f"None, not {head2toe.scoring!r}."
        )
    if head2toe.compute_budgets is not None:
        raise ValueError(
            "compare_methods compares the methods on the same features: give the "
            "Head2ToeClassifier one compute_budget, not a grid of compute_budgets."
        )
    selection = _Selection.of(head2toe, y)
    y_selected = y if selection.rows is None else y[selection.rows]
    subsample = None if selection.rows is None else head2toe.selection_samples
    folds = selection_folds(head2toe.cv, y_selected, head2toe.random_state, subsample)

    model, features, h2t_seconds = _fit_head2toe(head2toe, images, y, folds, selection, verbose)
    pooling_name = "pool_stride" if head2toe.pool_strides is not None else "target_size"
    transformers = _transformers(model, features, pooling_name)
    start = time.perf_counter()
    results = [
        _last_layer_probe(features, transformers, y_selected, folds, Cs, model.n_jobs, verbose),
        _all_taps_probe(features, y_selected, folds, Cs, model.n_jobs, verbose, pooling_name),
    ]
    probe_seconds = time.perf_counter() - start
    del features
    results.append(_head2toe_result(model, h2t_seconds, transformers, pooling_name))
    test_seconds = 0.0
    if test is not None:
        test_seconds = _score_on_test(results, transformers, *test, verbose)
    times = ComparisonTimes(h2t_seconds, probe_seconds, test_seconds, time.perf_counter() - started)
    return Comparison(
        results, model, transformers, folds, pooling_name, times, len(y), selection.rows
    )


@dataclass(frozen=True)
class _Selection:
    """The subsample a Head2ToeClassifier's selection runs on, and the random state its fit
    must draw it from again.

    ``rows`` is ``None`` for all images. ``random_state`` is the estimator's,
    except that ``None`` or a ``RandomState`` becomes a copy of the generator
    before the draw: the clone's ``fit`` then draws the same rows.
    """

    rows: np.ndarray | None
    random_state: Any

    @classmethod
    def of(cls, head2toe: Head2ToeClassifier, y: np.ndarray) -> _Selection:
        state = head2toe.random_state
        if head2toe.selection_samples is not None and not isinstance(state, (int, np.integer)):
            state = copy.deepcopy(check_random_state(state))
        rows = selection_rows(y, head2toe.selection_samples, copy.deepcopy(state))
        return cls(rows, state)


def _test_set(X_test: Any, y_test: ArrayLike | None) -> tuple[Any, np.ndarray] | None:
    if (X_test is None) != (y_test is None):
        raise ValueError("Pass both X_test and y_test, or neither.")
    if X_test is None:
        return None
    from skh2t.features.images import as_images

    images = as_images(X_test)
    return images, check_image_labels(y_test, len(images), "y_test")


def _fit_head2toe(
    head2toe: Head2ToeClassifier,
    images: Any,
    y: np.ndarray,
    folds: Folds,
    selection: _Selection,
    verbose: int,
) -> tuple[Head2ToeClassifier, dict[int, np.ndarray], float]:
    """The fitted clone (with ``head2toe``'s parameters), its training features (the
    subsample's, with one), its fit time."""
    model = clone(head2toe)
    random_state = model.random_state
    model.set_params(
        cv=folds, store_features=True, verbose=verbose, random_state=selection.random_state
    )
    start = time.perf_counter()
    model.fit(images, y)
    seconds = time.perf_counter() - start
    if not _same_rows(model.selection_indices_, selection.rows):
        raise RuntimeError("Head2ToeClassifier.fit drew another subsample than selection_rows")
    features = model.training_features_
    if not head2toe.store_features:
        del model.training_features_
    model.set_params(
        cv=head2toe.cv,
        store_features=head2toe.store_features,
        verbose=head2toe.verbose,
        random_state=random_state,
    )
    return model, features, seconds


def _same_rows(rows: np.ndarray | None, expected: np.ndarray | None) -> bool:
    if rows is None or expected is None:
        return rows is expected
    return np.array_equal(rows, expected)


def _transformers(
    model: Head2ToeClassifier, features: dict[int, np.ndarray], pooling_name: str
) -> dict[int, Any]:
    """A fitted transformer per pooling, sharing the Head2Toe model's backbone."""
    chosen = model.transformer_
    return {
        p: chosen if getattr(chosen, pooling_name) == p else chosen.repool(**{pooling_name: p})
        for p in features
    }


def _last_layer_probe(
    features: dict[int, np.ndarray],
    transformers: dict[int, Any],
    y: np.ndarray,
    folds: Folds,
    Cs: list[float],
    n_jobs: int | None,
    verbose: int,
) -> MethodResult:
    """The probe on the pre-logits tap: the same at every pooling, so read the narrowest."""
    pooling = min(features, key=lambda p: features[p].shape[1])
    transformer = transformers[pooling]
    tap = transformer.taps_[last_layer_tap(transformer)].name
    start = time.perf_counter()
    with progress_bar(
        total=len(folds), desc=f"CV {LAST_LAYER}", unit="fold", disable=not verbose
    ) as bar:
        search = l2_probe_cv(
            {tap: features[pooling]},  # keyed by the tap: the points' parameter
            y,
            folds,
            Cs,
            columns=last_layer_columns(transformer),
            n_jobs=n_jobs,
            on_fold=bar.update,
        )
    seconds = time.perf_counter() - start
    cv_results = _renamed_param(search.cv_results, "features", "tap")
    params = {"tap": tap, "C": search.best_C}
    n_available = features[pooling].shape[1]
    return _probe_result(LAST_LAYER, search, params, cv_results, seconds, pooling, n_available)


def _all_taps_probe(
    features: dict[int, np.ndarray],
    y: np.ndarray,
    folds: Folds,
    Cs: list[float],
    n_jobs: int | None,
    verbose: int,
    pooling_name: str,
) -> MethodResult:
    """The probe on every feature, ``(pooling, C)`` by cross-validation."""
    start = time.perf_counter()
    with progress_bar(
        total=len(features) * len(folds), desc=f"CV {ALL_TAPS}", unit="fold", disable=not verbose
    ) as bar:
        search = l2_probe_cv(features, y, folds, Cs, n_jobs=n_jobs, on_fold=bar.update)
    seconds = time.perf_counter() - start
    cv_results = _renamed_param(search.cv_results, "features", pooling_name)
    params = {pooling_name: search.best_key, "C": search.best_C}
    pooling = search.best_key
    n_available = features[pooling].shape[1]
    return _probe_result(ALL_TAPS, search, params, cv_results, seconds, pooling, n_available)


def _probe_result(
    method: str,
    search: ProbeSearch,
    params: dict[str, Any],
    cv_results: dict[str, Any],
    seconds: float,
    pooling: int,
    n_available: int,
) -> MethodResult:
    return MethodResult(
        method=method,
        params=params,
        cv_accuracy=search.best_score,
        cv_results=cv_results,
        pooling=pooling,
        model=search.head,
        n_features=search.head.n_features,
        n_available=n_available,
        fit_seconds=search.fit_seconds,
        cv_seconds=seconds - search.fit_seconds,
        n_not_converged=search.n_not_converged,
    )


def _renamed_param(results: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``cv_results`` with parameter ``old`` renamed to ``new``, in place of ``old``."""
    renamed = {f"param_{new}" if key == f"param_{old}" else key: v for key, v in results.items()}
    renamed["params"] = [
        {new if name == old else name: v for name, v in point.items()}
        for point in results["params"]
    ]
    return renamed


def _head2toe_result(
    model: Head2ToeClassifier, seconds: float, transformers: dict[int, Any], pooling_name: str
) -> MethodResult:
    pooling = model.best_params_[pooling_name]
    return MethodResult(
        method=HEAD2TOE,
        params={**model.best_params_, "alpha": model.alpha_},
        cv_accuracy=model.best_score_,
        cv_results=model.cv_results_,
        pooling=pooling,
        model=model.classifier_,
        n_features=int(model.get_support().sum()),
        n_available=transformers[pooling].taps_[-1].stop,
        fit_seconds=model.refit_time_,
        cv_seconds=seconds - model.refit_time_,
        n_not_converged=model.n_not_converged_,
    )


def _score_on_test(
    results: list[MethodResult],
    transformers: dict[int, Any],
    images: Any,
    y_test: np.ndarray,
    verbose: int,
) -> float:
    """Fill in every method's test predictions and accuracy from one pass over the test
    images, in chunks; return its seconds."""
    from skh2t.features.joint import iter_transform_jointly

    start = time.perf_counter()
    needed = sorted({result.pooling for result in results})
    predictions: list[list[np.ndarray]] = [[] for _ in results]
    chunks = iter_transform_jointly(
        [transformers[p] for p in needed],
        images,
        desc="Test features",
        verbose=bool(verbose),
    )
    for _, matrices in chunks:
        by_pooling = dict(zip(needed, matrices, strict=True))
        for predicted, result in zip(predictions, results, strict=True):
            predicted.append(result.model.predict(by_pooling[result.pooling]))
    for predicted, result in zip(predictions, results, strict=True):
        result.test_predictions = np.concatenate(predicted)
        result.test_accuracy = float(np.mean(result.test_predictions == y_test))
    return time.perf_counter() - start


def format_table(results: Sequence[MethodResult]) -> str:
    """The comparison table, one row per method, aligned, plain text.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> row = SimpleNamespace(method="Head2Toe", cv_accuracy=0.9, test_accuracy=0.8912,
    ...                       n_features=500, n_available=2000, fit_seconds=1.234)
    >>> print(format_table([row]))
    method    CV acc  test acc        features used  fit s
    --------  ------  --------  -------------------  -----
    Head2Toe  0.9000    0.8912  500 of 2000 (25.0%)    1.2
    """
    header = ["method", "CV acc", "test acc", "features used", "fit s"]
    rows = [
        [
            r.method,
            f"{r.cv_accuracy:.4f}",
            "-" if r.test_accuracy is None else f"{r.test_accuracy:.4f}",
            f"{r.n_features} of {r.n_available} ({100 * r.n_features / r.n_available:.1f}%)",
            f"{r.fit_seconds:.1f}",
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [_line(header, widths), _line(["-" * w for w in widths], widths)]
    lines += [_line(row, widths) for row in rows]
    return "\n".join(lines)


def _line(cells: list[str], widths: list[int]) -> str:
    first = cells[0].ljust(widths[0])
    rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join([first, *rest]).rstrip()
