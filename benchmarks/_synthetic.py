"""Synthetic sparse multinomial problems shared by the benchmarks and tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def make_sparse_multinomial(
    n_samples: int = 1000,
    n_features: int = 20_000,
    n_classes: int = 10,
    n_informative: int = 200,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """float32 Gaussian features; labels sampled from a softmax of a row-sparse model."""
    return _row_sparse_multinomial(
        n_samples,
        n_features,
        n_classes,
        n_informative,
        random_state,
        lambda raw: raw / np.sqrt(n_informative) * 3.0,
    )


def make_strong_signal_multinomial(
    n_samples: int = 1000,
    n_features: int = 20_000,
    n_classes: int = 10,
    n_informative: int = 200,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`make_sparse_multinomial`, with strong weights: N(0, 1) times a scale falling
    linearly from 2 to 0.2 over the informative rows (many rows end up active)."""
    return _row_sparse_multinomial(
        n_samples,
        n_features,
        n_classes,
        n_informative,
        random_state,
        lambda raw: raw * np.linspace(2.0, 0.2, n_informative)[:, None],
    )


def _row_sparse_multinomial(
    n_samples: int,
    n_features: int,
    n_classes: int,
    n_informative: int,
    random_state: int,
    weights: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The shared recipe; ``weights`` turns the informative rows' N(0, 1) draws into the model."""
    rng = np.random.default_rng(random_state)
    X = rng.standard_normal((n_samples, n_features), dtype=np.float32)
    informative = rng.choice(n_features, n_informative, replace=False)
    coef = weights(rng.standard_normal((n_informative, n_classes)))
    logits = X[:, informative] @ coef
    gumbel = -np.log(-np.log(rng.uniform(size=logits.shape)))
    return X, np.argmax(logits + gumbel, axis=1)
