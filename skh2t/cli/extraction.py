"""Extracting features for the command line: test sets in chunks, tap tables."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.joint import transform_jointly
from skh2t.progress import progress_bar

TEST_CHUNK = 500  # test images per transform call: bounds memory for wide features


def iter_joint_feature_chunks(
    transformers: list[IntermediateFeatureTransformer],
    images: Any,
    *,
    chunk_size: int = TEST_CHUNK,
    desc: str = "Extracting",
    progress: bool = True,
) -> Iterator[tuple[slice, list[np.ndarray]]]:
    """Features of ``images`` for several poolings, ``chunk_size`` images at a time.

    One forward pass per image for all transformers
    (:func:`skh2t.features.joint.transform_jointly`), one progress bar.

    Parameters
    ----------
    transformers : list of IntermediateFeatureTransformer
        Fitted, sharing a backbone (see :func:`~skh2t.features.joint.repool`).
    images : ndarray or list
        Images accepted by the transformers.
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
    features : list of ndarray of shape (n_chunk, n_features), float32
        One per transformer.
    """
    n_images = len(images)
    with progress_bar(total=n_images, desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, n_images, chunk_size):
            rows = slice(start, min(start + chunk_size, n_images))
            features = transform_jointly(transformers, images[rows])
            bar.update(rows.stop - rows.start)
            yield rows, features


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
