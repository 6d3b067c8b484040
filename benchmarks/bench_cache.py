"""A Head2Toe grid search with and without the feature cache, measured in one run.

Problem: EfficientNet-Lite0 with its offline ImageNet weights on a stratified
subset of Fashion-MNIST (300 training images by default) at the command line's
default image size (64 px), and ``GridSearchCV`` over a ``Pipeline`` of
``IntermediateFeatureTransformer`` and ``GroupLassoClassifier(keep_fraction=0.2)``:
5 folds, 3 target sizes (512, 1024, 2048) x 3 alphas (0.03, 0.1 and 0.3 x
``alpha_max`` of the features at target size 1024). Three searches on the same
folds and grid, one after the other:

- **uncached**: every fit and every score runs the backbone;
- **cached, cold**: ``cache=`` an empty directory;
- **cached, warm**: the same directory again (a second session).

For each, the script prints the wall time, the part of it spent in the feature
transformer (fit, transform and reading the cache), the number of images that
went through the backbone, and the choice of parameters; then the ratios to the
uncached search, and the disk used by the cache. Everything runs in this
process (``n_jobs=1``), NumPy's BLAS and every other BLAS with one thread, as
the command line does, and PyTorch with ``--torch-threads`` threads (1 by
default: on 2 cores shared with one other busy process, Lite0 took 46 ms per
image with 2 threads against 1.6 ms with 1).

Run: ``python benchmarks/bench_cache.py [--n-images 300] [--image-size 64]
[--torch-threads 1]`` (about 3 minutes with the defaults on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from timm.models.efficientnet import EfficientNet

from skh2t import GroupLassoClassifier
from skh2t.datasets import load_fashion_mnist, stratified_subsample
from skh2t.features import IntermediateFeatureTransformer
from skh2t.threads import blas_threads

TARGET_SIZES = [512, 1024, 2048]
ALPHA_FRACTIONS = [0.03, 0.1, 0.3]
KEEP_FRACTION = 0.2
N_FOLDS = 5

#: Seconds spent in the feature transformer, accumulated by TimedFeatures (n_jobs=1 only).
FEATURE_SECONDS = [0.0]


class TimedFeatures(IntermediateFeatureTransformer):
    """The transformer, timing its fit, fit_transform and transform (it survives cloning)."""

    def fit(self, X, y=None):
        with _timed_features():
            return super().fit(X, y)

    def fit_transform(self, X, y=None):
        with _timed_features():
            return super().fit_transform(X, y)

    def transform(self, X):
        with _timed_features():
            return super().transform(X)


@contextmanager
def _timed_features():
    start = time.perf_counter()
    try:
        yield
    finally:
        FEATURE_SECONDS[0] += time.perf_counter() - start


@contextmanager
def forwarded_images():
    """Count the images that go through an EfficientNet in this process."""
    counts = []

    def count(module, args):
        if isinstance(module, EfficientNet):
            counts.append(args[0].shape[0])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        yield counts
    finally:
        handle.remove()


@dataclass
class Result:
    label: str
    seconds: float
    feature_seconds: float
    images_forwarded: int
    best_params: dict
    mean_test_score: np.ndarray


def search(label, X, y, grid, folds, args, cache=None) -> Result:
    features = TimedFeatures(image_size=args.image_size, batch_size=64, cache=cache)
    pipeline = Pipeline(
        [("features", features), ("clf", GroupLassoClassifier(keep_fraction=KEEP_FRACTION))]
    )
    FEATURE_SECONDS[0] = 0.0
    start = time.perf_counter()
    with forwarded_images() as counts, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = GridSearchCV(pipeline, grid, cv=folds).fit(X, y)
    seconds = time.perf_counter() - start
    result = Result(
        label,
        seconds,
        FEATURE_SECONDS[0],
        sum(counts),
        fitted.best_params_,
        fitted.cv_results_["mean_test_score"],
    )
    best = ", ".join(
        f"{key.split('__')[1]}={value:.4g}" for key, value in result.best_params.items()
    )
    print(
        f"  {label:<15} {seconds:8.1f} s   features {result.feature_seconds:7.1f} s   "
        f"images forwarded {result.images_forwarded:6d}   best: {best}",
        flush=True,
    )
    return result


def directory_bytes(path: Path) -> tuple[int, int]:
    files = [file for file in path.rglob("*") if file.is_file()]
    return len(files), sum(file.stat().st_size for file in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    train = load_fashion_mnist(subset="train")
    index = stratified_subsample(train.target, n_samples=args.n_images, random_state=0)
    X, y = train.images[index], train.target[index]
    folds = list(StratifiedKFold(N_FOLDS, shuffle=True, random_state=0).split(X, y))
    reference = IntermediateFeatureTransformer(image_size=args.image_size, target_size=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alpha_max = GroupLassoClassifier().alpha_max(reference.fit_transform(X), y)
    grid = {
        "features__target_size": TARGET_SIZES,
        "clf__alpha": [fraction * alpha_max for fraction in ALPHA_FRACTIONS],
    }
    raw_values = sum(math.prod(tap.raw_shape) for tap in reference.taps_)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
        f"Lite0 at {args.image_size} px, {len(X)} Fashion-MNIST images, {N_FOLDS} folds x "
        f"target sizes {TARGET_SIZES} x alphas {ALPHA_FRACTIONS} x alpha_max "
        f"({alpha_max:.4g}), keep_fraction {KEEP_FRACTION}"
    )
    print(
        f"  raw activations of the {len(reference.taps_)} taps: {4 * raw_values / 1e6:.2f} MB "
        f"per image; pooled at T=1024: {4 * reference.taps_[-1].stop / 1e6:.3f} MB",
        flush=True,
    )
    with blas_threads(1), tempfile.TemporaryDirectory(prefix="skh2t-cache-") as directory:
        uncached = search("uncached", X, y, grid, folds, args)
        cold = search("cached, cold", X, y, grid, folds, args, cache=directory)
        warm = search("cached, warm", X, y, grid, folds, args, cache=directory)
        n_files, n_bytes = directory_bytes(Path(directory))
    for result in (cold, warm):
        print(
            f"  uncached / {result.label}: {uncached.seconds / result.seconds:5.1f}x overall, "
            f"{uncached.feature_seconds / result.feature_seconds:6.1f}x in the features, "
            f"{uncached.images_forwarded / max(1, result.images_forwarded):6.1f}x fewer images "
            "forwarded"
        )
    same = all(result.best_params == uncached.best_params for result in (cold, warm))
    scores = max(
        np.max(np.abs(result.mean_test_score - uncached.mean_test_score)) for result in (cold, warm)
    )
    print(
        f"  same choice in all three: {same}; largest difference of a mean CV score: {scores:.4g}"
    )
    print(
        f"  cache on disk: {n_bytes / 1e6:.1f} MB in {n_files} files "
        f"({n_bytes / 1e3 / len(X):.0f} kB per image for {len(TARGET_SIZES)} target sizes)"
    )


if __name__ == "__main__":
    main()
