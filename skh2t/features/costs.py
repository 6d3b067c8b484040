"""What each tap costs: the share of the backbone's forward FLOPs computed before it is read.

A Head2Toe model that reads only early taps needs only the prefix of the
network up to its deepest tap (:mod:`skh2t.export` cuts the network there,
and the extraction stops there). The cost of a tap is that prefix's share of
the whole forward pass, counted by :class:`torch.utils.flop_counter.FlopCounterMode`
on one image at the fitted input size: the FLOPs of the matrix products and
convolutions that ran before the tap's activation was available, over those
of the whole forward pass (elementwise operations are not counted, as usual
for FLOP counts). For a network that computes its layers in order, as the
timm families do, that is the prefix; a branch computed before the tap but
not needed by it would be counted too, so the share is an upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from skh2t.features.hooks import eval_mode, hooks_attached
from skh2t.features.taps import TapRef

__all__ = ["ComputeBudgetError", "forward_flops", "tap_flop_shares"]


class ComputeBudgetError(ValueError):
    """A ``compute_budget`` that no tap of the backbone fits in."""


def tap_flop_shares(
    model: nn.Module, taps: Sequence[TapRef], example: torch.Tensor
) -> tuple[np.ndarray, int]:
    """Each tap's share of the forward FLOPs, and the FLOPs of the whole forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        The backbone.
    taps : sequence of TapRef
        The taps; a tap that does not run gets the share 1.0 (it needs the
        whole pass, as far as anyone can tell).
    example : torch.Tensor
        A preprocessed batch (one image is enough: FLOPs grow with the batch).

    Returns
    -------
    shares : ndarray of shape (n_taps,), float64
        FLOPs before the tap's activation was available, over the total; in
        [0, 1]. All ones when the model has no counted operation.
    total : int
        FLOPs of the whole forward pass of ``example``.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2))
    >>> shares, total = tap_flop_shares(model, [TapRef("1"), TapRef("3", "input")],
    ...                                 torch.zeros(1, 8))
    >>> shares.round(3).tolist(), total  # 128 + 128 + 32 FLOPs
    ([0.444, 0.889], 288)
    """
    before = np.full(len(taps), np.nan)
    with FlopCounterMode(display=False) as counter:

        def record(index: int, module: nn.Module, tensor: torch.Tensor) -> None:
            if np.isnan(before[index]):
                before[index] = counter.get_total_flops()

        with torch.no_grad(), eval_mode(model), hooks_attached(model, taps, record):
            model(example)
    total = int(counter.get_total_flops())
    if total == 0:
        return np.ones(len(taps)), 0
    shares = np.where(np.isnan(before), 1.0, before / total)
    return np.clip(shares, 0.0, 1.0), total


def forward_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``model`` on ``example`` (matrix products and convolutions).

    Examples
    --------
    >>> forward_flops(nn.Linear(8, 2), torch.zeros(3, 8))  # 2 * 3 * 8 * 2
    96
    """
    return tap_flop_shares(model, [], example)[1]
