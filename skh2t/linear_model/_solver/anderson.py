"""Anderson extrapolation of a sequence of iterates (as used by skglm and celer)."""

from __future__ import annotations

import numpy as np


class AndersonExtrapolator:
    """Every ``memory + 1`` pushed iterates, propose their Anderson extrapolation.

    The weights ``c`` (summing to one) minimise the norm of the combination
    of the differences of successive iterates; the proposal is
    ``sum_i c_i x_{i+1}``. Companion arrays (quantities linear in the iterate,
    such as the logits) are combined with the same weights.
    """

    def __init__(self, memory: int = 10):
        self.memory = memory
        self._history: list[tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]] = []

    def reset(self) -> None:
        self._history = []

    def push(
        self, iterate: tuple[np.ndarray, ...], companions: tuple[np.ndarray, ...] = ()
    ) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]] | None:
        """Record an iterate; return the extrapolated (iterate, companions) when due."""
        self._history.append((iterate, companions))
        if len(self._history) <= self.memory:
            return None
        history, self._history = self._history, []
        flat = np.array([np.concatenate([a.ravel() for a in it]) for it, _ in history])
        differences = np.diff(flat, axis=0)
        gram = differences @ differences.T
        try:
            weights = np.linalg.solve(
                gram + 1e-10 * np.trace(gram) * np.eye(self.memory), np.ones(self.memory)
            )
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(weights)) or weights.sum() == 0:
            return None
        weights /= weights.sum()
        recent = history[1:]

        def combine(arrays: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
            return tuple(
                sum(w * entry[k] for w, entry in zip(weights, arrays, strict=True))
                for k in range(len(arrays[0]))
            )

        return combine([it for it, _ in recent]), combine([c for _, c in recent])
