"""Discover the taps with one dry forward pass, then lay them out as the tap table.

The dry pass finds, for every tap, the shape and layout of its activation and
whether it runs exactly once; taps that repeat an earlier tap's tensor are
recognised. From that, :func:`build_tap_table` keeps the usable taps, decides
each one's pooling and assigns it its columns in the output matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from skh2t.features.hooks import eval_mode, hooks_attached
from skh2t.features.pooling import plan_pooling
from skh2t.features.taps import TapInfo, TapRef, infer_layout


@dataclass(frozen=True)
class TapObservation:
    """What a dry forward pass saw at one tap."""

    calls: int
    layout: str | None
    shape: tuple[int, ...]
    duplicate_of: int | None
    per_image: bool = True


class _Probe:
    """Hook callback for the dry run: records shapes, layouts, call counts and repeats."""

    def __init__(self, taps: Sequence[TapRef], example: torch.Tensor) -> None:
        n_taps = len(taps)
        self.hooks = [tap.hook for tap in taps]
        self.calls = [0] * n_taps
        self.layouts: list[str | None] = [None] * n_taps
        self.shapes: list[tuple[int, ...]] = [()] * n_taps
        self.duplicate_of: list[int | None] = [None] * n_taps
        self.per_image = [True] * n_taps
        self._batch_size = example.shape[0]
        self._seen: dict[tuple[int, int], int] = {_identity(example): -1}
        self._keep_alive = [example]

    def __call__(self, index: int, module: nn.Module, tensor: torch.Tensor) -> None:
        self.calls[index] += 1
        if self.calls[index] > 1:
            return
        self.layouts[index] = infer_layout(module, self.hooks[index], tensor.dim())
        self.shapes[index] = tuple(tensor.shape[1:])
        self.per_image[index] = tensor.dim() > 0 and tensor.shape[0] == self._batch_size
        # The same tensor object at the same version is the same activation: keep the first.
        first = self._seen.setdefault(_identity(tensor), index)
        self.duplicate_of[index] = None if first == index else first
        self._keep_alive.append(tensor)  # ids stay unique while the dry run lasts

    def observations(self) -> list[TapObservation]:
        return [
            TapObservation(*fields)
            for fields in zip(
                self.calls,
                self.layouts,
                self.shapes,
                self.duplicate_of,
                self.per_image,
                strict=True,
            )
        ]


def _identity(tensor: torch.Tensor) -> tuple[int, int]:
    return id(tensor), tensor._version


def observe_taps(
    model: nn.Module, taps: Sequence[TapRef], example: torch.Tensor
) -> list[TapObservation]:
    """Run ``model`` once on ``example`` and report what each tap receives.

    Runs under ``torch.no_grad()`` (not inference mode, whose tensors carry no
    version counter): a tap whose tensor is the very same object, unchanged,
    as an earlier tap's (or as the model input) is reported as a duplicate.

    Parameters
    ----------
    model : torch.nn.Module
        The backbone.
    taps : sequence of TapRef
        Where to look.
    example : torch.Tensor
        A preprocessed batch of at least two images (so that activations whose
        first axis is not the batch axis can be told apart).

    Returns
    -------
    list of TapObservation
        One per tap: call count, inferred layout, per-example shape, and the
        index of the tap that read the same tensor earlier in the forward pass
        (``-1``: the model input), if any.

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(
    ...     nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    ... )
    >>> taps = [TapRef("0"), TapRef("2"), TapRef("3", "input")]
    >>> for seen in observe_taps(model, taps, torch.zeros(2, 3, 10, 10)):
    ...     print(seen)
    TapObservation(calls=1, layout='nchw', shape=(8, 8, 8), duplicate_of=None, per_image=True)
    TapObservation(calls=1, layout='nc', shape=(8,), duplicate_of=None, per_image=True)
    TapObservation(calls=1, layout='nc', shape=(8,), duplicate_of=1, per_image=True)
    """
    probe = _Probe(taps, example)
    with torch.no_grad(), eval_mode(model), hooks_attached(model, taps, probe):
        try:
            model(example)
        except Exception as error:
            raise RuntimeError(
                f"The backbone {type(model).__name__} failed on a batch of shape "
                f"{tuple(example.shape)}: {error}. If it needs a particular input size, set "
                "image_size accordingly."
            ) from error
    return probe.observations()


def build_tap_table(
    model: nn.Module,
    taps: Sequence[TapRef],
    observations: Sequence[TapObservation],
    *,
    explicit: bool,
    target_size: int,
    pool_stride: int | None = None,
) -> list[TapInfo]:
    """Keep the usable taps, plan their pooling and give each its output columns.

    Default taps (``explicit=False``) that never run, run more than once, repeat
    an earlier tap's tensor or cannot be pooled are dropped; explicitly chosen
    taps in those situations raise a ``ValueError`` (repeats are kept).

    Parameters
    ----------
    model : torch.nn.Module
        Named in error messages.
    taps : sequence of TapRef
        Candidate taps, in output order.
    observations : sequence of TapObservation
        From :func:`observe_taps`, one per tap.
    explicit : bool
        Whether the user named the taps.
    target_size, pool_stride : int
        The pooling rule, see :func:`skh2t.features.pooling.plan_pooling`.

    Returns
    -------
    list of TapInfo

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> taps = [TapRef("0"), TapRef("2")]
    >>> seen = observe_taps(model, taps, torch.zeros(2, 3, 10, 10))
    >>> for tap in build_tap_table(model, taps, seen, explicit=True, target_size=32):
    ...     print(tap.name, tap.pooled_shape, tap.start, tap.stop)
    0 (8, 2, 2) 0 32
    2 (8,) 32 40
    """
    table: list[TapInfo] = []
    start = 0
    for tap, seen in zip(taps, observations, strict=True):
        problem = _problem(tap, seen, type(model).__name__)
        if problem is not None and explicit:
            raise ValueError(problem)
        if problem is not None or (seen.duplicate_of is not None and not explicit):
            continue
        plan = plan_pooling(
            seen.layout, seen.shape, target_size=target_size, pool_stride=pool_stride
        )
        stop = start + plan.n_features
        table.append(TapInfo.from_plan(tap, seen.shape, plan, start, stop))
        start = stop
    if not table:
        raise ValueError(f"None of the taps of {type(model).__name__} gives poolable activations.")
    return table


def _problem(tap: TapRef, seen: TapObservation, model_name: str) -> str | None:
    if seen.calls == 0:
        return f"Tap {tap.name!r} did not run in the forward pass of {model_name}."
    if seen.calls > 1:
        return (
            f"Module {tap.module!r} runs {seen.calls} times per forward pass of {model_name} "
            f"(a shared module), so tap {tap.name!r} is ambiguous; tap a module that runs once, "
            "such as the input of the next layer."
        )
    if not seen.per_image:
        return (
            f"Tap {tap.name!r} does not hold one row per image (its first axis is not the "
            "batch axis, e.g. attention windows), so it cannot be pooled per image."
        )
    if seen.layout is None:
        return (
            f"Tap {tap.name!r} gives {len(seen.shape) + 1}-D activations; only vectors (2-D), "
            "token maps (3-D) and feature maps (4-D) can be pooled."
        )
    if 0 in seen.shape:
        return f"Tap {tap.name!r} gives empty activations of shape {seen.shape}."
    return None
