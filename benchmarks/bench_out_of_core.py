"""GroupLassoClassifierCV on a memmap: anonymous memory with folds trained by weight vs copied.

A synthetic float32 matrix (``--n-samples`` x ``--n-features``, 10 classes)
written to a ``.npy`` file and opened as a numpy memmap; one
``GroupLassoClassifierCV`` fit, each in a fresh process (3 stratified folds,
``--alpha-fractions`` (0.9, 0.6), keep fraction 0.1, ``--max-iter``
iterations: the memory does not depend on how long the solver runs), once
with the folds' rows gathered into copies (the baseline: ``skh2t``'s path
before issue 24) and once trained by weight (validation rows at zero weight)
and scored block by block (4096 validation rows at a time). Printed: the
peak anonymous memory (``RssAnon`` of ``/proc/self/status``, sampled every
20 ms) above what the process held before the fit, as a multiple of the
matrix's size; the file's pages are not anonymous, so the memmap itself does
not count. Linux only. The penalised solve gathers its working set's columns
in float64 (``n_samples x working set x 8`` bytes), so weaker penalties
(larger working sets) need more memory whatever the folds do:
``--alpha-fractions 0.3 0.1`` shows it.

Run: ``python benchmarks/bench_out_of_core.py`` (about a minute).
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
from skh2t import GroupLassoClassifierCV


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


def measure(path: str, variant: str, args: argparse.Namespace) -> None:
    """One fit on the memmap at ``path``, in this (fresh) process; prints one line."""
    X = np.load(path, mmap_mode="r")
    y = np.load(path.replace("X.npy", "y.npy"))
    size = X.nbytes / 2**20
    params = {
        "alpha_fractions": args.alpha_fractions,
        "keep_fractions": [0.1],
        "cv": 3,
        "max_iter": args.max_iter,
    }
    context = folds_copied if variant == "copied" else nullcontext
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with context(), peak_anonymous_mb() as peak:
            started = time.perf_counter()
            model = GroupLassoClassifierCV(**params).fit(X, y)
            seconds = time.perf_counter() - started
    print(
        f"folds {variant:<10} peak anonymous memory +{peak['peak']:.0f} MB = "
        f"{peak['peak'] / size:.2f}x the matrix; {seconds:.1f} s; "
        f"kept {np.flatnonzero(model.support_)[:5].tolist()}...",
        flush=True,
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--n-features", type=int, default=3_000)
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument(
        "--alpha-fractions", type=float, nargs="+", default=[0.9, 0.6],
        help="strong penalties: small working sets, so the folds' rows are what is copied",
    )  # fmt: skip
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure, args)
        return
    shape = (args.n_samples, args.n_features)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "X.npy")
        write_memmap(path, shape)
        size = shape[0] * shape[1] * 4 / 2**20
        print(f"memmap {shape[0]} x {shape[1]} float32, {size:.0f} MB; {os.cpu_count()} cores")
        for variant in ("copied", "by weight"):  # each in a fresh process
            command = [sys.executable, __file__, "--measure", path, variant]
            command += ["--n-samples", str(args.n_samples), "--n-features", str(args.n_features)]
            command += ["--max-iter", str(args.max_iter), "--alpha-fractions"]
            command += [str(a) for a in args.alpha_fractions]
            subprocess.run(command, check=True)


@contextmanager
def nullcontext():
    yield


if __name__ == "__main__":
    main()
