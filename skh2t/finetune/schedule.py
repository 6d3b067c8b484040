"""Cosine learning-rate schedule with a linear warm-up, as a multiplier per optimiser step."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    Linear warm-up from ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps``
    steps, then a cosine decay from 1 towards 0 at ``total_steps``.

    Examples
    --------
    >>> [round(warmup_cosine(s, 10, 2), 3) for s in (0, 1, 2, 6, 9)]
    [0.333, 0.667, 1.0, 0.5, 0.038]
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
