"""Read taps where they are computed: a pruned torch.fx graph, or forward hooks.

:func:`tap_extractor` returns a module whose ``forward(batch)`` returns, for
every tap, its *reader* (a module, e.g. pooling and column selection) applied
to the tap's activation, as a tuple in the order of the taps. Readers run as
soon as their activation exists, so no raw activation outlives its use.

Where the backbone can be traced symbolically (timm's models can), the module
is a ``torch.fx`` graph with each reader inserted right after the node that
computes its tap, and every operation that no reader needs (the layers after
the deepest tap, the classifier when no tap reads it) removed. Where it
cannot, the whole backbone runs with forward hooks (:class:`HookedTaps`).
Either way the result is checked against the hooks' on an example batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models._features_fx import get_notrace_functions, get_notrace_modules
from torch import fx, nn

from skh2t.features.hooks import eval_mode, hooks_attached
from skh2t.features.taps import TapRef


class HookedTaps(nn.Module):
    """The whole backbone, run with hooks that apply each tap's reader to its activation.

    Parameters
    ----------
    backbone : torch.nn.Module
        The network.
    taps : sequence of TapRef
        Where to read.
    readers : sequence of torch.nn.Module
        One per tap, applied to its activation inside the hook.

    Examples
    --------
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    >>> taps = [TapRef("0", "input"), TapRef("1")]
    >>> outputs = HookedTaps(model, taps, [nn.Identity(), nn.Flatten(0)])(torch.zeros(2, 4))
    >>> [tuple(x.shape) for x in outputs]
    [(2, 4), (6,)]
    """

    def __init__(
        self, backbone: nn.Module, taps: Sequence[TapRef], readers: Sequence[nn.Module]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = tuple(taps)
        self.readers = nn.ModuleList(readers)

    def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seen: dict[int, torch.Tensor] = {}

        def read(index: int, module: nn.Module, tensor: torch.Tensor) -> None:
            seen[index] = self.readers[index](tensor)

        with hooks_attached(self.backbone, self.taps, read):
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


def traced_taps(
    backbone: nn.Module, taps: Sequence[TapRef], readers: Sequence[nn.Module]
) -> fx.GraphModule:
    """A ``torch.fx`` graph of ``backbone`` that returns the readers' results and nothing more.

    Each reader (submodule ``tap_reader_<i>``) is called right after the node
    that computes its tap; operations that no reader needs are removed. The
    graph is not checked here (see :func:`tap_extractor`, which checks).

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
    tap_nodes = [_tap_node(tap, tracer.seen, output) for tap in taps]
    module = fx.GraphModule(backbone, graph)
    results = []
    for index, (node, reader) in enumerate(zip(tap_nodes, readers, strict=True)):
        name = f"tap_reader_{index}"
        module.add_submodule(name, reader)
        with module.graph.inserting_after(node):
            results.append(module.graph.call_module(name, (node,)))
    output.args = (tuple(results),)
    module.graph.eliminate_dead_code()
    module.graph.lint()
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


def tap_extractor(
    backbone: nn.Module,
    taps: Sequence[TapRef],
    readers: Sequence[nn.Module],
    example: torch.Tensor,
) -> nn.Module:
    """Each tap's reader applied to its activation, as a module's outputs, pruned if possible.

    Parameters
    ----------
    backbone : torch.nn.Module
        The network, in eval mode.
    taps : sequence of TapRef
        Where to read.
    readers : sequence of torch.nn.Module
        One per tap: what to compute from its activation.
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
    >>> extractor = tap_extractor(model, [TapRef("1")], [nn.Flatten()], torch.randn(2, 3, 8, 8))
    >>> type(extractor).__name__, hasattr(extractor, "2")  # the last conv is cut off
    ('GraphModule', False)
    """
    hooked = HookedTaps(backbone, taps, readers)
    try:
        traced = traced_taps(backbone, taps, readers)
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
