"""How much does reading all default Head2Toe taps cost on top of a bare forward pass?

For each backbone, on one batch of images at 224 px on the CPU, this script
times (median of several repeats, after warm-up, interleaved so that both see
the same machine state):

- the bare forward pass: ``model(batch)`` under ``torch.inference_mode()``;
- the extraction: the same forward pass with all default taps hooked, pooled
  (``target_size`` rule), L2-normalised and written into the output matrix;
- for information, the full ``transform`` call on uint8 images, which adds
  input conversion and normalisation.

The target is an extraction/bare ratio of at most 1.15. Run it as::

    python benchmarks/bench_extraction.py [--batch-size 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.extraction import extract_features
from skh2t.features.preprocessing import Preprocessor

#: (label, backbone name, weights): Lite0 with its offline ImageNet weights, ResNet-50 random.
BACKBONES = (
    ("EfficientNet-Lite0", "tf_efficientnet_lite0", "auto"),
    ("ResNet-50", "resnet50", None),
)


def median_seconds(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function, alternating between them every repeat."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def benchmark(label: str, backbone: str, weights: str | None, args: argparse.Namespace) -> None:
    """Time one backbone and print the bare, extraction and transform times and the ratio."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 224, 224, 3), dtype=np.uint8)
    transformer = IntermediateFeatureTransformer(
        backbone=backbone,
        weights=weights,
        image_size=224,
        target_size=args.target_size,
        batch_size=args.batch_size,
    ).fit(images[:1])
    model = transformer.backbone_.eval()
    batch = Preprocessor.from_data_config(transformer.data_config_)(
        torch.from_numpy(images).permute(0, 3, 1, 2)
    )
    taps = transformer.taps_
    out = np.empty((args.batch_size, taps[-1].stop), dtype=np.float32)

    def bare() -> None:
        with torch.inference_mode():
            model(batch)

    def extraction() -> None:
        extract_features(
            model,
            [tap.ref for tap in taps],
            [tap.plan for tap in taps],
            [tap.columns for tap in taps],
            [batch],
            out,
        )

    def transform() -> None:
        transformer.transform(images)

    functions = {"bare": bare, "extraction": extraction, "transform": transform}
    median_seconds(functions, repeats=args.warmup)
    seconds = median_seconds(functions, repeats=args.repeats)
    ratio = seconds["extraction"] / seconds["bare"]
    print(
        f"{label:<20} taps={len(taps):>3}  features={taps[-1].stop:>7}  "
        f"bare={seconds['bare'] * 1e3:8.1f} ms  extraction={seconds['extraction'] * 1e3:8.1f} ms  "
        f"ratio={ratio:.3f}  (transform from uint8: {seconds['transform'] * 1e3:.1f} ms, "
        f"ratio {seconds['transform'] / seconds['bare']:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--target-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} "
        f"at 224 px, target_size {args.target_size}, median of {args.repeats} repeats"
    )
    for label, backbone, weights in BACKBONES:
        benchmark(label, backbone, weights, args)


if __name__ == "__main__":
    main()
