"""Head2Toe on many images: a learning curve up to all 60,000 Fashion-MNIST training images.

For every training-set size ``n`` of ``--sizes`` (a stratified draw of
Fashion-MNIST's training images, seed 0), one ``Head2ToeClassifier`` fit at
``skh2t run``'s defaults (EfficientNet-Lite0, 64 px, target sizes 1024 and
2048, alpha fractions 0.1/0.03/0.01, keep fractions 0.02-0.2, 5 folds, CV on
all cores), then its accuracy on the 10,000 test images. Up to
``--selection-samples`` images, the whole protocol runs on all ``n`` images;
beyond, the selection runs on a stratified subsample of that many images and
the head is refitted on all ``n`` (``selection_samples``). For sizes up to
``--full-up-to`` the whole protocol runs too, for the comparison. Each fit
runs in a fresh process, which reports its peak memory: the resident set's
high-water mark (``VmHWM``) and the peak anonymous memory (``RssAnon``,
sampled every 50 ms), both over the whole process (the backbone and Python
included).

Prints one line per run and writes ``--output`` (JSON lines) and, with
``--figure``, the learning-curve figure (test accuracy and wall time against
``n``). Linux only (``/proc/self/status``).

Run: ``python benchmarks/bench_many_images.py --figure docs/_static/learning_curve.png``
(about 20 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np


def status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


class PeakAnonymous:
    """The peak of ``RssAnon`` while the block runs, sampled every 50 ms."""

    def __enter__(self):
        self.peak, self._done = status_mb("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.is_set():
            self.peak = max(self.peak, status_mb("RssAnon"))
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def measure(n_train: int, selection_samples: int | None, args: argparse.Namespace) -> dict:
    """One fit and test in this (fresh) process."""
    from sklearn.exceptions import ConvergenceWarning

    from skh2t import Head2ToeClassifier
    from skh2t.datasets import load_fashion_mnist, stratified_subsample

    train, test = load_fashion_mnist(subset="train"), load_fashion_mnist(subset="test")
    rows = np.arange(len(train.target))
    if n_train < len(rows):
        rows = stratified_subsample(train.target, n_samples=n_train, random_state=0)
    model = Head2ToeClassifier(
        image_size=64,
        cv=5,
        random_state=0,
        n_jobs=-1,
        selection_samples=selection_samples,
        feature_store=args.feature_store,
        feature_store_dtype=args.feature_store_dtype,
        verbose=args.verbose,
    )
    with PeakAnonymous() as peak, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        started = time.perf_counter()
        model.fit(train.images[rows], train.target[rows])
        fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        accuracy = float(np.mean(model.predict(test.images) == test.target))
        test_seconds = time.perf_counter() - started
    return {
        "n_train": len(rows),
        "selection_samples": selection_samples,
        "feature_store_dtype": args.feature_store_dtype if args.feature_store else None,
        "test_accuracy": accuracy,
        "test_standard_error": float(np.sqrt(accuracy * (1 - accuracy) / len(test.target))),
        "cv_accuracy": float(model.best_score_),
        "best_params": model.best_params_,
        "n_kept": int(model.get_support().sum()),
        "fit_seconds": fit_seconds,
        "refit_seconds": float(model.refit_time_),
        "test_seconds": test_seconds,
        "peak_rss_mb": status_mb("VmHWM"),
        "peak_anonymous_mb": peak.peak,
        "convergence_warnings": sum(issubclass(w.category, ConvergenceWarning) for w in caught),
    }


def runs(args: argparse.Namespace) -> list[tuple[int, int | None]]:
    """``(n_train, selection_samples)`` of every run, smallest first."""
    planned = []
    for n in args.sizes:
        if n <= args.selection_samples:
            planned.append((n, None))
            continue
        planned.append((n, args.selection_samples))
        if n <= args.full_up_to:
            planned.append((n, None))
    return planned


def curves(results: list[dict]) -> dict[str, list[dict]]:
    """The runs of each curve, by size: the whole protocol, and the selection on a subsample
    (which starts from the whole protocol's runs no larger than its subsample)."""
    whole = [r for r in results if r["selection_samples"] is None]
    subsampled = [r for r in results if r["selection_samples"] is not None]
    smallest = min((r["selection_samples"] for r in subsampled), default=0)
    subsampled += [r for r in whole if r["n_train"] <= smallest]
    return {
        label: sorted(runs, key=lambda r: r["n_train"])
        for label, runs in [("whole protocol", whole), ("selection on a subsample", subsampled)]
        if runs
    }


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for (label, points), marker in zip(curves(results).items(), "so", strict=False):
        n = [r["n_train"] for r in points]
        left.errorbar(
            n,
            [r["test_accuracy"] for r in points],
            yerr=[r["test_standard_error"] for r in points],
            marker=marker,
            capsize=3,
            label=label,
        )
        right.plot(n, [r["fit_seconds"] / 60 for r in points], marker=marker, label=label)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("training images")
        ax.grid(alpha=0.3)
    left.set_ylabel("test accuracy (10k images, ± s.e.)")
    right.set_ylabel("fit time (minutes, 2 cores)")
    left.legend(loc="lower right", fontsize=8)
    fig.suptitle(
        "Head2Toe on Fashion-MNIST, EfficientNet-Lite0 at 64 px (subsample: 2000 images)",
        fontsize=10,
    )
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000, 60000])
    parser.add_argument("--selection-samples", type=int, default=2000)
    parser.add_argument("--full-up-to", type=int, default=5000)
    parser.add_argument("--feature-store", default=None, help="directory (default: in memory)")
    parser.add_argument("--feature-store-dtype", default="float32")
    parser.add_argument("--output", default="bench_many_images.jsonl")
    parser.add_argument("--figure", default=None)
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--replot", metavar="JSONL", help="only redraw --figure from results")
    parser.add_argument("--measure", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replot:
        plot([json.loads(line) for line in Path(args.replot).read_text().splitlines()], args.figure)
        return
    if args.measure:
        n_train, selection = args.measure
        print(json.dumps(measure(n_train, selection or None, args)), flush=True)
        return
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for n_train, selection in runs(args):
        command = [sys.executable, __file__, "--measure", str(n_train), str(selection or 0)]
        command += ["--feature-store-dtype", args.feature_store_dtype]
        command += ["--verbose", str(args.verbose)]
        if args.feature_store:
            command += ["--feature-store", args.feature_store]
        with tempfile.TemporaryDirectory():
            output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        result = json.loads(output.stdout.strip().splitlines()[-1])
        results.append(result)
        with open(args.output, "a") as file:
            file.write(json.dumps(result) + "\n")
        print(
            f"n={result['n_train']:>6} selection={selection or 'all':>5}: test "
            f"{result['test_accuracy']:.4f} (s.e. {result['test_standard_error']:.4f}), CV "
            f"{result['cv_accuracy']:.4f}, {result['n_kept']} kept, fit "
            f"{result['fit_seconds'] / 60:.1f} min (refit {result['refit_seconds']:.0f} s), "
            f"test {result['test_seconds']:.0f} s, peak RSS {result['peak_rss_mb'] / 1024:.2f} "
            f"GB, peak anonymous {result['peak_anonymous_mb'] / 1024:.2f} GB, "
            f"{result['best_params']}",
            flush=True,
        )
    if args.figure:
        plot(results, args.figure)
        print(f"wrote {Path(args.figure)}")


if __name__ == "__main__":
    main()
