"""Group-lasso fits on a memmap and a dask array: peak anonymous memory, time, support.

A synthetic float32 matrix (``--n-samples`` x ``--n-features``, 10 classes,
a signal in 10 columns) written to a ``.npy`` file. Each variant runs in a
fresh process and prints the peak anonymous memory (``RssAnon`` of
``/proc/self/status``, sampled every 20 ms) above what the process held
before the fit, as a multiple of the matrix's size (the memmap's file pages
are not anonymous, so the memmap itself does not count; the in-memory copy
is loaded before the measurement starts), the time, its ratio to the
reference variant's, and whether the support equals the reference's.

- ``GroupLassoClassifier(alpha_fraction=F).fit`` for every ``--alpha-fraction``
  (strong penalties, and a weak one: a large working set), on the matrix
  loaded in memory (the reference), on the memmap, and on
  ``dask.array.from_array(memmap, chunks=(4096, -1))`` (default threaded
  scheduler; dask warmed up on a tiny fit first, its own memory is not X's).
- ``GroupLassoClassifierCV`` on the memmap (3 stratified folds,
  ``--alpha-fractions`` (0.9, 0.6), keep fraction 0.1, ``--cv-max-iter``
  iterations: the memory does not depend on how long the solver runs), with
  the folds' rows gathered into copies (the baseline: ``skh2t``'s path
  before issue 24) and trained by weight (validation rows at zero weight),
  scored block by block (4096 validation rows at a time).

Linux only. Run: ``python benchmarks/bench_out_of_core.py`` (about two minutes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager

import numpy as np
from sklearn.exceptions import ConvergenceWarning

import skh2t.linear_model._fold_path as fold_path
from skh2t import GroupLassoClassifier, GroupLassoClassifierCV


def anonymous_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


@contextmanager
def peak_anonymous_mb():
    """Yields a dict whose "peak" is the block's peak RssAnon above its start, in MB."""
    result, done = {"peak": 0.0}, threading.Event()
    start = anonymous_mb()

    def sample():
        while not done.is_set():
            result["peak"] = max(result["peak"], anonymous_mb() - start)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()


@contextmanager
def folds_copied():
    """The baseline, as before issue 24: every fold's training and validation rows gathered."""
    rows_of, score_of = fold_path._training_rows, fold_path._validation_score
    fold_path._training_rows = lambda X, y, w, train, test, by_weight: rows_of(
        X, y, w, train, test, False
    )
    fold_path._validation_score = lambda X, y, test, w, scorer, blockwise: score_of(
        X, y, test, w, scorer, blockwise=False
    )
    try:
        yield
    finally:
        fold_path._training_rows, fold_path._validation_score = rows_of, score_of


def fit_variant(X, y, variant: str, args: argparse.Namespace):
    """The model of one variant, fitted on ``X`` (a memmap, or what the variant makes of it)."""
    if variant.startswith("cv"):
        params = {
            "alpha_fractions": args.alpha_fractions,
            "keep_fractions": [0.1],
            "cv": 3,
            "max_iter": args.cv_max_iter,
        }
        with folds_copied() if variant == "cv copied" else nullcontext():
            return GroupLassoClassifierCV(**params).fit(X, y)
    model = GroupLassoClassifier(alpha_fraction=args.alpha_fraction, max_iter=args.max_iter)
    return model.fit(X, y)


def measure(path: str, variant: str, args: argparse.Namespace) -> None:
    """One fit in this (fresh) process; prints one line of numbers (read by :func:`main`) and
    saves the support next to the data."""
    in_memory = variant == "glc memory"
    X = np.load(path, mmap_mode=None if in_memory else "r")
    y = np.load(path.replace("X.npy", "y.npy"))
    if variant == "glc dask":  # dask's own memory (modules, thread pool) is not X's: warm it
        import dask.array as da

        warm = da.from_array(np.eye(4)[[0, 1] * 4])
        GroupLassoClassifier(alpha_fraction=0.5).fit(warm, np.array([0, 1] * 4))
        X = da.from_array(X, chunks=(4096, -1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with peak_anonymous_mb() as peak:
            started = time.perf_counter()
            model = fit_variant(X, y, variant, args)
            seconds = time.perf_counter() - started
    np.save(support_path(path, variant), model.support_)
    print(f"{peak['peak']:.1f} {seconds:.3f} {int(model.support_.sum())}", flush=True)


def support_path(path: str, variant: str) -> str:
    return path.replace("X.npy", f"support {variant}.npy")


def write_memmap(path: str, shape: tuple[int, int]) -> None:
    """A synthetic float32 matrix written block by block (never all in memory) and labels."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, shape[0])
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    for start in range(0, shape[0], 1000):
        block = rng.standard_normal((min(1000, shape[0] - start), shape[1]), np.float32)
        block[:, :10] += y[start : start + len(block), None] == np.arange(10)
        X[start : start + len(block)] = block
    X.flush()
    np.save(path.replace("X.npy", "y.npy"), y)


def run_variant(path: str, variant: str, args: argparse.Namespace, alpha_fraction: float):
    """``(peak MB, seconds, n_kept)`` of one variant, measured in a fresh process."""
    command = [sys.executable, __file__, "--measure", path, variant]
    command += ["--max-iter", str(args.max_iter), "--cv-max-iter", str(args.cv_max_iter)]
    command += ["--alpha-fraction", str(alpha_fraction), "--alpha-fractions"]
    command += [str(a) for a in args.alpha_fractions]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    peak, seconds, kept = output.split()
    return float(peak), float(seconds), int(kept)


def report(path, args, size, title, variants, alpha_fraction=None, reference=None) -> None:
    """Run ``variants`` (the first is the reference of time and support unless given) and
    print one line each."""
    print(title, flush=True)
    timings = {}
    for variant in variants:
        peak, seconds, kept = run_variant(path, variant, args, alpha_fraction or 0.0)
        timings[variant] = seconds
        base = reference or variants[0]
        same = np.array_equal(
            np.load(support_path(path, variant)), np.load(support_path(path, base))
        )
        print(
            f"  {variant:<12} peak anonymous +{peak:6.0f} MB = {peak / size:5.2f}x the matrix; "
            f"{seconds:6.1f} s = {seconds / timings[base]:4.2f}x {base}'s; {kept} kept, "
            f"support {'equal to' if same else 'DIFFERENT from'} {base}'s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--n-features", type=int, default=3_000)
    parser.add_argument("--max-iter", type=int, default=5000, help="GroupLassoClassifier's")
    parser.add_argument("--cv-max-iter", type=int, default=30, help="GroupLassoClassifierCV's")
    parser.add_argument(
        "--alpha-fraction", type=float, nargs="+", default=[0.9, 0.3, 0.05],
        help="GroupLassoClassifier's: strong penalties, and a weak one (a large working set)",
    )  # fmt: skip
    parser.add_argument(
        "--alpha-fractions", type=float, nargs="+", default=[0.9, 0.6],
        help="GroupLassoClassifierCV's: strong penalties, as before issue 24's solver part",
    )  # fmt: skip
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        args.alpha_fraction = args.alpha_fraction[0]
        measure(*args.measure, args)
        return
    shape = (args.n_samples, args.n_features)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "X.npy")
        write_memmap(path, shape)
        size = shape[0] * shape[1] * 4 / 2**20
        print(f"memmap {shape[0]} x {shape[1]} float32, {size:.0f} MB; {os.cpu_count()} cores")
        for fraction in args.alpha_fraction:
            report(
                path,
                args,
                size,
                f"GroupLassoClassifier(alpha_fraction={fraction}).fit",
                ["glc memory", "glc memmap", "glc dask"],
                fraction,
            )
        report(
            path,
            args,
            size,
            f"GroupLassoClassifierCV(alpha_fractions={args.alpha_fractions}, keep_fractions=[0.1],"
            f" cv=3, max_iter={args.cv_max_iter}).fit on the memmap",
            ["cv copied", "cv by weight"],
        )


@contextmanager
def nullcontext():
    yield


if __name__ == "__main__":
    main()
