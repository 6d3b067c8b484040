"""The plot of where Head2Toe's kept features come from: kept features per tap, in depth order."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skh2t.output_files import written_whole
from skh2t.plotting import draw_kept_per_tap, figure_size_for_taps


def plot_kept_per_tap(
    tap_names: list[str],
    kept: np.ndarray,
    tap_sizes: np.ndarray,
    path: str | os.PathLike[str],
    *,
    tap_costs: np.ndarray | None = None,
    title: str = "Features kept by Head2Toe, per tap",
) -> None:
    """Save a bar chart of the number of kept features of every tap (input to output).

    Bars count the kept features of each tap; the line (right axis) is the
    fraction of the tap's features that were kept. Written with the Agg
    backend (no display needed), as PNG or any format matplotlib knows from
    the file name.

    Parameters
    ----------
    tap_names : list of str
        Tap names, in depth (column) order.
    kept : ndarray of shape (n_taps,)
        Kept features per tap.
    tap_sizes : ndarray of shape (n_taps,)
        Features per tap.
    path : str or path-like
        Output file.
    tap_costs : ndarray of shape (n_taps,), default=None
        Each tap's share of the backbone's forward FLOPs, shown in its label.
    title : str
        Figure title.
    """
    figure = Figure(figsize=figure_size_for_taps(len(tap_names)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    draw_kept_per_tap(axes, tap_names, kept, tap_sizes, tap_costs)
    axes.set_title(title)
    with written_whole(path) as part:  # savefig picks PNG from the (kept) suffix
        figure.savefig(part, dpi=120)
