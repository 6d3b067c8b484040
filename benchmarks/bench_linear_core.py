"""The linear core of Head2ToeClassifier.fit against a baseline source tree, in one run.

``Head2ToeClassifier`` at ``skh2t run``'s setting (EfficientNet-Lite0 with its
offline ImageNet weights, ``--image-size`` px, ``--n-train`` class-balanced
Fashion-MNIST training images, 5 shuffled stratified folds with seed 0, the
default grid: target sizes ``--target-sizes``, alpha fractions 0.1, 0.03,
0.01, keep fractions 0.02, 0.05, 0.1, 0.2, ``n_jobs=-1``) is fitted by this
checkout and by ``--baseline`` (a source tree of an earlier version, e.g.
``git worktree add --detach /tmp/skh2t-32f4cfc 32f4cfc``), each in a fresh
process, one after the other.

Printed per version: the whole fit, the extraction (until the training
features exist), the linear part (everything after: the paths, the refits,
the final refit), the process's peak resident memory and the machine's
(the largest rise of the memory in use, ``total - available``, sampled every
0.1 s during the fit: the joblib workers and their shared features count
too, where ``ru_maxrss`` misses the workers, which loky keeps alive), the test accuracy on
``--n-test`` test images, the chosen point; then the ratio of the linear
parts and the largest difference of a mean CV score between the versions.
With ``--repeats N`` the two versions run N times, interleaved (baseline,
this checkout, baseline, ...), and every pair's ratio is printed with their
median: on a shared or virtual machine one run's timing moves by 10-20 %.

Run: ``python benchmarks/bench_linear_core.py --baseline /tmp/skh2t-32f4cfc
[--image-size 64] [--target-sizes 1024 2048]``; the paper's grid at 224 px:
``--image-size 224 --target-sizes 1024 2048 4096 8192``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="source tree of the baseline version")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--target-sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs of each version")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_fit(args)))
        return
    ratios = []
    for _ in range(args.repeats):
        results = {}
        for name, source in (("baseline", args.baseline), ("this checkout", CHECKOUT)):
            results[name] = _run_version(source, args)
            _print(name, source, results[name])
        base, new = results["baseline"], results["this checkout"]
        ratios.append(new["linear_seconds"] / base["linear_seconds"])
        _compare(base, new)
    if args.repeats > 1:
        listed = ", ".join(f"{ratio:.2f}x" for ratio in ratios)
        print(
            f"linear part, {args.repeats} interleaved pairs: {listed}; median "
            f"{statistics.median(ratios):.2f}x"
        )


def _run_version(source: str, args: argparse.Namespace) -> dict:
    """One fit of the version in ``source``, in a fresh process."""
    command = [sys.executable, __file__, "--worker", source, "--baseline", args.baseline]
    command += ["--image-size", str(args.image_size), "--n-train", str(args.n_train)]
    command += ["--n-test", str(args.n_test), "--target-sizes", *map(str, args.target_sizes)]
    env = {**os.environ, "PYTHONPATH": source}
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def _compare(base: dict, new: dict) -> None:
    differences = [abs(a - b) for a, b in zip(base["mean_scores"], new["mean_scores"], strict=True)]
    print(
        f"linear part: {new['linear_seconds']:.1f} s against {base['linear_seconds']:.1f} s, "
        f"{new['linear_seconds'] / base['linear_seconds']:.2f}x; whole fit "
        f"{new['fit_seconds'] / base['fit_seconds']:.2f}x; peak memory "
        f"{new['peak_mb'] / base['peak_mb']:.2f}x (process), "
        f"{new['machine_mb'] / base['machine_mb']:.2f}x (machine)"
    )
    print(
        f"mean CV scores: largest difference {max(differences):.4f} over {len(differences)} "
        f"points; same choice: {base['best_params'] == new['best_params']}"
    )


def _print(name: str, source: str, result: dict) -> None:
    print(
        f"{name} ({source}, skh2t {result['version']}): fit {result['fit_seconds']:.1f} s "
        f"(extraction {result['extraction_seconds']:.1f} s, linear part "
        f"{result['linear_seconds']:.1f} s), peak {result['peak_mb']:.0f} MB (process), "
        f"{result['machine_mb']:.0f} MB (machine), test accuracy "
        f"{result['test_accuracy']:.4f}, best {result['best_params']} "
        f"(mean CV {result['best_score']:.4f})"
    )


def _fit(args: argparse.Namespace) -> dict:
    import resource
    import time

    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    import skh2t
    from skh2t import Head2ToeClassifier
    from skh2t.datasets import load_fashion_mnist, stratified_subsample

    assert os.path.realpath(os.path.dirname(os.path.dirname(skh2t.__file__))) == os.path.realpath(
        args.worker
    ), "PYTHONPATH did not select the source tree"
    train = load_fashion_mnist(subset="train")
    test = load_fashion_mnist(subset="test")
    rows = stratified_subsample(train.target, n_samples=args.n_train, random_state=0)
    test_rows = stratified_subsample(test.target, n_samples=args.n_test, random_state=0)
    model = Head2ToeClassifier(
        image_size=args.image_size,
        target_sizes=sorted(args.target_sizes),
        cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=0),
        n_jobs=-1,
    )
    stamps = {}
    extract = model._training_features  # the end of the extraction, in both versions

    def timed_extraction(*a, **k):
        features = extract(*a, **k)
        stamps["features"] = time.perf_counter()
        return features

    model._training_features = timed_extraction
    with _MachineMemory() as machine:
        started = time.perf_counter()
        model.fit(train.images[rows], train.target[rows])
        finished = time.perf_counter()
    del model._training_features
    accuracy = float(np.mean(model.predict(test.images[test_rows]) == test.target[test_rows]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest worker
    return {
        "version": skh2t.__version__,
        "fit_seconds": finished - started,
        "extraction_seconds": stamps["features"] - started,
        "linear_seconds": finished - stamps["features"],
        "peak_mb": peak / 1024,
        "machine_mb": machine.peak_rise / 2**20,
        "test_accuracy": accuracy,
        "best_params": {k: float(v) for k, v in model.best_params_.items()},
        "best_score": model.best_score_,
        "mean_scores": [float(s) for s in model.cv_results_["mean_test_score"]],
    }


class _MachineMemory:
    """The largest rise of the machine's memory in use while the block runs, sampled."""

    def __enter__(self):
        import threading

        import psutil

        def in_use() -> int:
            memory = psutil.virtual_memory()
            return memory.total - memory.available

        self._start, self.peak_rise = in_use(), 0
        self._done = threading.Event()

        def sample():
            while not self._done.wait(0.1):
                self.peak_rise = max(self.peak_rise, in_use() - self._start)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


if __name__ == "__main__":
    main()
