"""Tap activations as module outputs: a pruned torch.fx graph, or forward hooks.

:func:`tap_extractor` returns a module whose ``forward(batch)`` returns the
activations of the given taps, as a tuple in their order. Where the backbone
can be traced symbolically (timm's models can), it is a ``torch.fx`` graph that
ends at the taps: every operation that no tap needs (the layers after the
deepest tap, the classifier when no tap reads it) is removed. Where it cannot,
the whole backbone runs with forward hooks (:class:`HookedTaps`). Either way the
activations are checked against the hooks' on an example batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models._features_fx import get_notrace_functions, get_notrace_modules
from torch import fx, nn

from skh2t.features.hooks import eval_mode, hooks_attached
from skh2t.features.taps import TapRef


class HookedTaps(nn.Module):
    """The whole backbone, run with hooks that keep the taps' activations.

    Parameters
    ----------
    backbone : torch.nn.Module
        The network.
    taps : sequence of TapRef
        Where to read.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    >>> outputs = HookedTaps(model, [TapRef("0", "input"), TapRef("1")])(torch.zeros(2, 4))
    >>> [tuple(x.shape) for x in outputs]
    [(2, 4), (2, 3)]
    """

    def __init__(self, backbone: nn.Module, taps: Sequence[TapRef]) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = tuple(taps)

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seen: dict[int, torch.Tensor] = {}

        def keep(index: int, module: nn.Module, tensor: torch.Tensor) -> None:
            seen[index] = tensor.clone()  # later in-place operations must not change it

        with hooks_attached(self.backbone, self.taps, keep):
            self.backbone(batch)
        missing = [tap.name for index, tap in enumerate(self.taps) if index not in seen]
        if missing:
            raise RuntimeError(f"Taps did not run in the forward pass: {', '.join(missing)}.")
        return tuple(seen[index] for index in range(len(self.taps)))


class _TapTracer(fx.Tracer):
    """timm's symbolic tracer, noting what every tapped module receives and returns."""

    def __init__(self, modules: set[str]) -> None:
        super().__init__(autowrap_functions=tuple(get_notrace_functions()))
        self.notrace = tuple(get_notrace_modules())
        self.modules = modules
        self.seen: dict[str, list[tuple[object, object]]] = {}

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return isinstance(module, self.notrace) or super().is_leaf_module(module, qualname)

    def call_module(self, module, forward, args, kwargs):
        result = super().call_module(module, forward, args, kwargs)
        qualname = self.path_of_module(module)
        if qualname in self.modules:
            self.seen.setdefault(qualname, []).append((args[0] if args else None, result))
        return result


def traced_taps(backbone: nn.Module, taps: Sequence[TapRef]) -> fx.GraphModule:
    """A ``torch.fx`` graph of ``backbone`` that returns the taps' activations and nothing more.

    Operations that no tap needs are removed. The graph is not checked here:
    in-place operations may change a tapped value after it was produced (see
    :func:`tap_extractor`, which checks).

    Raises
    ------
    RuntimeError
        If a tap is not exactly one call in the traced graph, or not a tensor.
    Exception
        Whatever ``torch.fx`` raises on a backbone it cannot trace.
    """
    tracer = _TapTracer({tap.module for tap in taps if tap.module})
    graph = tracer.trace(backbone)
    (output,) = [node for node in graph.nodes if node.op == "output"]
    values = [_tap_node(tap, tracer.seen, output) for tap in taps]
    output.args = (tuple(values),)
    module = fx.GraphModule(backbone, graph)
    module.graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    module.recompile()
    return module


def _tap_node(tap: TapRef, seen: dict[str, list[tuple[object, object]]], output) -> fx.Node:
    if not tap.module:
        value = output.args[0]
    else:
        calls = seen.get(tap.module, [])
        if len(calls) != 1:
            raise RuntimeError(f"{tap.module!r} is called {len(calls)} times in the graph.")
        received, returned = calls[0]
        value = returned if tap.hook == "output" else received
    node = value.node if isinstance(value, fx.Proxy) else value
    if not isinstance(node, fx.Node):
        raise RuntimeError(f"The tap {tap.name!r} is not one tensor in the traced graph.")
    return node


def tap_extractor(backbone: nn.Module, taps: Sequence[TapRef], example: torch.Tensor) -> nn.Module:
    """The taps' activations as a module's outputs, pruned to what the taps need if possible.

    Parameters
    ----------
    backbone : torch.nn.Module
        The network, in eval mode.
    taps : sequence of TapRef
        Where to read.
    example : torch.Tensor
        A batch of model inputs (two images or more), on which a traced graph
        must agree with the hooks; otherwise :class:`HookedTaps` is returned.

    Returns
    -------
    torch.nn.Module
        A ``torch.fx.GraphModule`` or a :class:`HookedTaps`.

    Examples
    --------
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)).eval()
    >>> extractor = tap_extractor(model, [TapRef("1")], torch.randn(2, 3, 8, 8))
    >>> type(extractor).__name__, hasattr(extractor, "2")  # the last conv is cut off
    ('GraphModule', False)
    """
    hooked = HookedTaps(backbone, taps)
    try:
        traced = traced_taps(backbone, taps)
    except Exception:  # any tracing failure means: keep the hooks
        return hooked
    with torch.inference_mode(), eval_mode(backbone):
        expected = hooked(example)
        try:
            got = traced(example)
        except Exception:  # a graph that does not run is not used
            return hooked
    agree = len(got) == len(expected) and all(
        a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        for a, b in zip(got, expected, strict=True)
    )
    return traced if agree else hooked
