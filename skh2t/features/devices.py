"""Where a backbone runs: the ``device`` parameter of the estimators, resolved."""

from __future__ import annotations

import warnings

import torch


def resolve_device(device: str | torch.device, *, fallback_to_cpu: bool = False) -> torch.device:
    """The ``torch.device`` for a ``device`` parameter value.

    ``"auto"`` is CUDA when available, else the CPU. An unavailable CUDA device
    is an error, or, with ``fallback_to_cpu`` (estimators loaded on a machine
    without a GPU), a warning and the CPU.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'auto'."
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        if not fallback_to_cpu:
            raise ValueError(f"device={device!r} but CUDA is not available; use 'cpu' or 'auto'.")
        warnings.warn(
            f"device={device!r} but CUDA is not available here; running on the CPU.",
            UserWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return resolved
