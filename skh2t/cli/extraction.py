"""Tap tables for the command line's JSON files."""

from __future__ import annotations

from typing import Any

from skh2t.features import IntermediateFeatureTransformer


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
