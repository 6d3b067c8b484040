"""Several poolings of one backbone's taps from one forward pass per image.

A grid search over target sizes (or pooling strides) needs the features of
the same images under several poolings. The activations do not depend on the
pooling: :meth:`IntermediateFeatureTransformer.repool
<skh2t.features.IntermediateFeatureTransformer.repool>` derives, without
any forward pass, a fitted transformer with another pooling that shares the
backbone, and
:func:`transform_jointly` computes the features of every such transformer
from one forward pass per image, the hooks pooling each activation once per
distinct pooling plan. This is also how every ``transform`` runs, with one
transformer.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from joblib import Parallel, delayed, effective_n_jobs
from joblib.parallel import get_active_backend
from sklearn.utils.validation import check_is_fitted

from skh2t.features.backbones import parameter_dtype, structure_fingerprint, weights_fingerprint
from skh2t.features.devices import Runtime, resolve_precision, resolve_runtime
from skh2t.features.extraction import PooledOutput, extract_pooled
from skh2t.features.fitted import FittedExtraction
from skh2t.features.images import ImageArray, ImageList, as_images
from skh2t.progress import progress_bar

if TYPE_CHECKING:
    from skh2t.features.transformer import IntermediateFeatureTransformer

__all__ = ["iter_transform_jointly", "repool", "transform_jointly"]


def repool(
    transformer: IntermediateFeatureTransformer,
    *,
    target_size: int | None = None,
    pool_stride: int | None = None,
) -> IntermediateFeatureTransformer:
    """Deprecated alias of :meth:`IntermediateFeatureTransformer.repool
    <skh2t.features.IntermediateFeatureTransformer.repool>`.

    ``repool(transformer, target_size=T)`` is ``transformer.repool(target_size=T)``.

    .. deprecated:: 0.1
        Use the method; this function will be removed.

    Parameters
    ----------
    transformer : IntermediateFeatureTransformer
        Fitted.
    target_size, pool_stride : int, default=None
        As for the method.

    Returns
    -------
    IntermediateFeatureTransformer
    """
    warnings.warn(
        "skh2t.features.joint.repool(transformer, ...) is deprecated; use "
        "transformer.repool(...) instead.",
        FutureWarning,
        stacklevel=2,
    )
    return transformer.repool(target_size=target_size, pool_stride=pool_stride)


def transform_jointly(
    transformers: Sequence[IntermediateFeatureTransformer], X: Any
) -> list[np.ndarray]:
    """The features of ``X`` for every transformer, from one forward pass per image.

    The transformers must read the same taps of the same backbone with the
    same preprocessing and the same precision (as resolved on the device),
    and differ only in pooling (and normalisation), as those made by
    :meth:`IntermediateFeatureTransformer.repool
    <skh2t.features.IntermediateFeatureTransformer.repool>` do. The first
    one's backbone, device, ``batch_size``, ``n_jobs`` and ``verbose`` are
    used; every transformer reads and fills its own cache. Each output
    equals ``transformer.transform(X)``.

    Parameters
    ----------
    transformers : sequence of IntermediateFeatureTransformer
        Fitted.
    X : array-like of images or list of paths / PIL images
        As for :meth:`IntermediateFeatureTransformer.transform`.

    Returns
    -------
    list of ndarray of shape (n_images, n_features_out), float32
        One per transformer, in order.
    """
    if not transformers:
        raise ValueError("transform_jointly needs at least one transformer.")
    for transformer in transformers:
        check_is_fitted(transformer)
    _check_compatible([t.extraction_ for t in transformers])
    outputs = extract_jointly(transformers, as_images(X))
    for transformer, features in zip(transformers, outputs, strict=True):
        transformer.extraction_.standardize(features)
    return outputs


def iter_transform_jointly(
    transformers: Sequence[IntermediateFeatureTransformer],
    X: Any,
    *,
    chunk_size: int = 500,
    desc: str = "Extracting",
    verbose: bool = False,
) -> Iterator[tuple[slice, list[np.ndarray]]]:
    """:func:`transform_jointly`, ``chunk_size`` images at a time, one progress bar.

    Memory stays bounded by a chunk's features whatever the number of images:
    the way to evaluate wide features on a large test set.

    Parameters
    ----------
    transformers : sequence of IntermediateFeatureTransformer
        Fitted, as for :func:`transform_jointly`.
    X : array-like of images or list of paths / PIL images
        As for :meth:`IntermediateFeatureTransformer.transform`.
    chunk_size : int, default=500
        Images per chunk.
    desc : str, default="Extracting"
        The progress bar's label.
    verbose : bool, default=False
        Show the progress bar (in images).

    Yields
    ------
    rows : slice
        Positions of the chunk's images in ``X``.
    features : list of ndarray of shape (n_chunk, n_features_out), float32
        One per transformer, each equal to its ``transform`` of the chunk.

    Examples
    --------
    >>> from skh2t.features import IntermediateFeatureTransformer
    >>> images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    >>> small = IntermediateFeatureTransformer(
    ...     backbone="test_resnet", weights=None, image_size=32, target_size=64
    ... ).fit(images)
    >>> for rows, (X_small,) in iter_transform_jointly([small], images, chunk_size=2):
    ...     print(rows, X_small.shape)
    slice(0, 2, None) (2, 1800)
    slice(2, 4, None) (2, 1800)
    slice(4, 5, None) (1, 1800)
    """
    images = as_images(X)
    n_images = len(images)
    with progress_bar(total=n_images, desc=desc, unit="img", disable=not verbose) as bar:
        for start in range(0, n_images, chunk_size):
            rows = slice(start, min(start + chunk_size, n_images))
            chunk = images.take(np.arange(rows.start, rows.stop))
            features = transform_jointly(transformers, chunk)
            bar.update(rows.stop - rows.start)
            yield rows, features


def _check_compatible(extractions: Sequence[FittedExtraction]) -> None:
    lead = extractions[0]
    refs = [tap.ref for tap in lead.taps]
    model = lead.module
    fingerprint = None
    for other in extractions[1:]:
        if [tap.ref for tap in other.taps] != refs:
            raise ValueError("transform_jointly needs transformers that read the same taps.")
        if other.data_config != lead.data_config:
            raise ValueError(
                "transform_jointly needs transformers with the same preprocessing "
                f"(image size and normalisation); got {dict(lead.data_config)} and "
                f"{dict(other.data_config)}."
            )
        other_model = other.module
        if other_model is model:
            continue
        fingerprint = fingerprint or (structure_fingerprint(model), weights_fingerprint(model))
        if (structure_fingerprint(other_model), weights_fingerprint(other_model)) != fingerprint:
            raise ValueError(
                "transform_jointly needs transformers with the same backbone and weights; "
                "make the others with first.repool(target_size=...)."
            )


@dataclass(frozen=True)
class _Schedule:
    """How the lead transformer runs the backbone: device, precision, batches and, in the
    workers of a parallel extraction, PyTorch's thread count (``None``: the worker's own)."""

    device: str | torch.device
    precision: str
    batch_size: int
    n_jobs: int | None
    verbose: int
    threads: int | None = None


def extract_jointly(
    transformers: Sequence[IntermediateFeatureTransformer], images: ImageArray | ImageList
) -> list[np.ndarray]:
    """Features of ``images`` for every transformer (before any standardisation).

    From each transformer's cache where it has them; the images missing from
    any cache go through the first transformer's backbone once, for all.
    Reads the transformers' parameters and their ``extraction_`` only.
    """

    lead = transformers[0]
    n_images = len(images)
    runtime = resolve_runtime(lead.device, lead.precision, fallback_to_cpu=True)
    _check_precisions(transformers, runtime)
    extractions = [t.extraction_ for t in transformers]
    outs = [np.empty((n_images, e.n_features), dtype=np.float32) for e in extractions]
    caches = [
        e.cache.current(t.cache, e.module, e.reference, runtime)
        for t, e in zip(transformers, extractions, strict=True)
    ]
    digests = images.digests() if any(c is not None for c in caches) else None
    missing = [
        np.arange(n_images) if cache is None else cache.read_into(digests, out)
        for cache, out in zip(caches, outs, strict=True)
    ]
    todo = np.unique(np.concatenate(missing))
    schedule = _Schedule(lead.device, lead.precision, lead.batch_size, lead.n_jobs, lead.verbose)
    if all(rows_missing.size == n_images for rows_missing in missing):
        _compute(extractions, images, outs, runtime, schedule)
    elif todo.size:
        # Into fresh rows: a cached row is returned as the cache holds it, not recomputed.
        rows = [np.empty((todo.size, out.shape[1]), dtype=np.float32) for out in outs]
        _compute(extractions, images.take(todo), rows, runtime, schedule)
        position = np.searchsorted(todo, np.arange(n_images))
        for out, part, rows_missing in zip(outs, rows, missing, strict=True):
            out[rows_missing] = part[position[rows_missing]]
    for cache, out, rows_missing in zip(caches, outs, missing, strict=True):
        if cache is not None:
            cache.write((digests[i] for i in rows_missing), (out[i] for i in rows_missing))
    return outs


def _check_precisions(
    transformers: Sequence[IntermediateFeatureTransformer], runtime: Runtime
) -> None:
    """One forward pass serves all: every transformer's precision must resolve to the first's."""
    for other in transformers[1:]:
        if other.precision == transformers[0].precision:
            continue
        if resolve_precision(other.precision, runtime.device) != runtime.dtype:
            raise ValueError(
                "transform_jointly needs transformers with the same precision; got "
                f"precision={transformers[0].precision!r} and precision={other.precision!r}. "
                "Set the same precision on all of them (set_params(precision=...))."
            )


def _compute(
    extractions: Sequence[FittedExtraction],
    images: ImageArray | ImageList,
    outs: list[np.ndarray],
    runtime: Runtime,
    schedule: _Schedule,
) -> None:
    """Run the backbone over ``images`` into ``outs``: serially, or in chunks with joblib."""
    batch_size = schedule.batch_size
    n_batches = -(-len(images) // batch_size)
    n_chunks = min(effective_n_jobs(schedule.n_jobs), n_batches)
    if n_chunks <= 1:
        _forward(extractions, images, outs, runtime, batch_size, verbose=schedule.verbose)
        return
    # Chunks of whole batches: every image meets the same batch as in serial extraction.
    groups = np.array_split(np.arange(n_batches) * batch_size, n_chunks)
    bounds = [(group[0], min(group[-1] + batch_size, len(images))) for group in groups]
    # Each task builds one backbone from the first record (the others share its handle).
    payload = pickle.dumps(
        (list(extractions), replace(schedule, threads=_worker_threads(n_chunks)))
    )
    chunks = Parallel(n_jobs=schedule.n_jobs)(
        delayed(_forward_chunk)(payload, images.take(np.arange(start, stop)))
        for start, stop in bounds
    )
    for (start, stop), rows in zip(bounds, chunks, strict=True):
        for out, part in zip(outs, rows, strict=True):
            out[start:stop] = part


def _forward(
    extractions: Sequence[FittedExtraction],
    images: ImageArray | ImageList,
    outs: list[np.ndarray],
    runtime: Runtime,
    batch_size: int,
    *,
    verbose: int = 0,
) -> None:
    lead = extractions[0]
    device = runtime.device
    model = lead.module.to(device)
    preprocess = lead.preprocess
    dtype = parameter_dtype(model)
    starts = range(0, len(images), batch_size)
    batches = (
        preprocess(images.batch(start, start + batch_size), device=device, dtype=dtype)
        for start in starts
    )
    if verbose and len(starts) > 1:
        batches = progress_bar(batches, total=len(starts), desc="Extracting features", unit="batch")
    outputs = [
        PooledOutput([tap.plan for tap in e.taps], [tap.columns for tap in e.taps], out, e.l2)
        for e, out in zip(extractions, outs, strict=True)
    ]
    extract_pooled(model, [tap.ref for tap in lead.taps], outputs, batches, runtime=runtime)


def _worker_threads(n_chunks: int) -> int | None:
    """PyTorch threads per task: this process's share on joblib's local process backends
    (loky, multiprocessing), which would otherwise pick their own; ``None`` elsewhere
    (Dask workers keep their setting, threads share this process's)."""
    backend, _ = get_active_backend()
    if not backend.supports_inner_max_num_threads:
        return None
    return max(1, torch.get_num_threads() // n_chunks)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)  # the worker process may run other tasks


def _forward_chunk(payload: bytes, images: ImageArray | ImageList) -> list[np.ndarray]:
    """One chunk of a parallel extraction, in a joblib worker."""

    extractions, schedule = pickle.loads(payload)  # made by _compute, never read from disk
    outs = [np.empty((len(images), e.n_features), dtype=np.float32) for e in extractions]
    runtime = resolve_runtime(schedule.device, schedule.precision, fallback_to_cpu=True)
    with _torch_threads(schedule.threads):
        _forward(extractions, images, outs, runtime, schedule.batch_size)
    return outs
