"""Extract pooled tap features for many images, straight into the output matrix.

Each tap's hook pools its activation right away, inside the hook: only the
small pooled result is kept, and in-place operations later in the network
(such as ``ReLU(inplace=True)``) cannot change what was read. Extraction runs
under ``torch.inference_mode()`` with every module in eval mode, and, in a
reduced precision, under ``torch.autocast``: the hooks pool each activation
in its own dtype (PyTorch's pooling and mean kernels accumulate bfloat16 and
float16 in float32), upcast the small pooled result to float32 and normalise
it in float32, so the output is float32 whatever the precision. Upcasting the
whole activation first would cost as much as the forward pass saves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from skh2t.features.devices import Runtime
from skh2t.features.hooks import eval_mode, hooks_attached
from skh2t.features.pooling import PoolingPlan, l2_normalize, pool_activation
from skh2t.features.taps import TapRef


@dataclass(frozen=True)
class PooledOutput:
    """One output matrix of an extraction: how each tap is pooled, and where it goes.

    Attributes
    ----------
    plans : sequence of PoolingPlan
        One per tap.
    columns : sequence of slice
        One per tap: its columns in ``out``.
    out : numpy.ndarray of shape (n_images, n_features), float32
        Written in place.
    l2 : bool
        Divide each tap's pooled vector by its L2 norm, per example.
    """

    plans: Sequence[PoolingPlan]
    columns: Sequence[slice]
    out: np.ndarray
    l2: bool = True


class _AllTapsRead(Exception):
    """Raised by the last tap's hook: the rest of the forward pass is not needed."""


class _Recorder:
    """Hook callback: pool each tap once per distinct plan, normalise, write every output.

    Once every tap has been read, it stops the forward pass (by raising
    :class:`_AllTapsRead`), so a model read only up to an early tap costs only
    the prefix of the network up to it.
    """

    def __init__(self, outputs: Sequence[PooledOutput], n_taps: int) -> None:
        self.outputs = list(outputs)
        self.rows: list[torch.Tensor] = []
        self.calls = np.zeros(n_taps, dtype=np.int64)
        self.n_read = 0

    def __call__(self, index: int, module: nn.Module, tensor: torch.Tensor) -> None:
        self._record(index, tensor)
        self.calls[index] += 1
        self.n_read += self.calls[index] == 1
        if self.n_read == len(self.calls):
            raise _AllTapsRead

    def _record(self, index: int, tensor: torch.Tensor) -> None:
        pooled: dict[PoolingPlan, torch.Tensor] = {}
        for output, rows in zip(self.outputs, self.rows, strict=True):
            plan = output.plans[index]
            if plan not in pooled:
                # An autocast activation is pooled as it is (the kernels accumulate in
                # float32), then normalised in float32.
                pooled[plan] = pool_activation(tensor, plan).float()
            target = rows[:, output.columns[index]]
            if output.l2:
                l2_normalize(pooled[plan], out=target)
            else:
                target.copy_(pooled[plan])


def extract_features(
    model: nn.Module,
    taps: Sequence[TapRef],
    plans: Sequence[PoolingPlan],
    columns: Sequence[slice],
    batches: Iterable[torch.Tensor],
    out: np.ndarray,
    *,
    l2: bool = True,
    runtime: Runtime | None = None,
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
    runtime : Runtime, default=None
        The autocast dtype of the forward pass (see
        :func:`~skh2t.features.devices.resolve_runtime`); ``None``: float32.

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
    extract_pooled(model, taps, [PooledOutput(plans, columns, out, l2)], batches, runtime=runtime)
    return out


def extract_pooled(
    model: nn.Module,
    taps: Sequence[TapRef],
    outputs: Sequence[PooledOutput],
    batches: Iterable[torch.Tensor],
    *,
    runtime: Runtime | None = None,
) -> None:
    """Fill several output matrices, each with its own pooling, from one forward pass per batch.

    Every tap's activation is pooled once per distinct plan among the outputs
    (e.g. once per target size of a grid), while it is live in the hook.

    Parameters
    ----------
    model : torch.nn.Module
        The backbone, on the device the batches are on.
    taps : sequence of TapRef
        Where to read; every output has one plan and one column range per tap.
    outputs : sequence of PooledOutput
        The matrices to fill, in place.
    batches : iterable of torch.Tensor
        Preprocessed image batches, in order.
    runtime : Runtime, default=None
        The device and dtype of the forward pass: with a reduced dtype it runs
        under ``torch.autocast``, and the outputs are still float32. ``None``:
        float32.

    Examples
    --------
    >>> from torch import nn
    >>> from skh2t.features.pooling import plan_pooling
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3))
    >>> fine, coarse = (plan_pooling("nchw", (4, 6, 6), pool_stride=s) for s in (2, 6))
    >>> outs = np.empty((2, 36), np.float32), np.empty((2, 4), np.float32)
    >>> extract_pooled(model, [TapRef("0")], [
    ...     PooledOutput([fine], [slice(0, 36)], outs[0]),
    ...     PooledOutput([coarse], [slice(0, 4)], outs[1]),
    ... ], [torch.randn(2, 3, 8, 8)])
    >>> np.linalg.norm(outs[1], axis=1).round(4)
    array([1., 1.], dtype=float32)
    """
    recorder = _Recorder(outputs, len(taps))
    autocast = runtime.autocast if runtime is not None else contextlib.nullcontext
    start = 0
    with torch.inference_mode(), eval_mode(model), hooks_attached(model, taps, recorder):
        for batch in batches:
            stop = start + batch.shape[0]
            rows = [torch.from_numpy(output.out[start:stop]) for output in outputs]
            on_cpu = batch.device.type == "cpu"
            recorder.rows = (
                rows if on_cpu else [torch.empty(r.shape, device=batch.device) for r in rows]
            )
            recorder.calls[:] = 0
            recorder.n_read = 0
            with autocast(), contextlib.suppress(_AllTapsRead):  # the batches are made outside
                model(batch)
            _check_calls(recorder.calls, taps)
            if not on_cpu:
                for target, computed in zip(rows, recorder.rows, strict=True):
                    target.copy_(computed)
            start = stop
    recorder.rows = []


def _check_calls(calls: np.ndarray, taps: Sequence[TapRef]) -> None:
    wrong = np.flatnonzero(calls != 1)
    if wrong.size:
        details = ", ".join(f"{taps[i].name} ({calls[i]} times)" for i in wrong[:5])
        raise RuntimeError(
            f"Taps did not run exactly once in the forward pass: {details}. The backbone's "
            "forward pass differs from the one seen at fit time; refit."
        )
