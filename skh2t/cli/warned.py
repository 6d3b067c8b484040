"""Warnings a command reports itself (counted, not shown), while every other warning shows."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class WarningCount:
    """How many warnings of one category a block raised."""

    n: int = 0


@contextlib.contextmanager
def counted_warnings(category: type[Warning]) -> Iterator[WarningCount]:
    """Count the warnings of ``category`` raised in the block instead of showing them.

    Every one is counted (the filter is ``"always"`` for ``category``); any other
    warning goes through the filters and is shown as usual (a CUDA-to-CPU
    fallback, say), which ``catch_warnings(record=True)`` would hide.

    Examples
    --------
    >>> from sklearn.exceptions import ConvergenceWarning
    >>> with counted_warnings(ConvergenceWarning) as count:
    ...     for _ in range(2):
    ...         warnings.warn("stopped at max_iter", ConvergenceWarning)
    >>> count.n
    2
    """
    count = WarningCount()
    with warnings.catch_warnings():
        warnings.simplefilter("always", category)
        show = warnings.showwarning

        def count_or_show(message, warned, filename, lineno, file=None, line=None):
            if issubclass(warned, category):
                count.n += 1
            else:
                show(message, warned, filename, lineno, file, line)

        warnings.showwarning = count_or_show
        yield count
