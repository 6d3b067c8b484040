"""Forward hooks that hand tapped activations to a callback, and an eval-mode guard.

Hooks are ``functools.partial`` objects (never lambdas, as in timm's
``FeatureHooks``), registered for the duration of a ``with`` block and removed
in its ``finally``. A tap on a module's input uses a forward pre-hook and reads
the first positional tensor; a tap on its output reads the returned tensor (the
first tensor of a returned tuple).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from skh2t.features.taps import TapRef

#: ``callback(tap_index, module, tensor)``, called from the hooks.
TapCallback = Callable[[int, nn.Module, torch.Tensor], None]


@contextmanager
def hooks_attached(
    model: nn.Module, taps: Sequence[TapRef], callback: TapCallback
) -> Iterator[None]:
    """Call ``callback`` with each tap's activation while the block runs; remove hooks after.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    taps : sequence of TapRef
        Where to read; the callback gets the tap's position in this sequence.
    callback : callable
        ``callback(tap_index, module, tensor)``, called during forward passes.

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    >>> seen = {}
    >>> def record(index, module, tensor):
    ...     seen[index] = tuple(tensor.shape)
    >>> with hooks_attached(model, [TapRef("0", "input"), TapRef("1")], record):
    ...     _ = model(torch.zeros(2, 4))
    >>> seen
    {0: (2, 4), 1: (2, 3)}
    >>> len(model[0]._forward_pre_hooks)  # removed on the way out
    0
    """
    handles = []
    try:
        for index, tap in enumerate(taps):
            module = model.get_submodule(tap.module)
            if tap.hook == "input":
                hook = partial(_on_input, callback=callback, index=index)
                handles.append(module.register_forward_pre_hook(hook))
            else:
                hook = partial(_on_output, callback=callback, index=index)
                handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _on_input(module: nn.Module, args: tuple, *, callback: TapCallback, index: int) -> None:
    callback(index, module, _first_tensor(args, module))


def _on_output(
    module: nn.Module, args: tuple, output: object, *, callback: TapCallback, index: int
) -> None:
    callback(index, module, _first_tensor(output, module))


def _first_tensor(value: object, module: nn.Module) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"A tapped {type(module).__name__} passed no tensor ({type(value).__name__}).")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode; restore each module's own mode afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, training in modes:
            module.training = training
