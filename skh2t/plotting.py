"""Which depths Head2Toe chose: kept features per tap of a fitted pipeline, and their plot."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "draw_kept_per_tap",
    "figure_size_for_taps",
    "kept_features_per_tap",
    "plot_kept_features",
]


def kept_features_per_tap(model: Any) -> list[dict[str, Any]]:
    """Count the features a fitted Head2Toe pipeline kept from every tap.

    Parameters
    ----------
    model : Pipeline or Head2ToeClassifier
        A fitted :class:`~skh2t.Head2ToeClassifier`, or a fitted pipeline
        whose first step is an
        :class:`~skh2t.features.IntermediateFeatureTransformer` and whose last
        step has ``get_support()`` (such as
        :class:`~skh2t.GroupLassoClassifier` with a keep fraction).

    Returns
    -------
    rows : list of dict
        One row per tap, in network order, with keys ``"tap"`` (its name),
        ``"kept"`` (kept features), ``"n_features"`` (the tap's features) and
        ``"cost"`` (its share of the backbone's forward FLOPs, the
        transformer's ``tap_costs_``).
        ``pandas.DataFrame(rows)`` shows it as a table.

    Examples
    --------
    >>> from sklearn.pipeline import Pipeline
    >>> from skh2t import GroupLassoClassifier, IntermediateFeatureTransformer
    >>> from skh2t.plotting import kept_features_per_tap
    >>> rng = np.random.default_rng(0)
    >>> images, labels = rng.random((12, 32, 32, 3), dtype=np.float32), np.arange(12) % 2
    >>> model = Pipeline([
    ...     ("features", IntermediateFeatureTransformer(
    ...         backbone="test_resnet", weights=None, target_size=16, image_size=32)),
    ...     ("clf", GroupLassoClassifier(alpha=1e-3, keep_fraction=0.5)),
    ... ]).fit(images, labels)
    >>> rows = kept_features_per_tap(model)
    >>> sum(row["kept"] for row in rows) == int(model[-1].get_support().sum())
    True
    """
    features, classifier = _features_and_classifier(model)
    support = np.asarray(classifier.get_support(), dtype=bool)
    if support.shape != (features.taps_[-1].stop,):
        raise ValueError(
            f"The last step selects among {support.size} features but the transformer "
            f"outputs {features.taps_[-1].stop}: pass a pipeline whose classifier was "
            "fitted directly on the transformer's output."
        )
    return [
        {
            "tap": tap.name,
            "kept": int(support[tap.columns].sum()),
            "n_features": tap.n_features,
            "cost": float(cost),
        }
        for tap, cost in zip(features.taps_, features.tap_costs_, strict=True)
    ]


def plot_kept_features(model: Any, ax: Any = None, *, title: str | None = None) -> Any:
    """Bar chart of the features Head2Toe kept from every tap, taps in network order.

    Bars count the kept features of each tap; the line (right axis) is the
    percentage of the tap's own features that were kept; each tap's label
    gives its cost (its share of the backbone's forward FLOPs). It answers
    Head2Toe's question — which layers matter for this task? — and what
    reading them costs.

    Parameters
    ----------
    model : Pipeline or Head2ToeClassifier
        Fitted, as in :func:`kept_features_per_tap`.
    ax : matplotlib Axes, default=None
        Where to draw; by default a new figure sized to the number of taps.
    title : str, default=None
        Axes title; by default the number of kept features.

    Returns
    -------
    ax : matplotlib Axes
        The bar chart (the percentage line is on ``ax.right_ax``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.pipeline import Pipeline
    >>> from skh2t import GroupLassoClassifier, IntermediateFeatureTransformer
    >>> from skh2t.plotting import plot_kept_features
    >>> rng = np.random.default_rng(0)
    >>> images, labels = rng.random((12, 32, 32, 3), dtype=np.float32), np.arange(12) % 2
    >>> model = Pipeline([
    ...     ("features", IntermediateFeatureTransformer(
    ...         backbone="test_resnet", weights=None, target_size=16, image_size=32)),
    ...     ("clf", GroupLassoClassifier(alpha=1e-3, keep_fraction=0.5)),
    ... ]).fit(images, labels)
    >>> ax = plot_kept_features(model)
    >>> ax.get_ylabel()
    'kept features'
    """
    rows = kept_features_per_tap(model)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figure_size_for_taps(len(rows)), layout="constrained")
    draw_kept_per_tap(
        ax,
        [row["tap"] for row in rows],
        np.array([row["kept"] for row in rows]),
        np.array([row["n_features"] for row in rows]),
        np.array([row["cost"] for row in rows]),
    )
    if title is None:
        kept, total = sum(row["kept"] for row in rows), sum(row["n_features"] for row in rows)
        title = f"Head2Toe kept {kept} of {total} features"
    ax.set_title(title)
    return ax


def draw_kept_per_tap(
    ax: Any,
    tap_names: list[str],
    kept: np.ndarray,
    tap_sizes: np.ndarray,
    tap_costs: np.ndarray | None = None,
):
    """Draw kept features per tap (bars) and the kept share of each tap (line) on ``ax``;
    with ``tap_costs``, each tap's label ends with its share of the forward FLOPs."""
    positions = np.arange(len(tap_names))
    ax.bar(positions, kept, color="tab:blue", label="kept features")
    ax.set_ylabel("kept features")
    labels = list(tap_names)
    xlabel = "tap (input → output)"
    if tap_costs is not None:
        costs = zip(labels, tap_costs, strict=True)
        labels = [f"{name} · {100 * cost:.0f}%" for name, cost in costs]
        xlabel += " · its share of the backbone's forward FLOPs"
    ax.set_xticks(positions, labels, rotation=70, ha="right", fontsize=7)
    ax.set_xlim(-0.7, len(tap_names) - 0.3)
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", alpha=0.3)
    share = ax.twinx()
    share.plot(positions, 100 * kept / np.maximum(tap_sizes, 1), "o-", color="tab:orange", ms=3)
    share.set_ylabel("% of the tap's features kept", color="tab:orange")
    share.set_ylim(bottom=0)
    ax.right_ax = share
    return ax


def figure_size_for_taps(n_taps: int) -> tuple[float, float]:
    """Figure size (inches) of a kept-features plot of ``n_taps`` taps: wide enough for the labels.

    Examples
    --------
    >>> figure_size_for_taps(10)
    (8.0, 5.5)
    """
    return min(24.0, max(8.0, 0.28 * n_taps + 2)), 5.5


def _features_and_classifier(model: Any) -> tuple[Any, Any]:
    from skh2t.features import IntermediateFeatureTransformer

    model = getattr(model, "best_estimator_", model)  # a fitted Head2ToeClassifier
    steps = getattr(model, "steps", None)
    if not steps or not isinstance(steps[0][1], IntermediateFeatureTransformer):
        raise TypeError(
            "Expected a fitted Pipeline whose first step is an IntermediateFeatureTransformer "
            f"and whose last step has get_support(); got {type(model).__name__}."
        )
    features, classifier = steps[0][1], steps[-1][1]
    check_is_fitted(features)
    if not hasattr(classifier, "get_support"):
        raise TypeError(
            f"The pipeline's last step ({type(classifier).__name__}) has no get_support(): "
            "use a GroupLassoClassifier (with keep_fraction or n_features_to_select)."
        )
    check_is_fitted(classifier)
    return features, classifier
