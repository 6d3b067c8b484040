"""Several poolings of one backbone's taps from one forward pass per image.

A grid search over target sizes (or pooling strides) needs the features of
the same images under several poolings. The activations do not depend on the
pooling: :func:`repool` derives, without any forward pass, a fitted
transformer with another pooling that shares the backbone, and
:func:`transform_jointly` computes the features of every such transformer
from one forward pass per image, the hooks pooling each activation once per
distinct pooling plan. This is also how every ``transform`` runs, with one
transformer.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.utils.validation import check_is_fitted

from skh2t.features.backbones import parameter_dtype, weights_fingerprint
from skh2t.features.devices import Runtime, resolve_precision, resolve_runtime
from skh2t.features.extraction import PooledOutput, extract_pooled
from skh2t.features.images import ImageArray, ImageList, as_images
from skh2t.features.pooling import plan_pooling
from skh2t.features.preprocessing import Preprocessor
from skh2t.features.taps import TapInfo
from skh2t.progress import progress_bar

if TYPE_CHECKING:
    from skh2t.features.transformer import IntermediateFeatureTransformer

__all__ = ["repool", "transform_jointly"]


def repool(
    transformer: IntermediateFeatureTransformer,
    *,
    target_size: int | None = None,
    pool_stride: int | None = None,
) -> IntermediateFeatureTransformer:
    """A fitted copy of ``transformer`` with another pooling, sharing its backbone.

    The copy is what ``clone(transformer).set_params(target_size=...,
    pool_stride=...).fit(X)`` would give (same taps, same tap shapes), without
    building the backbone again or running a forward pass: the tap shapes
    seen at fit time decide the new pooling plans.

    Parameters
    ----------
    transformer : IntermediateFeatureTransformer
        Fitted, with ``normalization="l2"`` or ``None`` (a standardisation
        would need the training features of the new pooling: fit it instead).
    target_size : int, default=None
        The new target size; ``None`` keeps the transformer's.
    pool_stride : int, default=None
        The new pooling stride (overrides the target-size rule); ``None``
        uses the target-size rule.

    Returns
    -------
    IntermediateFeatureTransformer
        Fitted; its backbone module is the same object as ``transformer``'s.

    Examples
    --------
    >>> import numpy as np
    >>> from skh2t.features import IntermediateFeatureTransformer
    >>> from skh2t.features.joint import repool, transform_jointly
    >>> images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    >>> small = IntermediateFeatureTransformer(
    ...     backbone="test_resnet", weights=None, image_size=32, target_size=64
    ... ).fit(images)
    >>> large = repool(small, target_size=1024)
    >>> X_small, X_large = transform_jointly([small, large], images)  # one forward pass
    >>> X_small.shape, X_large.shape
    ((3, 1800), (3, 11496))
    >>> np.array_equal(X_large, large.transform(images))
    True
    """
    check_is_fitted(transformer)
    if transformer._fitted_normalization == "standard":
        raise ValueError(
            "repool cannot re-pool a transformer fitted with normalization='standard': its "
            "statistics depend on the pooling. Fit a clone with the new pooling instead."
        )
    target_size = transformer.target_size if target_size is None else target_size
    transformer._live_backbone()  # built now (e.g. after unpickling), so that both share it
    # A shallow copy that keeps the backbone module (copy.copy would drop it, as pickling does).
    copy_ = transformer.__class__.__new__(transformer.__class__)
    copy_.__dict__.update(transformer.__dict__)
    copy_.set_params(target_size=target_size, pool_stride=pool_stride)
    copy_.taps_ = _repooled_taps(transformer.taps_, target_size, pool_stride)
    cache = transformer._feature_cache
    if cache is not None:
        copy_._feature_cache = copy_._cache_for(
            cache.root, cache.setup["backbone"], cache.setup["precision"]
        )
    return copy_


def _repooled_taps(
    taps: Sequence[TapInfo], target_size: int, pool_stride: int | None
) -> list[TapInfo]:
    table, start = [], 0
    for tap in taps:
        plan = plan_pooling(
            tap.layout, tap.raw_shape, target_size=target_size, pool_stride=pool_stride
        )
        stop = start + plan.n_features
        table.append(TapInfo.from_plan(tap.ref, tap.raw_shape, plan, start, stop))
        start = stop
    return table


def transform_jointly(
    transformers: Sequence[IntermediateFeatureTransformer], X: Any
) -> list[np.ndarray]:
    """The features of ``X`` for every transformer, from one forward pass per image.

    The transformers must read the same taps of the same backbone with the
    same preprocessing and the same precision (as resolved on the device),
    and differ only in pooling (and normalisation), as those made by
    :func:`repool` do. The first one's backbone, device, ``batch_size``,
    ``n_jobs`` and ``verbose`` are used; every transformer reads and fills its
    own cache. Each output equals ``transformer.transform(X)``.

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
    _check_compatible(transformers)
    outputs = extract_jointly(transformers, as_images(X))
    for transformer, features in zip(transformers, outputs, strict=True):
        if transformer._fitted_normalization == "standard":
            transformer._standardize(features)
    return outputs


def _check_compatible(transformers: Sequence[IntermediateFeatureTransformer]) -> None:
    lead = transformers[0]
    refs = [tap.ref for tap in lead.taps_]
    model = lead._live_backbone()
    fingerprint = None
    for other in transformers[1:]:
        if [tap.ref for tap in other.taps_] != refs:
            raise ValueError("transform_jointly needs transformers that read the same taps.")
        if other.data_config_ != lead.data_config_:
            raise ValueError(
                "transform_jointly needs transformers with the same preprocessing "
                f"(image size and normalisation); got {lead.data_config_} and {other.data_config_}."
            )
        other_model = other._live_backbone()
        if other_model is model:
            continue
        fingerprint = fingerprint or weights_fingerprint(model)
        if type(other_model) is not type(model) or weights_fingerprint(other_model) != fingerprint:
            raise ValueError(
                "transform_jointly needs transformers with the same backbone and weights; "
                "make the others with skh2t.features.joint.repool(first, target_size=...)."
            )


def extract_jointly(
    transformers: Sequence[IntermediateFeatureTransformer], images: ImageArray | ImageList
) -> list[np.ndarray]:
    """Features of ``images`` for every transformer (before any standardisation).

    From each transformer's cache where it has them; the images missing from
    any cache go through the first transformer's backbone once, for all.
    """

    lead = transformers[0]
    n_images = len(images)
    runtime = resolve_runtime(lead.device, lead.precision, fallback_to_cpu=True)
    _check_precisions(transformers, runtime)
    outs = [np.empty((n_images, t.taps_[-1].stop), dtype=np.float32) for t in transformers]
    caches = [t._current_cache(runtime) for t in transformers]
    digests = images.digests() if any(c is not None for c in caches) else None
    missing = [
        np.arange(n_images) if cache is None else cache.read_into(digests, out)
        for cache, out in zip(caches, outs, strict=True)
    ]
    todo = np.unique(np.concatenate(missing))
    if todo.size == n_images:
        _compute(transformers, images, outs, runtime)
    elif todo.size:
        rows = [np.empty((todo.size, out.shape[1]), dtype=np.float32) for out in outs]
        _compute(transformers, images.take(todo), rows, runtime)
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
    transformers: Sequence[IntermediateFeatureTransformer],
    images: ImageArray | ImageList,
    outs: list[np.ndarray],
    runtime: Runtime,
) -> None:
    """Run the backbone over ``images`` into ``outs``: serially, or in chunks with joblib."""
    lead = transformers[0]
    n_batches = -(-len(images) // lead.batch_size)
    n_chunks = min(effective_n_jobs(lead.n_jobs), n_batches)
    if n_chunks <= 1:
        _forward(transformers, images, outs, runtime)
        return
    # Chunks of whole batches: every image meets the same batch as in serial extraction.
    groups = np.array_split(np.arange(n_batches) * lead.batch_size, n_chunks)
    bounds = [(group[0], min(group[-1] + lead.batch_size, len(images))) for group in groups]
    workers = []
    for transformer in transformers:
        worker = copy.copy(transformer)
        worker.verbose, worker.n_jobs, worker._feature_cache = 0, 1, None
        workers.append(worker)
    payload = pickle.dumps(workers)  # each task builds one backbone from the first
    chunks = Parallel(n_jobs=lead.n_jobs)(
        delayed(_forward_chunk)(payload, images.take(np.arange(start, stop)))
        for start, stop in bounds
    )
    for (start, stop), rows in zip(bounds, chunks, strict=True):
        for out, part in zip(outs, rows, strict=True):
            out[start:stop] = part


def _forward(
    transformers: Sequence[IntermediateFeatureTransformer],
    images: ImageArray | ImageList,
    outs: list[np.ndarray],
    runtime: Runtime,
) -> None:
    lead = transformers[0]
    device = runtime.device
    model = lead._live_backbone().to(device)
    preprocess = Preprocessor.from_data_config(lead.data_config_)
    dtype = parameter_dtype(model)
    starts = range(0, len(images), lead.batch_size)
    batches = (
        preprocess(images.batch(start, start + lead.batch_size), device=device, dtype=dtype)
        for start in starts
    )
    if lead.verbose and len(starts) > 1:
        batches = progress_bar(batches, total=len(starts), desc="Extracting features", unit="batch")
    outputs = [
        PooledOutput(
            [tap.plan for tap in t.taps_],
            [tap.columns for tap in t.taps_],
            out,
            t._fitted_normalization == "l2",
        )
        for t, out in zip(transformers, outs, strict=True)
    ]
    extract_pooled(model, [tap.ref for tap in lead.taps_], outputs, batches, runtime=runtime)


def _forward_chunk(payload: bytes, images: ImageArray | ImageList) -> list[np.ndarray]:
    """One chunk of a parallel extraction, in a joblib worker."""

    workers = pickle.loads(payload)  # made by _compute in this session, never read from disk
    outs = [np.empty((len(images), w.taps_[-1].stop), dtype=np.float32) for w in workers]
    lead = workers[0]
    _forward(
        workers, images, outs, resolve_runtime(lead.device, lead.precision, fallback_to_cpu=True)
    )
    return outs
