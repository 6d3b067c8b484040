"""Where and in which precision a backbone runs: the ``device`` and ``precision``
parameters of the estimators, resolved."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from skh2t._precisions import DEFAULT_PRECISION, PRECISIONS

__all__ = [
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "Runtime",
    "available_devices",
    "cpu_has_native_bfloat16",
    "resolve_device",
    "resolve_precision",
    "resolve_runtime",
]


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
_TORCH_CPU_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
_CPUINFO = Path("/proc/cpuinfo")
# Accelerators PyTorch asks with ``torch.<type>.is_available()``, and their names in messages.
_ACCELERATORS = {"cuda": "CUDA", "mps": "MPS", "xpu": "XPU"}


def resolve_device(device: str | torch.device, *, fallback_to_cpu: bool = False) -> torch.device:
    """The ``torch.device`` for a ``device`` parameter value.

    ``"auto"`` is CUDA when available, else the CPU. A device this machine
    cannot run (CUDA or MPS without one, an index beyond the devices present,
    the data-less ``"meta"`` device) is an error, or, with ``fallback_to_cpu``
    (estimators loaded on a machine without their accelerator), a warning and
    the CPU; ``"meta"`` is always an error.

    Raises
    ------
    ValueError
        Naming the device and the devices available here.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("meta")
    Traceback (most recent call last):
    ...
    ValueError: device='meta' cannot run a backbone: a 'meta' device holds no data; ...
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"device={device!r} is not a torch device; use {_available_text()}."
        ) from error
    problem = _unavailable(resolved)
    if problem is None:
        return resolved
    if not fallback_to_cpu or resolved.type == "meta":
        raise ValueError(f"device={str(device)!r} {problem}; use {_available_text()}.")
    warnings.warn(
        f"device={str(device)!r} {problem}; running on the CPU.", UserWarning, stacklevel=3
    )
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The ``device`` values that run on this machine: ``"cpu"``, the accelerators
    present (``"cuda"``, ``"mps"``, ...) and ``"auto"``.

    Examples
    --------
    >>> available_devices()[0], available_devices()[-1]
    ('cpu', 'auto')
    """
    present = [kind for kind in _ACCELERATORS if _backend_available(kind)]
    return ["cpu", *present, "auto"]


def _available_text() -> str:
    names = [repr(name) for name in available_devices()]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _unavailable(device: torch.device) -> str | None:
    """Why this machine cannot run a backbone on ``device`` (a phrase), or ``None``."""
    if device.type == "cpu":
        return None
    if device.type == "meta":
        return "cannot run a backbone: a 'meta' device holds no data"
    name = _ACCELERATORS.get(device.type, repr(device.type))
    if not _backend_available(device.type):
        return f"but {name} is not available here"
    count = getattr(getattr(torch, device.type), "device_count", None)
    if device.index is not None and callable(count) and device.index >= count():
        return f"but this machine has {count()} {name} device(s)"
    return None


def _backend_available(kind: str) -> bool:
    """Whether PyTorch can use ``torch.device(kind)`` here (``torch.<kind>.is_available()``)."""
    is_available = getattr(getattr(torch, kind, None), "is_available", None)
    return callable(is_available) and bool(is_available())


def resolve_precision(precision: str, device: str | torch.device) -> torch.dtype:
    """The dtype the backbone computes in for a ``precision`` parameter value on ``device``.

    ``"float32"`` runs the backbone as it is. ``"bfloat16"`` and ``"float16"``
    run its forward pass under :class:`torch.autocast` with that dtype:
    bfloat16 on the CPU and on CUDA devices that support it, float16 on CUDA
    only. ``"auto"`` is the fastest the device runs well: on CUDA bfloat16
    where the GPU has it natively, else float16; on the CPU bfloat16 where it
    has native bfloat16 units (AVX512-BF16 or AMX), else float32; float32 on
    any other device.

    Parameters
    ----------
    precision : {"float32", "bfloat16", "float16", "auto"}
        The parameter value.
    device : str or torch.device
        A resolved device (see :func:`resolve_device`).

    Returns
    -------
    torch.dtype
        ``torch.float32`` (no autocast), ``torch.bfloat16`` or ``torch.float16``.

    Raises
    ------
    ValueError
        For an unknown value, or one the device cannot run (float16 on the CPU,
        bfloat16 on a GPU without it, a reduced precision on a device other
        than the CPU and CUDA).

    Examples
    --------
    >>> resolve_precision("bfloat16", "cpu")
    torch.bfloat16
    >>> resolve_precision("float32", "cpu")
    torch.float32
    >>> resolve_precision("float16", "cpu")
    Traceback (most recent call last):
    ...
    ValueError: precision='float16' runs on CUDA devices only; on the CPU use ...
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision={precision!r} is not one of {', '.join(map(repr, PRECISIONS))}."
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available; use 'cpu' or 'auto'.")
    if precision == "auto":
        return _fastest_precision(device)
    dtype = _DTYPES[precision]
    if dtype is torch.float32:
        return dtype
    if device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"precision={precision!r} runs on the CPU and on CUDA devices; on "
            f"{device.type!r} use 'float32' or 'auto'."
        )
    if device.type == "cpu" and dtype is torch.float16:
        raise ValueError(
            "precision='float16' runs on CUDA devices only; on the CPU use 'bfloat16', 'auto' "
            "or 'float32'."
        )
    if device.type == "cuda" and dtype is torch.bfloat16 and not _cuda_has_bfloat16(device):
        raise ValueError(
            f"precision='bfloat16' but the CUDA device {str(device)!r} does not support "
            "bfloat16; use 'float16', 'auto' or 'float32'."
        )
    return dtype


@dataclass(frozen=True)
class Runtime:
    """Where a backbone runs and in which dtype: ``device`` and ``precision``, resolved.

    Attributes
    ----------
    device : torch.device
        The device.
    dtype : torch.dtype
        ``torch.float32`` (the backbone as it is), or the autocast dtype of its
        forward pass.
    """

    device: torch.device
    dtype: torch.dtype = torch.float32

    @property
    def precision(self) -> str:
        """The resolved precision's name: ``"float32"``, ``"bfloat16"`` or ``"float16"``."""
        return str(self.dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context to run the backbone's forward pass in: autocast to ``dtype``, or nothing.

        Examples
        --------
        >>> runtime = Runtime(torch.device("cpu"), torch.bfloat16)
        >>> with runtime.autocast():
        ...     torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype
        torch.bfloat16
        >>> runtime.precision
        'bfloat16'
        """
        if self.dtype is torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def resolve_runtime(
    device: str | torch.device, precision: str, *, fallback_to_cpu: bool = False
) -> Runtime:
    """The device and dtype of a ``device`` and a ``precision`` parameter value.

    As :func:`resolve_device` and :func:`resolve_precision`; with
    ``fallback_to_cpu`` (estimators loaded on a machine without a GPU), a CUDA
    device runs on the CPU with a warning, and then ``precision="float16"``,
    which the CPU cannot run, in float32 (a second warning).

    Examples
    --------
    >>> resolve_runtime("cpu", "bfloat16")
    Runtime(device=device(type='cpu'), dtype=torch.bfloat16)
    """
    resolved = resolve_device(device, fallback_to_cpu=fallback_to_cpu)
    fell_back = resolved.type == "cpu" and _names_cuda(device)
    if fell_back and precision == "float16":
        warnings.warn(
            "precision='float16' runs on CUDA only; running in float32 on the CPU.",
            UserWarning,
            stacklevel=3,
        )
        return Runtime(resolved, torch.float32)
    return Runtime(resolved, resolve_precision(precision, resolved))


def _names_cuda(device: str | torch.device) -> bool:
    if isinstance(device, str) and device == "auto":
        return False
    return torch.device(device).type == "cuda"


def _fastest_precision(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if _cuda_has_bfloat16(device, native=True) else torch.float16
    if device.type == "cpu" and cpu_has_native_bfloat16():
        return torch.bfloat16
    return torch.float32


def _cuda_has_bfloat16(device: torch.device, *, native: bool = False) -> bool:
    """Whether the CUDA ``device`` runs bfloat16 (``native``: in hardware, not emulated)."""
    with torch.cuda.device(device):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=not native))
        except TypeError:  # torch < 2.3 has no emulation switch: it reports native support
            return bool(torch.cuda.is_bf16_supported())


@cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 units (AVX512-BF16 or AMX), where bfloat16 pays off.

    Asks PyTorch's CPU probes (``torch.cpu._is_avx512_bf16_supported`` and
    ``_is_amx_tile_supported``) where it has them, else reads the flags of
    ``/proc/cpuinfo`` (``avx512_bf16``, ``amx_bf16``). On other CPUs (older
    x86 ones, ARM) it says ``False``, and ``precision="auto"`` runs in float32.
    """
    probes = [getattr(torch.cpu, name, None) for name in _TORCH_CPU_PROBES]
    probes = [probe for probe in probes if probe is not None]
    if not probes:
        return _cpuinfo_has(_CPU_BFLOAT16_FLAGS)
    for probe in probes:
        with contextlib.suppress(RuntimeError):
            if probe():
                return True
    return False


def _cpuinfo_has(flags: tuple[str, ...]) -> bool:
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return any(flag in line.split() for flag in flags)
    return False
