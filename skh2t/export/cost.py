"""What a deployed Head2Toe model costs per image: FLOPs against the whole backbone, latency."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from skh2t.export.build import _fitted_parts, compact_module
from skh2t.export.files import load_exported
from skh2t.features.costs import forward_flops

__all__ = ["InferenceCost", "inference_cost", "measure_latency"]


@dataclass(frozen=True)
class InferenceCost:
    """The FLOPs of one image through a compact module and through the whole backbone.

    Attributes
    ----------
    flops : int
        The compact module (:func:`~skh2t.export.compact_module`): the
        backbone's prefix up to the deepest kept tap, the pooling and the head.
    backbone_flops : int
        The whole backbone's forward pass (its ``forward_flops_``).
    """

    flops: int
    backbone_flops: int

    @property
    def share(self) -> float:
        """``flops / backbone_flops``: at most the deepest kept tap's cost, plus the head's."""
        return self.flops / self.backbone_flops


def inference_cost(model: Any) -> InferenceCost:
    """The FLOPs per image of a fitted Head2Toe model's compact module, and of its backbone.

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix
    products and convolutions) on one blank image at the model's input size.

    Parameters
    ----------
    model : Head2ToeClassifier or Pipeline
        As for :func:`~skh2t.export.compact_module`.

    Returns
    -------
    InferenceCost

    Examples
    --------
    >>> import numpy as np
    >>> from skh2t import Head2ToeClassifier
    >>> images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    >>> model = Head2ToeClassifier(
    ...     backbone="test_resnet", weights=None, image_size=32, target_sizes=[64],
    ...     alpha_fractions=[0.1], keep_fractions=[0.2], cv=2, compute_budget=0.8,
    ... ).fit(images, np.arange(20) % 2)
    >>> cost = inference_cost(model)
    >>> bool(cost.share <= 0.8 + 0.01)  # the prefix within the budget, and the head
    True
    """
    module = compact_module(model)
    transformer = _fitted_parts(model).transformer
    blank = torch.zeros((1, 3, *module.image_size))
    return InferenceCost(forward_flops(module, blank), transformer.forward_flops_)


def measure_latency(
    path: str | os.PathLike, image_size: tuple[int, int], *, repeats: int = 20
) -> float:
    """Median seconds of one image through an exported file (after one warm-up call).

    ``.onnx`` runs in onnxruntime on the CPU with one thread, ``.pt`` and
    ``.pt2`` in PyTorch (see :func:`~skh2t.export.load_exported`).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`~skh2t.export.export_model`.
    image_size : (int, int)
        The model's input size (``CompactHead2Toe.image_size``).
    repeats : int, default=20
        Timed calls; the median is returned.

    Returns
    -------
    float
    """
    run = load_exported(path, n_threads=1)
    batch = np.random.default_rng(0).random((1, 3, *image_size), dtype=np.float32)
    run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
