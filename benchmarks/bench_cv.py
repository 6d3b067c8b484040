"""GroupLassoClassifierCV against GridSearchCV(GroupLassoClassifier) over the same grid, one run.

Problem: the synthetic sparse multinomial problem of bench_solver.py at
d = 5,000 (n = 1000, k = 10), 5 folds, three grids:

* the default 8 alphas without keep fractions: the warm path against cold
  solves, and nothing else;
* 6 alphas (geometric from alpha_max down to 0.01 * alpha_max) x 3 keep
  fractions (0.01, 0.05, 0.2);
* the Head2Toe protocol's keep fractions (0.01, 0.02, 0.05, 0.1, 0.2) with
  GroupLassoClassifierCV's default 8 alphas.

and real Head2Toe features: EfficientNet-Lite0 (offline ImageNet weights) at
64 px on 1000 Fashion-MNIST training images (class-balanced), target size 1024
(50,664 float32 features), with ``skh2t run``'s grid, alphas 0.1, 0.03 and 0.01
x alpha_max and keep fractions 0.02, 0.05, 0.1, 0.2. The features are
extracted first (``--no-real`` skips this grid, which needs Debian's
dataset-fashion-mnist).

The single fit of the real features at 0.01 alpha_max (one fold's 800
training rows) is timed too (best of 3).

For each grid, both search the same folds and grid with default settings and
n_jobs; the script checks that they choose the same pair, compares their
per-fold scores, and prints the time ratio.

Run: ``python benchmarks/bench_cv.py [--no-real]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold

sys.path.insert(0, os.path.dirname(__file__))
from _synthetic import make_sparse_multinomial

from skh2t import GroupLassoClassifier, GroupLassoClassifierCV

GRIDS = {  # name: (alphas of GroupLassoClassifierCV, keep fractions)
    "8 alphas, no keep fractions (the path alone)": (8, None),
    "6 alphas x 3 keep fractions": (6, [0.01, 0.05, 0.2]),
    "Head2Toe grid, default 8 alphas x 5 keep fractions": (8, [0.01, 0.02, 0.05, 0.1, 0.2]),
}

REAL_ALPHA_FRACTIONS = [0.1, 0.03, 0.01]  # x alpha_max: skh2t run's defaults
REAL_KEEP_FRACTIONS = [0.02, 0.05, 0.1, 0.2]


def timed(function):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = function()
    return result, time.perf_counter() - start


def grid_scores(search, n_folds, shape):
    """GridSearchCV's per-fold test scores as (folds, alphas, keep fractions)."""
    splits = [search.cv_results_[f"split{k}_test_score"] for k in range(n_folds)]
    return np.stack(splits).reshape(n_folds, *shape)


def compare(X, y, folds, alphas, keep_fractions) -> None:
    path, path_seconds = timed(
        lambda: GroupLassoClassifierCV(alphas=alphas, keep_fractions=keep_fractions, cv=folds).fit(
            X, y
        )
    )
    grid = {"alpha": list(path.alphas_), "keep_fraction": keep_fractions or [None]}
    search, grid_seconds = timed(
        lambda: GridSearchCV(GroupLassoClassifier(), grid, cv=folds).fit(X, y)
    )
    best = (search.best_params_["alpha"], search.best_params_["keep_fraction"])
    same = (path.alpha_, path.keep_fraction_) == best
    difference = np.abs(path.scores_ - grid_scores(search, len(folds), path.mean_scores_.shape))
    print(f"  GridSearchCV(GroupLassoClassifier): {grid_seconds:7.2f} s, best alpha ", end="")
    print(f"{best[0]:.4g}, keep_fraction {best[1]}")
    print(f"  GroupLassoClassifierCV (warm path): {path_seconds:7.2f} s, best alpha ", end="")
    print(f"{path.alpha_:.4g}, keep_fraction {path.keep_fraction_}")
    print(
        f"  largest difference of a fold's score: {difference.max():.3f}, of a mean score: "
        f"{difference.mean(axis=0).max():.3f} (warm and cold solves agree within tol)"
    )
    print(f"  same choice: {same}; ratio GridSearchCV / path: {grid_seconds / path_seconds:.1f}x")


def single_fit(X: np.ndarray, y: np.ndarray, repeats: int = 3) -> None:
    alpha = 0.01 * GroupLassoClassifier().alpha_max(X, y)
    seconds = []
    for _ in range(repeats):
        clf, elapsed = timed(lambda: GroupLassoClassifier(alpha=alpha).fit(X, y))
        seconds.append(elapsed)
    print(
        f"single fit, {X.shape[0]} x {X.shape[1]}, 0.01 alpha_max: best {min(seconds):.2f} s, "
        f"median {np.median(seconds):.2f} s, {clf.n_iter_[0]} iterations, "
        f"{np.count_nonzero(clf.feature_scores_)} active features"
    )


def head2toe_features() -> tuple[np.ndarray, np.ndarray]:
    """Lite0 features (64 px, T=1024) of 1000 class-balanced Fashion-MNIST training images."""
    from skh2t.datasets import load_fashion_mnist, stratified_subsample
    from skh2t.features import IntermediateFeatureTransformer

    train = load_fashion_mnist(subset="train")
    index = stratified_subsample(train.target, n_samples=1000, random_state=0)
    transformer = IntermediateFeatureTransformer(image_size=64, target_size=1024)
    return transformer.fit_transform(train.images[index]), train.target[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-real", action="store_true", help="skip the Head2Toe features")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    X, y = make_sparse_multinomial(n_features=5_000)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    for name, (alphas, keep_fractions) in GRIDS.items():
        print(f"n=1000, d=5000, k=10, 5 folds, {name}")
        compare(X, y, folds, alphas, keep_fractions)
    if not args.no_real:
        X, y = head2toe_features()
        folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
        alphas = GroupLassoClassifier().alpha_max(X, y) * np.array(REAL_ALPHA_FRACTIONS)
        print(
            f"Head2Toe features, Lite0 64 px, n=1000, d={X.shape[1]} {X.dtype}, 5 folds, "
            f"{len(alphas)} alphas x {len(REAL_KEEP_FRACTIONS)} keep fractions (skh2t run's grid)"
        )
        compare(X, y, folds, alphas, REAL_KEEP_FRACTIONS)
        single_fit(X[folds[0][0]], y[folds[0][0]])
    print(f"load average after the run {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
