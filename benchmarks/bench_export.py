"""Serving a fitted Head2Toe model: its own predict, the compact torch module, onnxruntime.

A ``Head2ToeClassifier`` with the transformer's defaults (EfficientNet-Lite0
with its offline ImageNet weights at 224 px, target size 8192: 406,056
features) is fitted on ``--n-fit`` Fashion-MNIST training images (alpha
fraction 0.03, keep fraction 0.1, 2 folds, the official refit) and saved with
joblib; :func:`skh2t.export.export_model` writes it as ONNX, TorchScript and
torch.export files (each checked against the module on its writing). Fresh
processes then load one of them and predict the first ``--n-test`` test
images, 64 at a time, resizing included:

- ``model``: ``Head2ToeClassifier.predict`` (the baseline);
- ``module``: :func:`skh2t.export.compact_module`'s ``predict``;
- ``torchscript``: the ``.pt`` file through ``torch.jit.load``;
- ``onnx``: the ``.onnx`` file in onnxruntime (CPU provider, through
  :func:`skh2t.export.load_exported`); batches made by
  :func:`skh2t.export.prepare_images`.

Part 1, printed per process: wall time, images per second, the peak resident
memory during the prediction (``VmHWM``, reset after loading) and the memory
after loading; the ratios to the baseline; whether the predictions are
identical; the file sizes and export times.

Part 2, speed only, all four in one process: ``--rounds`` rounds, each
predicting the first ``--n-round`` test images with every form in turn, so
that all of them see the same machine (processes run minutes apart do not:
on the shared build machine their speeds drift by 10-20 %); printed: the
median images per second of each form and its ratio to the model's.

PyTorch and onnxruntime run on ``--threads`` threads (2 by default), BLAS on one.

Run: ``python benchmarks/bench_export.py [--n-fit 1000] [--n-test 10000]
[--parts 1 2]`` (about 30 minutes on 2 CPU cores; ``--quick``: 200 / 500
images, one round of 128).
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
from bench_head2toe import memory_mb  # this folder: the same /proc reader

from skh2t import Head2ToeClassifier
from skh2t.datasets import load_fashion_mnist, stratified_subsample
from skh2t.export import compact_module, export_model, load_exported, prepare_images
from skh2t.threads import blas_threads

MODES = ("model", "module", "torchscript", "onnx")
BATCH = 64


def fit_and_export(n_fit: int, directory: Path) -> dict[str, Path]:
    train = load_fashion_mnist(subset="train")
    index = stratified_subsample(train.target, n_samples=n_fit, random_state=0)
    model = Head2ToeClassifier(
        target_sizes=[8192], alpha_fractions=[0.03], keep_fractions=[0.1], cv=2, random_state=0
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(train.images[index], train.target[index])
    paths = {"joblib": directory / "head2toe.joblib"}
    joblib.dump(model, paths["joblib"])
    n_features = model.transformer_.taps_[-1].stop
    print(
        f"fit on {n_fit} images: {time.perf_counter() - start:.1f} s; {n_features} features, "
        f"{int(model.get_support().sum())} kept from {len(model.kept_taps_)} of "
        f"{len(model.transformer_.taps_)} taps",
        flush=True,
    )
    start = time.perf_counter()
    module = compact_module(model)
    print(
        f"compact_module: {time.perf_counter() - start:.1f} s; reads {module.n_features} "
        f"features, through a {type(module.taps).__name__} with "
        f"{sum(p.numel() for p in module.taps.parameters()):,} of "
        f"{sum(p.numel() for p in model.transformer_.backbone_.parameters()):,} backbone "
        "parameters",
        flush=True,
    )
    for suffix, name in ((".onnx", "onnx"), (".pt", "torchscript"), (".pt2", "torch.export")):
        paths[name] = directory / f"head2toe{suffix}"
        start = time.perf_counter()
        export_model(module, paths[name])
        print(f"export {name:<12} {time.perf_counter() - start:6.1f} s (with its check)")
    print(
        "file sizes: " + ", ".join(f"{k} {v.stat().st_size / 1e6:.1f} MB" for k, v in paths.items())
    )
    return paths


def child(mode: str, paths: dict[str, str], n: int, threads: int) -> None:
    """Load one form of the model in a fresh process, predict n test images, print a JSON line."""
    torch.set_num_threads(threads)
    images = load_fashion_mnist(subset="test").images[:n]
    predict = _predictor(mode, paths, threads)
    predict(images[:1])  # builds what is built lazily
    loaded = memory_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = time.perf_counter()
    with blas_threads(1):
        predicted = np.concatenate([predict(images[i : i + BATCH]) for i in range(0, n, BATCH)])
    seconds = time.perf_counter() - start
    np.save(paths["joblib"] + f".{mode}.npy", predicted)
    print(json.dumps({"seconds": seconds, "peak_mb": memory_mb("VmHWM"), "loaded_mb": loaded}))


def _predictor(mode: str, paths: dict[str, str], threads: int):
    model = joblib.load(paths["joblib"])
    classes = model.classes_
    if mode == "model":
        return model.predict
    module = compact_module(model)
    size, interpolation = module.image_size, module.interpolation
    del model
    if mode == "module":
        return module.predict
    run = load_exported(paths[mode], n_threads=threads)
    del module
    return lambda images: classes[
        run(prepare_images(images, size, interpolation).numpy()).argmax(1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-fit", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-round", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2], help="1, 2 or both")
    parser.add_argument("--quick", action="store_true", help="200 / 500 images, 1 x 128")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, paths, n, threads = args.child
        child(mode, json.loads(paths), int(n), int(threads))
        return
    if args.quick:
        args.n_fit, args.n_test, args.n_round, args.rounds = 200, 500, 128, 1
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        with blas_threads(1):
            paths = {k: str(v) for k, v in fit_and_export(args.n_fit, Path(directory)).items()}
        if 1 in args.parts:
            separate_processes(paths, args.n_test, args.threads)
        if 2 in args.parts:
            interleaved(paths, args.n_round, args.rounds, args.threads)


def separate_processes(paths: dict[str, str], n: int, threads: int) -> None:
    results = {}
    for mode in MODES:
        argv = [sys.executable, __file__, "--child", mode, json.dumps(paths), str(n), str(threads)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.splitlines()[-1])
        predictions = np.load(paths["joblib"] + f".{mode}.npy", allow_pickle=True)
        results[mode]["predictions"] = predictions
    _report(results, n)


def interleaved(paths: dict[str, str], n: int, rounds: int, threads: int) -> None:
    images = load_fashion_mnist(subset="test").images[:n]
    predictors = {mode: _predictor(mode, paths, threads) for mode in MODES}
    speeds: dict[str, list[float]] = {mode: [] for mode in MODES}
    with blas_threads(1):
        for predict in predictors.values():
            predict(images[:2])  # builds what is built lazily
        for _ in range(rounds):
            for mode, predict in predictors.items():
                start = time.perf_counter()
                for i in range(0, n, BATCH):
                    predict(images[i : i + BATCH])
                speeds[mode].append(n / (time.perf_counter() - start))
    base = float(np.median(speeds["model"]))
    print(f"\nspeed in one process, {rounds} rounds of {n} images (median img/s, ratio):")
    for mode, values in speeds.items():
        median = float(np.median(values))
        rounds_text = " ".join(f"{v:.1f}" for v in values)
        print(f"{mode:<12} {median:7.1f} {median / base:6.2f}x   (rounds: {rounds_text})")


def _report(results: dict, n: int) -> None:
    base = results["model"]
    print(f"\npredicting {n} test images, {BATCH} at a time:")
    columns = ("seconds", "img/s", "speed-up", "peak MB", "loaded MB", "same")
    widths = (8, 7, 9, 8, 10, 5)
    print(" " * 12 + "".join(f" {c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for mode, r in results.items():
        same = bool(np.array_equal(r["predictions"], base["predictions"]))
        print(
            f"{mode:<12} {r['seconds']:8.1f} {n / r['seconds']:7.1f} "
            f"{base['seconds'] / r['seconds']:8.2f}x {r['peak_mb']:8.0f} {r['loaded_mb']:10.0f} "
            f"{same!s:>5}"
        )
    truth = load_fashion_mnist(subset="test").target[:n]
    print(f"test accuracy of the model: {np.mean(base['predictions'] == truth):.4f}")


if __name__ == "__main__":
    main()
