"""Reporting results: parameters in short form, the JSON file and its rows, software versions."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from typing import Any

import numpy as np

from skh2t.output_files import written_whole

_PACKAGES = ("skh2t", "numpy", "scipy", "scikit-learn", "torch", "timm", "matplotlib")


def cv_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON rows of a ``cv_results_``-schema dict: ``params``, ``fold_scores``, ``mean``.

    Examples
    --------
    >>> results = {"params": [{"C": 1.0}], "split0_test_score": np.array([0.5]),
    ...            "split1_test_score": np.array([0.7]), "mean_test_score": np.array([0.6])}
    >>> cv_rows(results)
    [{'params': {'C': 1.0}, 'fold_scores': [0.5, 0.7], 'mean': 0.6}]
    """
    n_splits = sum(key.startswith("split") and key.endswith("_test_score") for key in results)
    folds = np.stack([results[f"split{k}_test_score"] for k in range(n_splits)], axis=1)
    return [
        {"params": dict(point), "fold_scores": folds[i].tolist(), "mean": float(mean)}
        for i, (point, mean) in enumerate(
            zip(results["params"], results["mean_test_score"], strict=True)
        )
    ]


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
