"""Reporting results: the printed table, the JSON file, software versions."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any, Protocol

import numpy as np

from skh2t.output_files import written_whole

_PACKAGES = ("skh2t", "numpy", "scipy", "scikit-learn", "torch", "timm", "matplotlib")


class TableRow(Protocol):
    """What one row of the comparison table shows (a :class:`~skh2t.cli.compare.Outcome`).

    Attributes
    ----------
    method : str
        Name shown in the table.
    cv_accuracy : float
        Mean cross-validation accuracy of the chosen hyper-parameters.
    test_accuracy : float
        Accuracy of the model refitted on all training images.
    n_features : int
        Number of features the final model reads.
    n_available : int
        Number of features extracted at the target size it reads.
    fit_seconds : float
        Time of the final fit on all training images (features already extracted).
    """

    method: str
    cv_accuracy: float
    test_accuracy: float | None
    n_features: int
    n_available: int
    fit_seconds: float


def format_table(results: Sequence[TableRow]) -> str:
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
            f"{r.test_accuracy:.4f}",
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


def format_params(params: dict[str, Any]) -> str:
    """``key=value`` pairs, numbers in short form.

    Examples
    --------
    >>> format_params({"C": 10.0, "target_size": 2048})
    'C=10, target_size=2048'
    """
    return ", ".join(f"{key}={_short(value)}" for key, value in params.items())


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages that produced a result."""
    found = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_json(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON (NumPy scalars and arrays converted), whole or not
    at all."""
    with written_whole(path) as part, open(part, "w", encoding="utf-8") as file:
        json.dump(payload, file, indent=2, default=_to_json)
        file.write("\n")


def _to_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
