"""The official re-normalised refit against the refit on the full-tap-normalised columns.

Both refits read the same kept features of the same penalised fit; they
differ only in the refit's input (docs/user_guide/method.rst, "The official
refit"): the official one divides each tap's kept columns by their own L2
norm per example (``GroupLassoClassifier(renormalize_groups=taps)``), the
other reads them as the transformer normalised them (over the whole tap).

Problem: EfficientNet-Lite0 with its offline ImageNet weights at 64 px,
target size 1024 (50,664 features), Fashion-MNIST: ``--seeds`` stratified
draws of 1000 training images (seeds 0, 1, 2 by default), all 10,000 test
images; alpha fractions 0.03 and 0.01 x keep fractions 0.02, 0.05, 0.1, 0.2.
For every setting, the test accuracy of both refits on every draw, the
difference (official minus plain) averaged over the draws with its standard
error, and over all settings and draws.

Run: ``python benchmarks/bench_refit.py [--seeds 0 1 2]`` (about 5 minutes on
2 CPU cores).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from skh2t import GroupLassoClassifier
from skh2t.datasets import load_fashion_mnist, stratified_subsample
from skh2t.features import IntermediateFeatureTransformer
from skh2t.threads import blas_threads

ALPHA_FRACTIONS = [0.03, 0.01]
KEEP_FRACTIONS = [0.02, 0.05, 0.1, 0.2]


def accuracies(X, y, X_test, y_test, groups) -> np.ndarray:
    """Test accuracy of (plain, official) for every (alpha fraction, keep fraction)."""
    result = np.zeros((len(ALPHA_FRACTIONS), len(KEEP_FRACTIONS), 2))
    for i, fraction in enumerate(ALPHA_FRACTIONS):
        for j, keep in enumerate(KEEP_FRACTIONS):
            for k, renormalize in enumerate([None, groups]):
                clf = GroupLassoClassifier(
                    alpha_fraction=fraction, keep_fraction=keep, renormalize_groups=renormalize
                )
                clf.fit(X, y)
                result[i, j, k] = clf.score(X_test, y_test)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=1000)
    args = parser.parse_args()
    train, test = load_fashion_mnist(subset="train"), load_fashion_mnist(subset="test")
    features = IntermediateFeatureTransformer(image_size=64, target_size=1024)
    start = time.perf_counter()
    X_test = features.fit_transform(test.images)
    groups = features.feature_groups_
    print(
        f"Lite0 at 64 px, target size 1024 ({X_test.shape[1]} features), {args.n_train} "
        f"training images per draw, seeds {args.seeds}, {len(test.target)} test images "
        f"(extracted in {time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    per_seed = []
    with blas_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in args.seeds:
            index = stratified_subsample(train.target, n_samples=args.n_train, random_state=seed)
            X = features.transform(train.images[index])
            per_seed.append(accuracies(X, train.target[index], X_test, test.target, groups))
            print(f"  seed {seed} done", flush=True)
    scores = np.stack(per_seed)  # (seeds, alphas, keeps, 2)
    difference = scores[..., 1] - scores[..., 0]
    n = len(args.seeds)
    print(
        f"{'alpha fraction':>14} {'keep':>5}   {'plain':>14}   {'official':>14}   official - plain"
    )
    for i, fraction in enumerate(ALPHA_FRACTIONS):
        for j, keep in enumerate(KEEP_FRACTIONS):
            plain, official, diff = scores[:, i, j, 0], scores[:, i, j, 1], difference[:, i, j]
            print(
                f"{fraction:>14g} {keep:>5g}   {plain.mean():.4f} ± {_se(plain):.4f}   "
                f"{official.mean():.4f} ± {_se(official):.4f}   "
                f"{100 * diff.mean():+.2f} ± {100 * _se(diff):.2f} points"
            )
    settings = difference.mean(axis=0)
    print(
        f"over all settings: official - plain = {100 * difference.mean():+.2f} points (standard "
        f"error over the {n} draws {100 * _se(difference.mean(axis=(1, 2))):.2f}); official at "
        f"or above plain in {int(np.sum(settings >= 0))} of {settings.size} settings (mean over "
        f"draws); best {100 * settings.max():+.2f}, worst {100 * settings.min():+.2f} points"
    )


def _se(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


if __name__ == "__main__":
    main()
