"""Plot the feature drift recorded during fine-tuning, and the energy it started from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from skh2t.finetune.drift import DRIFT_METRICS

_TITLES = {
    "feature_distance": "Mean Euclidean distance",
    "feature_cosine": "Mean cosine similarity",
    "feature_dot": "Mean dot product",
    "feature_norm": "Mean feature norm",
}


def plot_feature_drift(
    estimator_or_history: Any,
    ax: Any = None,
    *,
    label: str | None = None,
) -> Any:
    """Plot the drift of the penultimate features against the original ones, per epoch.

    Parameters
    ----------
    estimator_or_history : FineTuneClassifier or dict
        A fitted :class:`~skh2t.finetune.FineTuneClassifier` or its ``history_``.
    ax : sequence of 4 matplotlib Axes, default=None
        Where to draw distance, cosine similarity, dot product and norm; by default
        a new figure with a 2 x 2 grid. Pass the returned axes again to overlay
        several runs.
    label : str, default=None
        Legend label of this run.

    Returns
    -------
    axes : ndarray of 4 matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> history = {"epoch": [0, 1], "feature_distance": [0.0, 0.5], "feature_cosine": [1.0, 0.9],
    ...            "feature_dot": [2.0, 1.9], "feature_norm": [1.4, 1.5]}
    >>> axes = plot_feature_drift(history, label="run")
    >>> [a.get_title() for a in axes][:2]
    ['Mean Euclidean distance', 'Mean cosine similarity']
    """
    import matplotlib.pyplot as plt
    import numpy as np

    history = getattr(estimator_or_history, "history_", estimator_or_history)
    if not isinstance(history, Mapping):
        raise TypeError(
            "plot_feature_drift needs a fitted FineTuneClassifier or its history_ dict; got "
            f"{type(estimator_or_history).__name__}."
        )
    missing = [key for key in ("epoch", *DRIFT_METRICS) if key not in history]
    if missing:
        raise ValueError(f"The history lacks {', '.join(missing)}.")
    if ax is None:
        _, grid = plt.subplots(2, 2, figsize=(9, 6), constrained_layout=True)
        axes = np.asarray(grid).ravel()
    else:
        axes = np.asarray(ax if isinstance(ax, Sequence | np.ndarray) else [ax]).ravel()
        if axes.size != len(DRIFT_METRICS):
            raise ValueError(f"ax must hold {len(DRIFT_METRICS)} Axes; got {axes.size}.")
    for axis, key in zip(axes, DRIFT_METRICS, strict=True):
        axis.plot(history["epoch"], history[key], marker="o", label=label)
        axis.set_title(_TITLES[key])
        axis.set_xlabel("epoch")
        if label is not None:
            axis.legend(fontsize="small")
    return axes


def drift_energy_figure(estimator: Any, *, title: str | None = None) -> Any:
    """A figure of a fitted fine-tuning's feature drift, titled with its energy.

    The four panels of :func:`plot_feature_drift` (drift of the penultimate
    features of the held-out images, or of the training images without a
    validation split, per epoch) under a title that gives the energy the
    prepared head had when fine-tuning started (``energy_``: its training loss
    and accuracy on the frozen features) and how long it was probed. The
    figure is a :class:`matplotlib.figure.Figure` made without ``pyplot``:
    nothing is shown, no global figure is kept, and it saves with any
    backend (``figure.savefig("drift.png")``).

    Parameters
    ----------
    estimator : FineTuneClassifier
        A fitted :class:`~skh2t.finetune.FineTuneClassifier`.
    title : str, default=None
        A first title line, above the two that say which images the drift is
        measured on and give the energy.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.

    Examples
    --------
    >>> import numpy as np
    >>> from skh2t.finetune import FineTuneClassifier
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), np.repeat([0, 1], 6)
    >>> clf = FineTuneClassifier(
    ...     backbone="test_resnet", weights=None, image_size=32, probe_epochs=1, epochs=1,
    ...     batch_size=6, validation_fraction=None, random_state=0,
    ... ).fit(X, y)
    >>> figure = drift_energy_figure(clf, title="test_resnet")
    >>> print(figure.get_suptitle().splitlines()[0])
    test_resnet
    >>> print(figure.get_suptitle().splitlines()[2][:34])
    Energy when fine-tuning started: l
    >>> len(figure.axes)
    4
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, ["history_", "energy_"])
    figure = Figure(figsize=(9, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2).ravel()
    plot_feature_drift(estimator, ax=axes)
    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    images = "held-out" if estimator.validation_fraction else "training"
    energy, probed = estimator.energy_, estimator.probe_epochs_
    lines = [] if title is None else [title]
    lines.append(f"Drift of the {images} images' penultimate features, epoch by epoch")
    lines.append(
        f"Energy when fine-tuning started: loss {energy['loss']:.4f}, accuracy "
        f"{energy['accuracy']:.4f}, after {probed} probing epoch{'' if probed == 1 else 's'} "
        f"({estimator.probe_steps_} steps)"
    )
    figure.suptitle("\n".join(lines))
    return figure
