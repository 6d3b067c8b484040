"""Warnings a command reports itself (hidden), while every other warning shows."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def hidden_warnings(category: type[Warning]) -> Iterator[None]:
    """Hide the warnings of ``category`` raised in the block; show every other one.

    For what a command reports in its own words from the estimators' attributes
    (e.g. ``n_not_converged_``). Any other warning goes through the filters and
    is shown as usual (a CUDA-to-CPU fallback, say), which
    ``catch_warnings(record=True)`` would hide.

    Examples
    --------
    >>> from sklearn.exceptions import ConvergenceWarning
    >>> with hidden_warnings(ConvergenceWarning):
    ...     warnings.warn("stopped at max_iter", ConvergenceWarning)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=category)
        yield
