"""Which activations to read ("taps"): Head2Toe defaults per family, names, globs, layouts.

A tap reads the output of a module (``"layer1.0"``) or, with an ``":input"``
suffix, its first positional input (``"layer1.0.conv2:input"``). The special
name ``"output"`` (when no module is called that) is the whole model's output.

``layers="auto"`` follows docs/user_guide/method.rst, step 1: for ResNets the stem, the
input of every convolution of every residual block, the final map, the
pre-logits and the logits (52 taps for ResNet-50); for ViTs the embeddings and,
per encoder block, the pre-attention norm, the attention output, the MLP hidden
activation and the MLP output, then the final norm, pre-logits and logits (53
for ViT-B/16); in the same spirit the inputs of every convolution of every
block for EfficientNet/MobileNetV3 and of every convolution and MLP layer for
ConvNeXt. Any other model gets the inputs of all its convolutions and linear
layers plus its output.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from timm.layers import CondConv2d, LayerNorm2d, MixedConv2d
from timm.models.convnext import ConvNeXt
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from skh2t.features.pooling import PoolingPlan

INPUT_SUFFIX = ":input"
OUTPUT_SUFFIX = ":output"
MODEL_OUTPUT = "output"
_GLOB_CHARS = "*?["
_CONVOLUTIONS = (nn.Conv2d, CondConv2d, MixedConv2d)
_CHANNELS_FIRST_1D = (
    nn.Conv1d,
    nn.ConvTranspose1d,
    nn.BatchNorm1d,
    nn.InstanceNorm1d,
    nn.AvgPool1d,
    nn.MaxPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
)


@dataclass(frozen=True)
class TapRef:
    """A place to read an activation: a module's output or its first input.

    Parameters
    ----------
    module : str
        Dotted module name as in ``model.named_modules()``; ``""`` is the model.
    hook : {"output", "input"}, default="output"
        Read what the module returns or what it receives.

    Examples
    --------
    >>> TapRef("layer1.0.conv2", "input").name
    'layer1.0.conv2:input'
    >>> TapRef("").name
    'output'
    """

    module: str
    hook: str = "output"

    @property
    def name(self) -> str:
        """The tap's name, as used in feature names."""
        if not self.module:
            return MODEL_OUTPUT
        return self.module + (INPUT_SUFFIX if self.hook == "input" else "")


@dataclass(frozen=True)
class TapInfo:
    """One row of a fitted transformer's tap table (``taps_``).

    Attributes
    ----------
    name : str
        Tap name; feature names are ``f"{name}__{index}"``.
    module, hook : str
        Where the activation is read (see :class:`TapRef`).
    layout : str
        Axis order of the activation, see :mod:`skh2t.features.pooling`.
    raw_shape : tuple of int
        Shape of one example's activation, in ``layout`` order.
    pool_kernel : tuple of int or None
        Pooling window (and stride); ``None`` is global pooling, ``()`` none.
    pooled_shape : tuple of int
        Shape of one example after pooling, channel first.
    start, stop : int
        The tap's columns in the output matrix are ``start:stop``.
    """

    name: str
    module: str
    hook: str
    layout: str
    raw_shape: tuple[int, ...]
    pool_kernel: tuple[int, ...] | None
    pooled_shape: tuple[int, ...]
    start: int
    stop: int

    @property
    def n_features(self) -> int:
        """Number of output columns of this tap."""
        return self.stop - self.start

    @property
    def columns(self) -> slice:
        """The tap's columns in the output matrix."""
        return slice(self.start, self.stop)

    @property
    def ref(self) -> TapRef:
        """Where the activation is read."""
        return TapRef(self.module, self.hook)

    @property
    def plan(self) -> PoolingPlan:
        """How the activation is pooled."""
        return PoolingPlan(self.layout, self.pool_kernel, self.pooled_shape)

    @classmethod
    def from_plan(
        cls, tap: TapRef, raw_shape: tuple[int, ...], plan: PoolingPlan, start: int, stop: int
    ) -> TapInfo:
        """Combine a tap, its activation shape, its pooling and its columns."""
        return cls(
            name=tap.name,
            module=tap.module,
            hook=tap.hook,
            layout=plan.layout,
            raw_shape=tuple(raw_shape),
            pool_kernel=plan.kernel,
            pooled_shape=plan.pooled_shape,
            start=start,
            stop=stop,
        )


def model_family(model: nn.Module) -> str:
    """The architecture family whose Head2Toe default taps apply to ``model``.

    One of ``"resnet"``, ``"vit"``, ``"efficientnet"``, ``"mobilenetv3"``,
    ``"convnext"``, or ``"generic"``.

    Examples
    --------
    >>> import timm
    >>> model_family(timm.create_model("test_vit", pretrained=False))
    'vit'
    """
    for family, cls, _ in _FAMILY_RULES:
        if isinstance(model, cls):
            return family
    return "generic"


def default_taps(model: nn.Module) -> list[TapRef]:
    """The Head2Toe default taps of ``model`` (``layers="auto"``), before de-duplication.

    Found from the module tree alone, without running the model. When the
    transformer is fitted, taps that read the very same tensor as an earlier
    one (e.g. a block input that is the stem output) are dropped.

    Examples
    --------
    >>> import timm
    >>> taps = default_taps(timm.create_model("test_resnet", pretrained=False))
    >>> [tap.name for tap in taps[:3]]
    ['act1', 'layer1.0.conv1:input', 'layer1.0.conv2:input']
    >>> [tap.name for tap in taps[-3:]]
    ['layer4', 'fc:input', 'fc']
    """
    for _, cls, rule in _FAMILY_RULES:
        if isinstance(model, cls):
            return rule(model)
    return _generic_taps(model)


def _resnet_taps(model: ResNet) -> list[TapRef]:
    stages = [name for name in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, name)]
    taps = [TapRef("act1")]
    for stage in stages:
        for index, block in getattr(model, stage).named_children():
            taps += _child_inputs(f"{stage}.{index}", block, ("conv1", "conv2", "conv3"))
    return [*taps, TapRef(stages[-1]), *_head_taps(model)]


def _vit_taps(model: VisionTransformer) -> list[TapRef]:
    taps = [TapRef("patch_embed"), TapRef("pos_drop")]
    for index, block in enumerate(model.blocks):
        prefix = f"blocks.{index}"
        taps += [TapRef(f"{prefix}.norm1"), TapRef(f"{prefix}.attn")]
        taps += _child_inputs(f"{prefix}.mlp", block.mlp, ("fc2",))  # the MLP hidden activation
        taps.append(TapRef(f"{prefix}.mlp"))
    if not isinstance(model.norm, nn.Identity):
        taps.append(TapRef("norm"))
    return taps + _head_taps(model)


def _efficientnet_taps(model: EfficientNet | MobileNetV3) -> list[TapRef]:
    taps = [TapRef("bn1")]
    for stage_index, stage in model.blocks.named_children():
        for block_index, block in stage.named_children():
            taps += _conv_inputs(f"blocks.{stage_index}.{block_index}", block)
    # EfficientNet's final map is after conv_head + bn2; MobileNetV3 applies its head conv
    # after global pooling, so there the final map is the last block's output.
    final_map = "bn2" if isinstance(model, EfficientNet) else "blocks"
    return [*taps, TapRef(final_map), *_head_taps(model)]


def _convnext_taps(model: ConvNeXt) -> list[TapRef]:
    taps = [TapRef("stem")]
    for stage_index, stage in enumerate(model.stages):
        for block_index, block in enumerate(stage.blocks):
            prefix = f"stages.{stage_index}.blocks.{block_index}"
            taps += _child_inputs(prefix, block, ("conv_dw",))
            taps += _child_inputs(f"{prefix}.mlp", block.mlp, ("fc1", "fc2"))
        taps.append(TapRef(f"stages.{stage_index}"))
    return taps + _head_taps(model)


def _generic_taps(model: nn.Module) -> list[TapRef]:
    layers = (nn.Conv1d, nn.Conv2d, nn.Linear)
    taps = [
        TapRef(name, "input")
        for name, module in model.named_modules()
        if isinstance(module, layers)
    ]
    classifier = _classifier_name(model)
    return [*taps, TapRef(classifier if classifier is not None else "")]


def _conv_inputs(prefix: str, block: nn.Module) -> list[TapRef]:
    """Inputs of the convolutions of a block, in module order, squeeze-excitation gates aside.

    A mixed or conditional convolution counts as one: its parts are not visited.
    """
    taps = []
    for name, child in block.named_children():
        if name == "se":
            continue
        if isinstance(child, _CONVOLUTIONS):
            taps.append(TapRef(f"{prefix}.{name}", "input"))
        else:
            taps += _conv_inputs(f"{prefix}.{name}", child)
    return taps


def _child_inputs(prefix: str, parent: nn.Module, children: Sequence[str]) -> list[TapRef]:
    return [TapRef(f"{prefix}.{child}", "input") for child in children if hasattr(parent, child)]


def _head_taps(model: nn.Module) -> list[TapRef]:
    """Pre-logits (the classifier's input) and logits (its output, if it is not an identity)."""
    name = _classifier_name(model)
    if name is None:
        return [TapRef("")]
    classifier = model.get_submodule(name)
    if isinstance(classifier, nn.Identity):
        return [TapRef(name, "input")]
    return [TapRef(name, "input"), TapRef(name)]


def _classifier_name(model: nn.Module) -> str | None:
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        return None
    classifier = get_classifier()
    for name, module in model.named_modules():
        if module is classifier and name:
            return name
    return None


_FAMILY_RULES = (
    ("resnet", ResNet, _resnet_taps),
    ("vit", VisionTransformer, _vit_taps),
    ("efficientnet", EfficientNet, _efficientnet_taps),
    ("mobilenetv3", MobileNetV3, _efficientnet_taps),
    ("convnext", ConvNeXt, _convnext_taps),
)


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[TapRef]:
    """Turn the ``layers`` parameter into taps: ``"auto"``, names or glob patterns.

    Each entry is a module name or an :mod:`fnmatch` pattern over module names
    (``*`` also matches dots), optionally followed by ``":input"``. Matches keep
    the order of ``model.named_modules()`` within an entry; repeats are dropped.

    Examples
    --------
    >>> import timm
    >>> model = timm.create_model("test_resnet", pretrained=False)
    >>> [tap.name for tap in resolve_layers(model, ["layer[12].0.conv2:input", "fc"])]
    ['layer1.0.conv2:input', 'layer2.0.conv2:input', 'fc']
    >>> resolve_layers(model, "layer9")
    Traceback (most recent call last):
    ...
    ValueError: No module of ResNet is named 'layer9'. ...
    """
    if isinstance(layers, str) and layers == "auto":
        return default_taps(model)
    entries = [layers] if isinstance(layers, str) else list(layers)
    if not entries:
        raise ValueError("layers is empty; pass 'auto' or module names.")
    names = [name for name, _ in model.named_modules() if name]
    taps: list[TapRef] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise TypeError(f"layers entries must be strings; got {entry!r}.")
        taps += [tap for tap in _match_entry(model, entry, names) if tap not in taps]
    return taps


def _match_entry(model: nn.Module, entry: str, names: list[str]) -> list[TapRef]:
    pattern, hook = _split_hook(entry)
    if pattern == MODEL_OUTPUT and MODEL_OUTPUT not in names and hook == "output":
        return [TapRef("")]
    if any(char in pattern for char in _GLOB_CHARS):
        matches = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            raise ValueError(
                f"No module of {type(model).__name__} matches the pattern {pattern!r}. "
                + describe_modules(names)
            )
        return [TapRef(name, hook) for name in matches]
    if pattern not in names:
        close = difflib.get_close_matches(pattern, names, n=5)
        hint = f"Close names: {', '.join(close)}. " if close else ""
        raise ValueError(
            f"No module of {type(model).__name__} is named {pattern!r}. {hint}"
            + describe_modules(names)
        )
    return [TapRef(pattern, hook)]


def _split_hook(entry: str) -> tuple[str, str]:
    if entry.endswith(INPUT_SUFFIX):
        return entry[: -len(INPUT_SUFFIX)], "input"
    if entry.endswith(OUTPUT_SUFFIX):
        return entry[: -len(OUTPUT_SUFFIX)], "output"
    if ":" in entry:
        raise ValueError(
            f"Unknown suffix in layers entry {entry!r}; use {INPUT_SUFFIX!r} to read a module's "
            "input, or nothing to read its output."
        )
    return entry, "output"


def describe_modules(names: Sequence[str], limit: int = 40) -> str:
    """A truncated listing of module names for error messages.

    Examples
    --------
    >>> print(describe_modules(["conv1", "bn1", "fc"], limit=2))
    Available modules (3): conv1, bn1, ... and 1 more. Append ':input' ...
    """
    shown = ", ".join(names[:limit])
    more = f", ... and {len(names) - limit} more" if len(names) > limit else ""
    return (
        f"Available modules ({len(names)}): {shown}{more}. Append {INPUT_SUFFIX!r} to read a "
        "module's input; glob patterns such as 'layer*.*.conv1:input' select many."
    )


def infer_layout(module: nn.Module, hook: str, rank: int) -> str | None:
    """Guess the axis order of a batch read at ``module``; ``None`` if not poolable.

    2-D is a vector; 3-D a token map ``(N, L, C)`` unless ``module`` is a 1-D
    convolution-like layer ``(N, C, L)``; 4-D is ``(N, C, H, W)`` unless
    ``module`` works on the last axis (a linear layer, a plain layer norm, or a
    patch embedding that outputs NHWC), which makes it channels-last.

    Examples
    --------
    >>> from torch import nn
    >>> infer_layout(nn.Linear(8, 8), "input", 4)
    'nhwc'
    >>> infer_layout(nn.Conv2d(8, 8, 1), "input", 4)
    'nchw'
    >>> infer_layout(nn.Linear(8, 8), "output", 3)
    'nlc'
    """
    if rank == 2:
        return "nc"
    if rank == 3:
        return "ncl" if isinstance(module, _CHANNELS_FIRST_1D) else "nlc"
    if rank == 4:
        return "nhwc" if _works_on_last_axis(module, hook) else "nchw"
    return None


def _works_on_last_axis(module: nn.Module, hook: str) -> bool:
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.LayerNorm) and not isinstance(module, LayerNorm2d):
        return True
    output_format = getattr(module, "output_fmt", None)
    return hook == "output" and getattr(output_format, "value", output_format) == "NHWC"
