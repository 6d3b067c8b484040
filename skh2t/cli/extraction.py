"""Extracting features for the command line: whole training sets, test sets in chunks, taps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from skh2t.features import IntermediateFeatureTransformer

TEST_CHUNK = 500  # test images per transform call: bounds memory for wide features


def iter_feature_chunks(
    transformer: IntermediateFeatureTransformer,
    images: Any,
    *,
    chunk_size: int = TEST_CHUNK,
    desc: str = "Extracting",
    progress: bool = True,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Features of ``images``, ``chunk_size`` images at a time, with one progress bar.

    Parameters
    ----------
    transformer : IntermediateFeatureTransformer
        A fitted transformer.
    images : ndarray or list
        Images accepted by the transformer.
    chunk_size : int, default=TEST_CHUNK
        Images per chunk.
    desc : str, default="Extracting"
        Progress bar label.
    progress : bool, default=True
        Show the progress bar (in images).

    Yields
    ------
    rows : slice
        Positions of the chunk's images in ``images``.
    features : ndarray of shape (n_chunk, n_features), float32
    """
    n_images = len(images)
    with tqdm(total=n_images, desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, n_images, chunk_size):
            rows = slice(start, min(start + chunk_size, n_images))
            features = transformer.transform(images[rows])
            bar.update(rows.stop - rows.start)
            yield rows, features


def last_layer_tap(transformer: IntermediateFeatureTransformer) -> int:
    """Index in ``taps_`` of the linear-probe tap: the input of the backbone's classifier.

    That is the pre-logits vector (``classifier:input`` for EfficientNets,
    ``fc:input`` for ResNets, ``head:input`` for ViTs). Without such a tap,
    the last tap that is not the model's output.

    Parameters
    ----------
    transformer : IntermediateFeatureTransformer
        A fitted transformer.

    Returns
    -------
    int
    """
    taps = transformer.taps_
    head = _classifier_name(transformer.backbone_)
    if head is not None:
        for index, tap in enumerate(taps):
            if tap.module == head and tap.hook == "input":
                return index
    outputs = {head, ""} if head is not None else {""}
    candidates = [i for i, tap in enumerate(taps) if tap.module not in outputs]
    return candidates[-1] if candidates else len(taps) - 1


def _classifier_name(model: Any) -> str | None:
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        return None
    classifier = get_classifier()
    for name, module in model.named_modules():
        if module is classifier and name:
            return name
    return None


def tap_columns(transformer: IntermediateFeatureTransformer, tap_index: int) -> np.ndarray:
    """Column indices of one tap in the feature matrix."""
    tap = transformer.taps_[tap_index]
    return np.arange(tap.start, tap.stop)


def tap_table(transformer: IntermediateFeatureTransformer) -> list[dict[str, Any]]:
    """The taps as JSON-ready rows: name, raw and pooled shape, columns."""
    return [
        {
            "name": tap.name,
            "raw_shape": list(tap.raw_shape),
            "pooled_shape": list(tap.pooled_shape),
            "start": tap.start,
            "stop": tap.stop,
            "n_features": tap.n_features,
        }
        for tap in transformer.taps_
    ]
