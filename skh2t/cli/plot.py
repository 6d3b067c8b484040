"""The plot of where Head2Toe's kept features come from: kept features per tap, in depth order."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_kept_per_tap(
    tap_names: list[str],
    kept: np.ndarray,
    tap_sizes: np.ndarray,
    path: str | os.PathLike[str],
    *,
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
    title : str
        Figure title.
    """
    positions = np.arange(len(tap_names))
    width = min(24.0, max(8.0, 0.28 * len(tap_names) + 2))
    figure = Figure(figsize=(width, 5.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.bar(positions, kept, color="tab:blue", label="kept features")
    axes.set_ylabel("kept features")
    axes.set_xticks(positions, tap_names, rotation=70, ha="right", fontsize=7)
    axes.set_xlim(-0.7, len(tap_names) - 0.3)
    axes.set_xlabel("tap (input → output)")
    axes.set_title(title)
    share = axes.twinx()
    share.plot(positions, 100 * kept / np.maximum(tap_sizes, 1), "o-", color="tab:orange", ms=3)
    share.set_ylabel("% of the tap's features kept", color="tab:orange")
    share.set_ylim(bottom=0)
    axes.grid(axis="y", alpha=0.3)
    figure.savefig(path, dpi=120)
