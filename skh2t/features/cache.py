"""A feature cache on disk: one entry per (image, extraction setup), shared between processes.

An *extraction setup* is everything the features of an image depend on: the
backbone (class, structure, a hash of its weights, dtype and device, the torch,
timm and skh2t versions), the precision its forward pass runs in (resolved:
``"float32"``, ``"bfloat16"`` or ``"float16"``), the preprocessing (input size,
interpolation, mean and std), the taps with their pooling, and whether each tap
is L2-normalised.
Its hash names a directory; inside it, every image has one file named by the
hash of its content (see :meth:`ImageArray.digests
<skh2t.features.images.ImageArray.digests>`). Two extractions share entries
exactly when they would compute the same features, so cross-validation folds,
candidates of a grid search that differ only in the classifier, restarts and
other processes all hit the same entries, and a change to any of the above
misses them.

Layout under the cache directory::

    skh2t-features-v1/
        <setup hash>/setup.json          the setup, for people (never read back)
        <setup hash>/<image hash>.f32    one image's features
        taps/<hash>.json                 what the taps of a backbone look like

An entry holds the image's output row: a 24-byte header (magic, number of
features, CRC-32 of the data) and the float32 values, little-endian. Files are
created as ``open()`` creates them (mode ``0o666`` less the umask), so that
other users can read a shared cache where the umask allows it. Entries
are written to a temporary file in the same directory and renamed into place,
so readers never see a partial entry; an entry that does not check out
(truncated, corrupted, wrong size) is recomputed and replaced. Nothing is ever
unpickled from the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from joblib import Memory
from torch import nn

from skh2t import __version__ as SKH2T_VERSION
from skh2t.features.backbones import (
    BackboneReference,
    parameter_dtype,
    structure_fingerprint,
    weights_fingerprint,
)
from skh2t.features.devices import Runtime
from skh2t.features.discovery import TapObservation
from skh2t.features.preprocessing import Preprocessor
from skh2t.features.taps import TapInfo, TapRef
from skh2t.output_files import open_new_file

#: Bump when what an entry holds, or how features are computed, changes without a version bump.
CACHE_FORMAT = 1
CACHE_SUBDIRECTORY = f"skh2t-features-v{CACHE_FORMAT}"
ENTRY_SUFFIX = ".f32"
_MAGIC = b"SKH2TF01"
_HEADER = struct.Struct("<8sQI4x")  # magic, number of features, CRC-32 of the data
_KEY_BYTES = 16


def resolve_cache_directory(cache: str | os.PathLike | Memory | None) -> Path | None:
    """The directory a ``cache`` parameter names, created if needed and checked to be writable.

    Parameters
    ----------
    cache : str, os.PathLike, joblib.Memory or None
        A directory; a :class:`joblib.Memory` stands for its ``location``
        (``None`` when it has none). skh2t keeps its entries in a sub-folder
        of its own and does not use joblib's pickle-based store.

    Returns
    -------
    pathlib.Path or None
        ``None`` when there is no cache.

    Examples
    --------
    >>> import tempfile
    >>> resolve_cache_directory(None) is None
    True
    >>> resolve_cache_directory(Memory(location=None)) is None
    True
    >>> resolve_cache_directory(tempfile.mkdtemp()).is_dir()
    True
    """
    path = cache_location(cache)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"cache={os.fspath(cache.location if isinstance(cache, Memory) else cache)!r} "
            f"must be a writable directory (or a place where one can be created): {error}"
        ) from error
    return path


def cache_location(cache: str | os.PathLike | Memory | None) -> Path | None:
    """The absolute directory a ``cache`` parameter names, without creating or checking it.

    Examples
    --------
    >>> cache_location(None) is None, cache_location("/tmp/x/../cache")
    (True, PosixPath('/tmp/cache'))
    """
    if isinstance(cache, Memory):
        cache = cache.location
    if cache is None:
        return None
    return Path(cache).expanduser().resolve()


def backbone_identity(
    model: nn.Module,
    device: torch.device,
    *,
    name: str | None = None,
    create_kwargs: Mapping[str, Any] | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """What the features depend on in a backbone, as a JSON-able dict.

    Its class, its structure (:func:`~skh2t.features.backbones.structure_fingerprint`:
    its ``repr`` and every module's class and settings such as ``eps``), a
    hash of its weights, dtype and device type, and the
    torch, timm and skh2t versions. ``fingerprint`` passes a weights hash
    already computed (:func:`~skh2t.features.backbones.weights_fingerprint`).

    Examples
    --------
    >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    >>> cpu = torch.device("cpu")
    >>> backbone_identity(a, cpu) == backbone_identity(a, cpu)
    True
    >>> backbone_identity(a, cpu) == backbone_identity(b, cpu)  # other weights
    False
    """
    dtype = parameter_dtype(model)
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "name": name,
        "create_kwargs": repr(sorted((create_kwargs or {}).items())),
        "structure": structure_fingerprint(model),
        "weights": fingerprint or weights_fingerprint(model),
        "dtype": str(dtype),
        "device": device.type,
        "versions": {"torch": torch.__version__, "timm": timm.__version__, "skh2t": SKH2T_VERSION},
    }


def identity_of(
    model: nn.Module,
    reference: BackboneReference | None,
    device: torch.device,
    *,
    fingerprint_known: bool = False,
) -> dict[str, Any]:
    """:func:`backbone_identity` of a fitted backbone, with its timm name and arguments if any.

    ``fingerprint_known``: the weights are the reference's, just loaded and
    hashed (so they are not hashed again).
    """
    if reference is None:
        return backbone_identity(model, device)
    return backbone_identity(
        model,
        device,
        name=reference.architecture,
        create_kwargs=dict(reference.create_kwargs),
        fingerprint=reference.fingerprint if fingerprint_known else None,
    )


def weights_state(model: nn.Module) -> tuple[Any, ...] | None:
    """A cheap summary of every weight tensor that changes when a weight does.

    Per tensor: its identity, storage address and version counter (bumped by
    in-place operations), and its L2 norm and sum (which see changes made
    behind the version counter, through ``.data``). A fraction of the cost of
    hashing the weights; a change that keeps every tensor's norm and sum (a
    permutation of its values in place, through ``.data``) is not seen. ``None`` when some tensor
    keeps no version counter (created under ``torch.inference_mode()``).

    Examples
    --------
    >>> layer = nn.Linear(2, 2)
    >>> before = weights_state(layer)
    >>> with torch.no_grad():
    ...     _ = layer.bias.add_(1.0)
    >>> weights_state(layer) == before
    False
    >>> before = weights_state(layer)
    >>> _ = layer.weight.data.mul_(2.0)  # bumps no version counter
    >>> weights_state(layer) == before
    False
    """
    tensors = list(model.state_dict(keep_vars=True).values())
    try:
        identities = [(id(t), t.data_ptr(), t._version) for t in tensors]
    except RuntimeError:
        return None
    with torch.no_grad():
        values = [t.detach() for t in tensors]
        floats = [t for t in values if t.is_floating_point()]
        norms = torch._foreach_norm(floats, 2) if floats else []  # one fused pass
        sums = [t.sum() if t.is_floating_point() else t.to(torch.float64).sum() for t in values]
        moments = torch.stack([*norms, *sums]).cpu().tolist() if values else []
    return (*identities, *moments)


def extraction_setup(
    backbone: Mapping[str, Any],
    preprocess: Preprocessor,
    taps: Sequence[TapInfo],
    *,
    l2: bool,
    precision: str,
) -> dict[str, Any]:
    """Everything the features of one image depend on, besides the image, as a JSON-able dict.

    ``precision`` is the resolved precision of the forward pass
    (:attr:`Runtime.precision <skh2t.features.devices.Runtime.precision>`), so
    that ``"auto"`` shares the entries of the precision it resolves to.
    """
    return {
        "format": CACHE_FORMAT,
        "backbone": dict(backbone),
        "precision": precision,
        "preprocessing": dataclasses.asdict(preprocess),
        "taps": [
            [tap.module, tap.hook, tap.layout, tap.pool_kernel, tap.pooled_shape] for tap in taps
        ],
        "l2": l2,
    }


def key_of(value: Any) -> str:
    """A hash of a JSON-able value (dict keys sorted).

    Examples
    --------
    >>> key_of({"a": 1, "b": [2, 3]}) == key_of({"b": (2, 3), "a": 1})
    True
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=_KEY_BYTES).hexdigest()


class FeatureCache:
    """The cached feature rows of one extraction setup.

    Parameters
    ----------
    root : pathlib.Path
        The cache directory.
    setup : dict
        The extraction setup, see :func:`extraction_setup`.
    n_features : int
        Length of every row.

    Examples
    --------
    >>> import tempfile
    >>> cache = FeatureCache(Path(tempfile.mkdtemp()), {"any": "setup"}, n_features=3)
    >>> out = np.zeros((2, 3), dtype=np.float32)
    >>> cache.read_into(["a1", "b2"], out)  # rows not in the cache yet
    array([0, 1])
    >>> cache.write(["b2"], [np.array([1.0, 2.0, 3.0], dtype=np.float32)])
    >>> cache.read_into(["a1", "b2"], out), out[1]
    (array([0]), array([1., 2., 3.], dtype=float32))
    """

    def __init__(self, root: Path, setup: Mapping[str, Any], n_features: int) -> None:
        self.root = Path(root)
        self.setup = dict(setup)
        self.n_features = int(n_features)
        self.directory = self.root / CACHE_SUBDIRECTORY / key_of(self.setup)

    def read_into(self, digests: Sequence[str], out: np.ndarray) -> np.ndarray:
        """Copy the cached row of every image into ``out``; return the rows that were missing.

        Parameters
        ----------
        digests : sequence of str
            Content hashes of the images, one per row of ``out``.
        out : numpy.ndarray of shape (len(digests), n_features)
            Receives the cached rows; the others are left alone.

        Returns
        -------
        numpy.ndarray of int
            Indices of the rows not found (or not valid) in the cache.
        """
        missing = [row for row, digest in enumerate(digests) if not self._read(digest, out[row])]
        return np.asarray(missing, dtype=np.intp)

    def write(self, digests: Iterable[str], rows: Iterable[np.ndarray]) -> None:
        """Store one row per image, atomically; an entry that cannot be written is skipped
        (one warning for the call), the others are still written."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            description = self.directory / "setup.json"
            if not description.exists():
                _write_atomically(description, json.dumps(self.setup, indent=1).encode())
        except OSError as error:
            _warn_not_written(self.directory, error, "; these features are not cached", 4)
            return
        failed, first_error = 0, None
        for digest, row in zip(digests, rows, strict=True):
            try:
                _write_atomically(self._entry(digest), _encode(row))
            except OSError as error:
                failed, first_error = failed + 1, first_error or error
        if failed:
            consequence = f"; {failed} image(s) of this call are not cached"
            _warn_not_written(self.directory, first_error, consequence, 4)

    def _entry(self, digest: str) -> Path:
        return self.directory / f"{digest}{ENTRY_SUFFIX}"

    def _read(self, digest: str, row: np.ndarray) -> bool:
        try:
            data = self._entry(digest).read_bytes()
        except OSError:
            return False
        values = _decode(data, self.n_features)
        if values is None:
            return False
        row[:] = values
        return True


def _encode(row: np.ndarray) -> bytes:
    data = np.ascontiguousarray(row, dtype="<f4").tobytes()
    return _HEADER.pack(_MAGIC, len(data) // 4, zlib.crc32(data)) + data


def _decode(data: bytes, n_features: int) -> np.ndarray | None:
    """The values of an entry, or ``None`` if it is not a complete, intact entry of that length."""
    if len(data) != _HEADER.size + 4 * n_features:
        return None
    magic, length, checksum = _HEADER.unpack_from(data)
    values = memoryview(data)[_HEADER.size :]
    if magic != _MAGIC or length != n_features or zlib.crc32(values) != checksum:
        return None
    return np.frombuffer(values, dtype="<f4")


def _warn_not_written(directory: Path, error: OSError, consequence: str, stacklevel: int):
    """A cache that cannot be written is not an error: say so, and carry on without it."""
    warnings.warn(
        f"Could not write to the feature cache in {str(directory)!r} ({error}){consequence}.",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = open_new_file(path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def cached_observations(
    root: Path,
    backbone: Mapping[str, Any],
    taps: Sequence[TapRef],
    input_size: Sequence[int],
    observe: Callable[[], list[TapObservation]],
) -> list[TapObservation]:
    """The tap observations of a backbone from the cache, or from ``observe()`` (then cached).

    Finding the taps takes a forward pass; what it sees depends on the backbone,
    the taps and the input size only, so a warm cache skips it.
    """
    key = {
        "format": CACHE_FORMAT,
        "backbone": dict(backbone),
        "taps": [[tap.module, tap.hook] for tap in taps],
        "input_size": list(input_size),
    }
    path = root / CACHE_SUBDIRECTORY / "taps" / f"{key_of(key)}.json"
    observations = _read_observations(path, len(taps))
    if observations is not None:
        return observations
    observations = observe()
    record = _observation_record(observations)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, record)
    except OSError as error:
        _warn_not_written(path.parent, error, "", 3)
    return observations


def _observation_record(observations: Sequence[TapObservation]) -> bytes:
    """The JSON record of tap observations, with a checksum of its content."""
    content = [dataclasses.asdict(seen) for seen in observations]
    return json.dumps({"observations": content, "checksum": key_of(content)}).encode()


def _read_observations(path: Path, n_taps: int) -> list[TapObservation] | None:
    """The observations of a record, or ``None`` if it is missing, damaged or edited."""
    try:
        record = json.loads(path.read_bytes())
        content = record["observations"]
        if record["checksum"] != key_of(content):
            return None
        observations = [
            TapObservation(**{**seen, "shape": tuple(seen["shape"])}) for seen in content
        ]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return observations if len(observations) == n_taps else None


class CacheKeeper:
    """The feature cache of one fitted extraction, re-keyed when its setup changes.

    The taps, preprocessing and normalisation of the setup are fixed at
    ``fit``; the backbone's identity (weights, structure, device) and the
    precision may change afterwards, and so may the ``cache`` parameter.
    :meth:`current` returns the :class:`FeatureCache` of the setup as it is
    now: it hashes the weights again only when their cheap summary
    (:func:`weights_state`) or the structure
    (:func:`~skh2t.features.backbones.structure_fingerprint`, a module
    setting such as ``eps`` or a module replaced) changed since the last
    call, or the device did.

    Parameters
    ----------
    preprocess : Preprocessor
    taps : sequence of TapInfo
    l2 : bool
        Whether each tap is L2-normalised.
    """

    def __init__(self, preprocess: Preprocessor, taps: Sequence[TapInfo], *, l2: bool) -> None:
        self.preprocess = preprocess
        self.taps = tuple(taps)
        self.l2 = l2
        self.feature_cache: FeatureCache | None = None
        self._seen: tuple[Any, ...] | None = None  # _backbone_state when the key was computed

    def bind(self, root: Path, identity: Mapping[str, Any], precision: str, model: nn.Module):
        """Use the entries of ``identity`` under ``root`` (at ``fit``, identity just computed)."""
        self.feature_cache = self._cache(root, identity, precision)
        self._seen = _backbone_state(model)
        return self

    def for_taps(self, taps: Sequence[TapInfo]) -> CacheKeeper:
        """A keeper of the same backbone and preprocessing for other taps (another pooling)."""
        keeper = CacheKeeper(self.preprocess, taps, l2=self.l2)
        cache = self.feature_cache
        if cache is not None:
            setup = cache.setup
            keeper.feature_cache = keeper._cache(cache.root, setup["backbone"], setup["precision"])
            keeper._seen = self._seen
        return keeper

    def current(
        self,
        cache: str | os.PathLike | Memory | None,
        model: nn.Module,
        reference: BackboneReference | None,
        runtime: Runtime,
    ) -> FeatureCache | None:
        """The cache of the ``cache`` parameter for ``model`` as it is now, on ``runtime``.

        Parameters
        ----------
        cache : str, os.PathLike, joblib.Memory or None
            The transformer's ``cache`` parameter (it may have been set after fit).
        model : torch.nn.Module
            The backbone.
        reference : BackboneReference or None
            Its recipe, for its name and ``backbone_kwargs``.
        runtime : Runtime
            Where and in which precision it runs.

        Returns
        -------
        FeatureCache or None
            ``None`` without a cache.
        """
        location = cache_location(cache)
        if location is None:
            return None
        device = runtime.device
        entries = self.feature_cache
        state = _backbone_state(model)
        if entries is None or entries.root != location:  # checked and created only when it changed
            identity = identity_of(model, reference, device)
            entries = self._cache(resolve_cache_directory(cache), identity, runtime.precision)
            self._seen = state
        moved = entries.setup["backbone"]["device"] != device.type
        if state is None or state != self._seen or moved:
            identity = identity_of(model, reference, device)
            if identity != entries.setup["backbone"]:
                entries = self._cache(entries.root, identity, runtime.precision)
            self._seen = state
        if entries.setup.get("precision") != runtime.precision:
            entries = self._cache(entries.root, entries.setup["backbone"], runtime.precision)
        self.feature_cache = entries
        return entries

    def _cache(self, root: Path, identity: Mapping[str, Any], precision: str) -> FeatureCache:
        setup = extraction_setup(
            identity, self.preprocess, self.taps, l2=self.l2, precision=precision
        )
        return FeatureCache(root, setup, self.taps[-1].stop)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_seen"] = None  # object ids: meaningless in another process
        return state


def _backbone_state(model: nn.Module) -> tuple[Any, ...] | None:
    """What tells that a backbone may have changed: its structure and :func:`weights_state`."""
    weights = weights_state(model)
    return None if weights is None else (structure_fingerprint(model), *weights)
