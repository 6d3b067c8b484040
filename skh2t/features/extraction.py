"""Extract pooled tap features for many images, straight into the output matrix.

Each tap's hook pools its activation right away, inside the hook: only the
small pooled result is kept, and in-place operations later in the network
(such as ``ReLU(inplace=True)``) cannot change what was read. Extraction runs
under ``torch.inference_mode()`` with every module in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from skh2t.features.hooks import eval_mode, hooks_attached
from skh2t.features.pooling import PoolingPlan, l2_normalize, pool_activation
from skh2t.features.taps import TapRef


class _Recorder:
    """Hook callback for extraction: pool, normalise and write each tap into ``self.out``."""

    def __init__(self, plans: Sequence[PoolingPlan], columns: Sequence[slice], l2: bool) -> None:
        self.plans = list(plans)
        self.columns = list(columns)
        self.l2 = l2
        self.out: torch.Tensor | None = None
        self.calls = np.zeros(len(plans), dtype=np.int64)

    def __call__(self, index: int, module: nn.Module, tensor: torch.Tensor) -> None:
        self.calls[index] += 1
        pooled = pool_activation(tensor, self.plans[index])
        target = self.out[:, self.columns[index]]
        if self.l2:
            l2_normalize(pooled, out=target)
        else:
            target.copy_(pooled)


def extract_features(
    model: nn.Module,
    taps: Sequence[TapRef],
    plans: Sequence[PoolingPlan],
    columns: Sequence[slice],
    batches: Iterable[torch.Tensor],
    out: np.ndarray,
    *,
    l2: bool = True,
) -> np.ndarray:
    """Fill ``out`` (``(n_images, n_features)``, float32) with pooled tap features.

    Parameters
    ----------
    model : torch.nn.Module
        The backbone, on the device the batches are on.
    taps, plans, columns : sequences
        For every tap: where it reads, how it is pooled, which columns it fills.
    batches : iterable of torch.Tensor
        Preprocessed image batches, in order.
    out : numpy.ndarray
        Output matrix, written in place. On the CPU the hooks write straight into it.
    l2 : bool, default=True
        Divide each tap's pooled vector by its L2 norm, per example.

    Returns
    -------
    numpy.ndarray
        ``out``.

    Examples
    --------
    >>> from torch import nn
    >>> from skh2t.features.pooling import plan_pooling
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> plan = plan_pooling("nchw", (4, 6, 6), pool_stride=3)  # 4 x 2 x 2 features
    >>> out = np.empty((5, 16), dtype=np.float32)
    >>> batches = [torch.randn(3, 3, 8, 8), torch.randn(2, 3, 8, 8)]
    >>> _ = extract_features(model, [TapRef("0")], [plan], [slice(0, 16)], batches, out)
    >>> np.linalg.norm(out, axis=1).round(4)
    array([1., 1., 1., 1., 1.], dtype=float32)
    """
    recorder = _Recorder(plans, columns, l2)
    start = 0
    with torch.inference_mode(), eval_mode(model), hooks_attached(model, taps, recorder):
        for batch in batches:
            stop = start + batch.shape[0]
            rows = torch.from_numpy(out[start:stop])
            on_cpu = batch.device.type == "cpu"
            recorder.out = rows if on_cpu else torch.empty(rows.shape, device=batch.device)
            recorder.calls[:] = 0
            model(batch)
            _check_calls(recorder.calls, taps)
            if not on_cpu:
                rows.copy_(recorder.out)
            start = stop
    recorder.out = None
    return out


def _check_calls(calls: np.ndarray, taps: Sequence[TapRef]) -> None:
    wrong = np.flatnonzero(calls != 1)
    if wrong.size:
        details = ", ".join(f"{taps[i].name} ({calls[i]} times)" for i in wrong[:5])
        raise RuntimeError(
            f"Taps did not run exactly once in the forward pass: {details}. The backbone's "
            "forward pass differs from the one seen at fit time; refit."
        )
