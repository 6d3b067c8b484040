"""Head2Toe pooling a(.): shrink one activation to a flat feature vector per example.

The rule (docs/user_guide/method.rst, step 2), for a target size ``T``:

- a conv map with ``C`` channels and width ``W``: if ``C >= T``, global average
  pooling; else ``n = floor(sqrt(floor(T / C)))``, pool size ``p = floor(W / n)``
  (at least 1), average pooling with kernel ``p`` and stride ``p``;
- a token map with ``N`` tokens and ``C`` channels: if ``C >= T``, the mean over
  tokens; else ``p = int(N / (T / C))`` (at least 1), 1-D average pooling with
  kernel ``p`` and stride ``p`` over the tokens;
- a vector: unchanged.

An explicit pooling stride ``s`` replaces the rule: kernel and stride ``s`` over
space or tokens (clipped to the map's extent); vectors stay unchanged. Pooling
never mixes channels. Windows that do not fit entirely are dropped ("valid"
pooling, as in the official implementation).

Layouts name the axes of one batch: ``"nchw"`` and ``"nhwc"`` (conv maps),
``"nlc"`` (token maps, e.g. ViT) and ``"ncl"`` (1-D conv maps, pooled like token
maps), ``"nc"`` (vectors). Pooled features are flattened channel-major: feature
``c * P + j`` is channel ``c`` at pooled position ``j`` (row-major over space).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CONV_LAYOUTS = ("nchw", "nhwc")
TOKEN_LAYOUTS = ("nlc", "ncl")
VECTOR_LAYOUT = "nc"
LAYOUTS = (*CONV_LAYOUTS, *TOKEN_LAYOUTS, VECTOR_LAYOUT)
_RANK = {"nchw": 4, "nhwc": 4, "nlc": 3, "ncl": 3, "nc": 2}


@dataclass(frozen=True)
class PoolingPlan:
    """How one tap is pooled: the layout of its activation and the pooling window.

    Parameters
    ----------
    layout : str
        One of ``"nchw"``, ``"nhwc"``, ``"nlc"``, ``"ncl"``, ``"nc"``.
    kernel : tuple of int or None
        Window (and stride) over space (``(kh, kw)``) or tokens (``(k,)``);
        ``None`` means global average pooling; ``()`` for vectors.
    pooled_shape : tuple of int
        Shape of one pooled example before flattening, channel first:
        ``(C, H', W')``, ``(C, N')``, ``(C,)``.
    """

    layout: str
    kernel: tuple[int, ...] | None
    pooled_shape: tuple[int, ...]

    @property
    def n_features(self) -> int:
        """Number of features this tap contributes."""
        return math.prod(self.pooled_shape)


def conv_map_pool_size(channels: int, width: int, target_size: int) -> int | None:
    """Pool size of the target-size rule for a conv map; ``None`` means global pooling.

    Examples
    --------
    >>> conv_map_pool_size(channels=64, width=56, target_size=8192)  # n = 11
    5
    >>> conv_map_pool_size(channels=2048, width=7, target_size=1024) is None
    True
    """
    if channels >= target_size:
        return None
    n = math.isqrt(target_size // channels)
    return max(1, width // n)


def token_map_pool_size(channels: int, n_tokens: int, target_size: int) -> int | None:
    """Pool size of the target-size rule for a token map; ``None`` means the token mean.

    Examples
    --------
    >>> token_map_pool_size(channels=768, n_tokens=197, target_size=8192)  # int(197 / 10.67)
    18
    >>> token_map_pool_size(channels=768, n_tokens=197, target_size=512) is None
    True
    """
    if channels >= target_size:
        return None
    return max(1, int(n_tokens / (target_size / channels)))


def split_shape(layout: str, shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Split the per-example ``shape`` of an activation into ``(channels, spatial extent)``.

    Examples
    --------
    >>> split_shape("nhwc", (7, 9, 32))
    (32, (7, 9))
    >>> split_shape("nlc", (197, 768))
    (768, (197,))
    """
    _check_layout(layout, len(shape) + 1)
    if layout in ("nchw", "ncl", "nc"):
        return shape[0], tuple(shape[1:])
    return shape[-1], tuple(shape[:-1])


def plan_pooling(
    layout: str,
    shape: tuple[int, ...],
    *,
    target_size: int | None = None,
    pool_stride: int | None = None,
) -> PoolingPlan:
    """Decide how to pool an activation of per-example ``shape`` in ``layout``.

    ``pool_stride``, when given, overrides ``target_size``.

    Examples
    --------
    >>> plan_pooling("nchw", (64, 56, 56), target_size=8192)
    PoolingPlan(layout='nchw', kernel=(5, 5), pooled_shape=(64, 11, 11))
    >>> plan_pooling("nlc", (197, 768), target_size=8192)
    PoolingPlan(layout='nlc', kernel=(18,), pooled_shape=(768, 10))
    >>> plan_pooling("nchw", (64, 56, 56), pool_stride=8).pooled_shape
    (64, 7, 7)
    >>> plan_pooling("nc", (1000,), target_size=512).pooled_shape
    (1000,)
    """
    if target_size is None and pool_stride is None:
        raise ValueError("Pass a target_size or a pool_stride.")
    channels, extent = split_shape(layout, tuple(int(s) for s in shape))
    if layout == VECTOR_LAYOUT:
        return PoolingPlan(layout, (), (channels,))
    kernel = _kernel(layout, channels, extent, target_size, pool_stride)
    if kernel is None:
        return PoolingPlan(layout, None, (channels,))
    pooled = tuple(size // k for size, k in zip(extent, kernel, strict=True))
    return PoolingPlan(layout, kernel, (channels, *pooled))


def _kernel(
    layout: str,
    channels: int,
    extent: tuple[int, ...],
    target_size: int | None,
    pool_stride: int | None,
) -> tuple[int, ...] | None:
    if pool_stride is not None:
        size = pool_stride
    elif layout in CONV_LAYOUTS:
        size = conv_map_pool_size(channels, extent[-1], target_size)
    else:
        size = token_map_pool_size(channels, extent[0], target_size)
    if size is None:
        return None
    # A window larger than the map would pool nothing: clip it to the map.
    return tuple(min(size, s) for s in extent)


def pool_activation(x: torch.Tensor, plan: PoolingPlan) -> torch.Tensor:
    """Pool a batch ``x`` as ``plan`` says and flatten it to ``(batch, n_features)``.

    The result may share memory with ``x`` (vectors are returned as they are):
    copy it before ``x`` can change.

    Examples
    --------
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> pool_activation(x, plan_pooling("nchw", (1, 4, 4), pool_stride=2))
    tensor([[ 2.5000,  4.5000, 10.5000, 12.5000]])
    """
    _check_layout(plan.layout, x.dim())
    if plan.layout == VECTOR_LAYOUT:
        return x
    if plan.layout in CONV_LAYOUTS:
        pooled = _pool_conv_map(x, plan.layout, plan.kernel)
    else:
        pooled = _pool_token_map(x, plan.layout, plan.kernel)
    return pooled.reshape(x.shape[0], -1)


def _pool_conv_map(x: torch.Tensor, layout: str, kernel: tuple[int, ...] | None) -> torch.Tensor:
    if layout == "nhwc":
        x = x.permute(0, 3, 1, 2)  # a channels-last view; avg_pool2d handles it natively
    if kernel is None:
        return x.mean(dim=(2, 3))
    if kernel == (1, 1):
        return x
    return F.avg_pool2d(x, kernel_size=kernel, stride=kernel)


def _pool_token_map(x: torch.Tensor, layout: str, kernel: tuple[int, ...] | None) -> torch.Tensor:
    token_axis = 1 if layout == "nlc" else 2
    if kernel is None:
        return x.mean(dim=token_axis)
    (k,) = kernel
    n_windows = x.shape[token_axis] // k
    windows = x.narrow(token_axis, 0, n_windows * k).unflatten(token_axis, (n_windows, k))
    pooled = windows.mean(dim=token_axis + 1) if k > 1 else windows.squeeze(token_axis + 1)
    # channel-major: (batch, C, n_windows)
    return pooled.transpose(1, 2) if layout == "nlc" else pooled


def l2_normalize(x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Divide every row of ``x`` by its L2 norm (computed in float32); all-zero rows stay zero.

    ``out``, if given, receives the result (it may be a strided view).

    Examples
    --------
    >>> l2_normalize(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    """
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32)
    # 0 / tiny == 0, so all-zero rows stay zero.
    norm.clamp_min_(torch.finfo(torch.float32).tiny)
    return torch.div(x, norm, out=out)


def _check_layout(layout: str, rank: int) -> None:
    if layout not in _RANK:
        raise ValueError(f"Unknown layout {layout!r}; expected one of {LAYOUTS}.")
    if _RANK[layout] != rank:
        raise ValueError(
            f"Layout {layout!r} describes {_RANK[layout]}-D batches; got a {rank}-D activation."
        )
