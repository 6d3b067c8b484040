"""Head2ToeClassifier against GridSearchCV over a Pipeline, and its bounded-memory prediction.

Two measurements, in one run:

1. **The protocol** (Fashion-MNIST, EfficientNet-Lite0 with its offline
   ImageNet weights at 64 px, ``--n-train`` images, 3 stratified folds,
   target sizes 512, 1024, 2048 x alpha fractions 0.1, 0.03 x keep fractions
   0.05, 0.2, the official refit): ``Head2ToeClassifier`` against
   ``GridSearchCV`` over ``Pipeline([IntermediateFeatureTransformer,
   GroupLassoClassifier(alpha_fraction=..., renormalize_groups=
   "feature_name_prefix")])`` on the same folds and grid. Printed: the images
   that went through the backbone (counted by a forward pre-hook), wall
   times and their ratio, both choices and the largest difference of a fold
   score.
2. **Prediction** with the transformer's defaults (224 px, target size 8192:
   406,056 features): a ``Head2ToeClassifier`` fitted on ``--n-fit`` training
   images (one alpha fraction 0.03 and keep fraction 0.1, 2 folds) is saved;
   fresh processes then load it and predict the ``--n-test`` test images
   with ``Head2ToeClassifier.predict``, and ``--n-pipeline`` of them with its
   ``best_estimator_`` (the ``Pipeline``, which builds the whole feature
   matrix first: 1.6 MB per image, 16 GB for 10,000, more than the 24 GB
   machine can hold with the transform's temporaries). Printed: wall time,
   images per second and the peak resident memory of each process during its
   prediction (``VmHWM``, reset after loading the model), and the ratios.

Everything runs with PyTorch on ``--torch-threads`` threads (2 by default) and
BLAS on one thread, ``n_jobs=1``.

Run: ``python benchmarks/bench_head2toe.py [--n-train 300] [--n-fit 1000]
[--n-test 10000] [--n-pipeline 1000]`` (about 20 minutes on 2 CPU cores with
the defaults; ``--quick`` for a small check).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
import torch
from bench_cache import forwarded_images  # this folder: the same image counter
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline

from skh2t import GroupLassoClassifier, Head2ToeClassifier
from skh2t.datasets import load_fashion_mnist, stratified_subsample
from skh2t.features import IntermediateFeatureTransformer
from skh2t.threads import blas_threads

TARGET_SIZES = [512, 1024, 2048]
ALPHA_FRACTIONS = [0.1, 0.03]
KEEP_FRACTIONS = [0.05, 0.2]
N_FOLDS = 3


def protocol(n_train: int) -> None:
    train = load_fashion_mnist(subset="train")
    index = stratified_subsample(train.target, n_samples=n_train, random_state=0)
    X, y = train.images[index], train.target[index]
    folds = list(StratifiedKFold(N_FOLDS, shuffle=True, random_state=0).split(X, y))
    print(
        f"1. Protocol: Lite0 at 64 px, {n_train} Fashion-MNIST images, {N_FOLDS} folds x "
        f"target sizes {TARGET_SIZES} x alpha fractions {ALPHA_FRACTIONS} x keep fractions "
        f"{KEEP_FRACTIONS}",
        flush=True,
    )
    estimator = Head2ToeClassifier(
        image_size=64,
        target_sizes=TARGET_SIZES,
        alpha_fractions=ALPHA_FRACTIONS,
        keep_fractions=KEEP_FRACTIONS,
        cv=folds,
    )
    start = time.perf_counter()
    with forwarded_images() as counts, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(X, y)
    ours = time.perf_counter() - start, sum(counts)
    pipeline = Pipeline(
        [
            (
                "features",
                IntermediateFeatureTransformer(image_size=64).set_output(transform="pandas"),
            ),
            ("head", GroupLassoClassifier(renormalize_groups="feature_name_prefix")),
        ]
    )
    grid = {
        "features__target_size": TARGET_SIZES,
        "head__alpha_fraction": ALPHA_FRACTIONS,
        "head__keep_fraction": KEEP_FRACTIONS,
    }
    start = time.perf_counter()
    with forwarded_images() as counts, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search = GridSearchCV(pipeline, grid, cv=folds).fit(X, y)
    theirs = time.perf_counter() - start, sum(counts)
    print(
        f"  Head2ToeClassifier  {ours[0]:7.1f} s   images forwarded {ours[1]:6d}   "
        f"best: {estimator.best_params_}"
    )
    print(
        f"  GridSearchCV        {theirs[0]:7.1f} s   images forwarded {theirs[1]:6d}   "
        f"best: { {k.split('__')[1]: v for k, v in search.best_params_.items()} }"
    )
    # Both list the grid as (target size, alpha fraction, keep fraction), the last fastest.
    difference = max(
        np.max(np.abs(estimator.cv_results_[key] - search.cv_results_[key]))
        for key in (f"split{k}_test_score" for k in range(N_FOLDS))
    )
    print(
        f"  GridSearchCV / Head2ToeClassifier: {theirs[0] / ours[0]:.1f}x the time, "
        f"{theirs[1] / ours[1]:.0f}x the images forwarded ({ours[1]} = {n_train} images + "
        f"{ours[1] - n_train} for the shape probe); largest fold-score difference "
        f"{difference:.4g} (ties are broken in another order)",
        flush=True,
    )


def prediction(args: argparse.Namespace, directory: str) -> None:
    train = load_fashion_mnist(subset="train")
    index = stratified_subsample(train.target, n_samples=args.n_fit, random_state=0)
    model = Head2ToeClassifier(
        target_sizes=[8192], alpha_fractions=[0.03], keep_fractions=[0.1], cv=2, random_state=0
    )
    print(
        f"\n2. Prediction: Lite0 at 224 px, target size 8192, fitted on {args.n_fit} images",
        flush=True,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train.images[index], train.target[index])
    n_features = model.transformer_.taps_[-1].stop
    path = os.path.join(directory, "head2toe.joblib")
    joblib.dump(model, path)
    print(
        f"  fit {time.perf_counter() - start:.1f} s; {n_features} features, "
        f"{int(model.get_support().sum())} kept; joblib file {os.path.getsize(path) / 1e6:.1f} MB"
    )
    runs = [
        ("Head2ToeClassifier.predict", "estimator", args.n_test),
        ("Head2ToeClassifier.predict", "estimator", args.n_pipeline),
        ("Pipeline.predict", "pipeline", args.n_pipeline),
    ]
    measured = {}
    for label, mode, n in runs:
        result = json.loads(
            subprocess.run(
                [sys.executable, __file__, "--child", path, mode, str(n), str(args.torch_threads)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()[-1]
        )
        measured[(mode, n)] = result
        print(
            f"  {label:<28} {n:6d} images  {result['seconds']:7.1f} s  "
            f"{n / result['seconds']:6.1f} img/s  peak {result['peak_mb']:7.0f} MB "
            f"(after loading the model: {result['loaded_mb']:.0f} MB)",
            flush=True,
        )
    ours, theirs = measured[("estimator", args.n_pipeline)], measured[("pipeline", args.n_pipeline)]
    full = measured[("estimator", args.n_test)]
    matrix_gb = 4 * n_features * args.n_test / 1e9
    memory, seconds = theirs["peak_mb"] / ours["peak_mb"], theirs["seconds"] / ours["seconds"]
    print(
        f"  at {args.n_pipeline} images: Pipeline / Head2ToeClassifier peak memory "
        f"{memory:.1f}x, time {seconds:.2f}x; "
        f"Head2ToeClassifier's peak at {args.n_test} images is "
        f"{full['peak_mb'] / ours['peak_mb']:.2f}x its peak at {args.n_pipeline}; the Pipeline's "
        f"feature matrix alone would be {matrix_gb:.1f} GB at {args.n_test}"
    )
    agree = measured[("estimator", args.n_pipeline)]["predictions"] == theirs["predictions"]
    print(f"  identical predictions on the {args.n_pipeline} images: {agree}")


def child(path: str, mode: str, n: int, torch_threads: int) -> None:
    """Load the model in a fresh process, predict n test images, print time and peak memory.

    The peak is the process's resident high-water mark (``VmHWM``), reset after
    loading, so it is that of the prediction: a forked child's ``ru_maxrss``
    would start at its parent's size.
    """
    torch.set_num_threads(torch_threads)
    test = load_fashion_mnist(subset="test")
    images = test.images[:n]
    model = joblib.load(path)
    predictor = model if mode == "estimator" else model.best_estimator_
    predictor.predict(images[:1])  # builds the backbone
    loaded = memory_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = time.perf_counter()
    with blas_threads(1):
        predicted = predictor.predict(images)
    seconds = time.perf_counter() - start
    checksum = int(np.sum(predicted.astype(np.int64) * np.arange(1, n + 1)))
    print(json.dumps({"seconds": seconds, "peak_mb": memory_mb("VmHWM"), "loaded_mb": loaded,
                      "predictions": checksum}))  # fmt: skip


def memory_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}: this benchmark needs Linux.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-fit", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--n-pipeline", type=int, default=1000)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100 / 200 / 400 / 100 images")
    parser.add_argument(
        "--parts", type=int, nargs="+", default=[1, 2], help="which measurements (1, 2)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, mode, n, threads = args.child
        child(path, mode, int(n), int(threads))
        return
    if args.quick:
        args.n_train, args.n_fit, args.n_test, args.n_pipeline = 100, 200, 400, 100
    torch.set_num_threads(args.torch_threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    if 1 in args.parts:
        with blas_threads(1):
            protocol(args.n_train)
    if 2 in args.parts:
        with tempfile.TemporaryDirectory(prefix="skh2t-bench-") as directory:
            prediction(args, directory)


if __name__ == "__main__":
    main()
