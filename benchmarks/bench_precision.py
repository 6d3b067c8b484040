"""Mixed-precision extraction: how much faster than float32 is bfloat16 autocast, at what cost?

The backbone's forward pass is most of the cost of Head2Toe's features.
``precision="bfloat16"`` runs it under ``torch.autocast`` (pooling and
normalisation still accumulate in float32, the features are float32). This
script measures, on one device and in one run, every figure against float32
measured in the same run (the precisions alternate at every repeat, so that
they see the same machine state):

1. Extraction speed: images per second of
   ``IntermediateFeatureTransformer.transform`` (all default taps, the
   target-size pooling, L2 normalisation; uint8 Fashion-MNIST images in),
   best of ``--repeats`` after a warm-up, for EfficientNet-Lite0 (offline
   ImageNet weights) at 64 px (batch 64, target size 1024) and at 224 px
   (batch 32, target size 8192), and ResNet-50 at 224 px (batch 32, target
   size 8192; timm's ``resnet50`` with random weights: its speed does not
   depend on them, and nothing is downloaded); for every precision the device
   runs (float32 and bfloat16; on CUDA float16 too).
2. Feature error: the relative (Frobenius) error of each precision's features
   against float32's on the same images, over all taps and for the worst tap.
3. Accuracy: Head2Toe's test accuracy and the wall time of ``skh2t run
   --precision float32`` against ``skh2t run --precision P`` (the README's
   main command, as two subprocesses one after the other), where P is what
   ``precision="auto"`` resolves to on the device (bfloat16 if it resolves to
   float32).

The decision rule, fixed before the first run: ``"auto"`` is justified on
this machine if P extracts at least 1.8 times as many images per second as
float32 on every backbone, and Head2Toe's test accuracy with P is within 0.2
points of float32's. The script ends with that verdict.

Run: ``python benchmarks/bench_precision.py [--device cpu] [--repeats 3]``
(two full ``skh2t run`` of a few minutes each on 2 CPU cores, plus about two
minutes of timing). ``--quick``: 128 images of Lite0 at 64 px only and a tiny
``skh2t run`` (100 training and 200 test images, one grid point), about a
minute: it checks the script and decides nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from run_all import machine_description

from skh2t.datasets import load_fashion_mnist
from skh2t.features import IntermediateFeatureTransformer
from skh2t.features.devices import resolve_device, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
SPEED_UP = 1.8  # the rule's minimum images/s ratio against float32, on every backbone
ACCURACY_POINTS = 0.2  # the rule's largest Head2Toe test accuracy difference, in points
HEAD2TOE = "Head2Toe"  # the method's name in skh2t run's results.json
QUICK_RUN = [
    *("--n-train", "100", "--n-test", "200", "--folds", "2", "--target-sizes", "256"),
    *("--alpha-fractions", "0.1", "--keep-fractions", "0.1", "--cs", "1"),
]


@dataclass(frozen=True)
class Setting:
    """One backbone at one input size: what is timed."""

    label: str
    backbone: str
    weights: str | None
    image_size: int
    batch_size: int
    target_size: int
    n_images: int


SETTINGS = (
    Setting("Lite0 64 px", "tf_efficientnet_lite0", "auto", 64, 64, 1024, 256),
    Setting("Lite0 224 px", "tf_efficientnet_lite0", "auto", 224, 32, 8192, 64),
    Setting("ResNet-50 224 px (random weights)", "resnet50", None, 224, 32, 8192, 64),
)
QUICK_SETTINGS = (Setting("Lite0 64 px", "tf_efficientnet_lite0", "auto", 64, 64, 1024, 128),)


@dataclass(frozen=True)
class Extraction:
    """One precision's measurement on one setting."""

    precision: str
    images_per_second: float
    relative_error: float  # against float32, all taps
    worst_tap_error: float
    worst_tap: str


@dataclass(frozen=True)
class RunOutcome:
    """What one ``skh2t run`` gave."""

    precision: str
    test_accuracy: float
    cv_accuracy: float
    seconds: float


def best_seconds(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest wall time of each function, alternating between them every repeat."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def relative_errors(X: np.ndarray, exact: np.ndarray, groups: np.ndarray, names: list[str]):
    """The relative error of ``X`` against ``exact``: over all columns, and the worst tap's."""
    overall = float(np.linalg.norm(X - exact) / np.linalg.norm(exact))
    per_tap = [
        float(np.linalg.norm(X[:, groups == g] - exact[:, groups == g]))
        / max(float(np.linalg.norm(exact[:, groups == g])), np.finfo(np.float32).tiny)
        for g in range(len(names))
    ]
    worst = int(np.argmax(per_tap))
    return overall, per_tap[worst], names[worst]


def measure(
    setting: Setting, images: np.ndarray, precisions: list[str], args: argparse.Namespace
) -> list[Extraction]:
    """Images per second and feature error of every precision on one setting."""
    transformer = IntermediateFeatureTransformer(
        backbone=setting.backbone,
        weights=setting.weights,
        image_size=setting.image_size,
        target_size=setting.target_size,
        batch_size=setting.batch_size,
        device=args.device,
    ).fit(images[:1])
    batch = images[: setting.n_images]
    outputs: dict[str, np.ndarray] = {}

    def extract(precision: str) -> Callable[[], None]:
        def run() -> None:
            outputs[precision] = transformer.set_params(precision=precision).transform(batch)

        return run

    functions = {precision: extract(precision) for precision in precisions}
    best_seconds(functions, repeats=1)  # warm-up
    seconds = best_seconds(functions, repeats=args.repeats)
    groups = transformer.feature_groups_
    names = [tap.name for tap in transformer.taps_]
    results = []
    for precision in precisions:
        overall, worst, tap = relative_errors(outputs[precision], outputs["float32"], groups, names)
        results.append(Extraction(precision, len(batch) / seconds[precision], overall, worst, tap))
    return results


def print_extraction(setting: Setting, results: list[Extraction]) -> None:
    base = next(r for r in results if r.precision == "float32").images_per_second
    print(
        f"\n{setting.label}: batch {setting.batch_size}, target size {setting.target_size}, "
        f"{setting.n_images} images"
    )
    print(
        f"  {'precision':<9}  {'img/s':>7}  {'x float32':>9}  relative error (all taps; worst tap)"
    )
    for r in results:
        error = (
            "-"
            if r.precision == "float32"
            else f"{r.relative_error:.4f}; {r.worst_tap_error:.4f} at {r.worst_tap}"
        )
        print(
            f"  {r.precision:<9}  {r.images_per_second:7.1f}  "
            f"{r.images_per_second / base:9.2f}  {error}",
            flush=True,
        )


def skh2t_run(precision: str, arguments: list[str], output: Path, device: str) -> RunOutcome:
    """``skh2t run --precision ...`` from this checkout, in a subprocess."""
    command = [sys.executable, "-m", "skh2t", "run", "--quiet", "--no-save-model"]
    command += ["--output-dir", str(output), "--precision", precision, "--device", device]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    result = subprocess.run(
        [*command, *arguments], env=environment, cwd=ROOT, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"skh2t run --precision {precision} failed:\n{result.stderr}")
    method = json.loads((output / "results.json").read_text())["methods"][HEAD2TOE]
    return RunOutcome(precision, method["test_accuracy"], method["cv_accuracy"], seconds)


def compare_runs(reduced: str, args: argparse.Namespace) -> tuple[RunOutcome, RunOutcome]:
    arguments = QUICK_RUN if args.quick else []
    print(f"\nskh2t run {' '.join(arguments) or '(defaults)'}, --precision float32 vs {reduced}:")
    with tempfile.TemporaryDirectory(prefix="skh2t-bench-precision-") as directory:
        runs = tuple(
            skh2t_run(p, arguments, Path(directory, p), args.device) for p in ("float32", reduced)
        )
    for run in runs:
        print(
            f"  {run.precision:<9}  Head2Toe test accuracy {run.test_accuracy:.4f}  "
            f"(CV {run.cv_accuracy:.4f})  wall {run.seconds:6.1f} s",
            flush=True,
        )
    difference = 100 * (runs[1].test_accuracy - runs[0].test_accuracy)
    print(
        f"  {reduced} - float32: {difference:+.2f} accuracy points, wall time x "
        f"{runs[1].seconds / runs[0].seconds:.2f}"
    )
    return runs


def verdict(
    reduced: str, auto: str, speed_ups: dict[str, float], runs: tuple[RunOutcome, RunOutcome]
) -> str:
    difference = 100 * (runs[1].test_accuracy - runs[0].test_accuracy)
    fast = all(ratio >= SPEED_UP for ratio in speed_ups.values())
    close = abs(difference) <= ACCURACY_POINTS
    slowest = min(speed_ups, key=speed_ups.get)
    reasons = (
        f"speed-up >= {SPEED_UP}x on every backbone: {'yes' if fast else 'no'} (lowest "
        f"{speed_ups[slowest]:.2f}x, {slowest}); accuracy within {ACCURACY_POINTS} points: "
        f"{'yes' if close else 'no'} ({difference:+.2f})"
    )
    if auto == "float32":
        return f"'auto' resolves to float32 on this device; {reduced} would be: {reasons}"
    justified = "justified" if fast and close else "NOT justified"
    return f"'auto' ({auto}) {justified} on this device: {reasons}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best of)")
    parser.add_argument(
        "--quick", action="store_true", help="Lite0 at 64 px only, a tiny skh2t run"
    )
    parser.add_argument("--no-run", action="store_true", help="skip the skh2t run comparison")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precisions = []
    for precision in ("float32", "bfloat16", "float16"):
        try:
            resolve_precision(precision, device)
        except ValueError:
            continue
        precisions.append(precision)
    auto = str(resolve_precision("auto", device)).removeprefix("torch.")
    reduced = "bfloat16" if auto == "float32" else auto
    print(machine_description())
    print(
        f"device {device}, {torch.get_num_threads()} torch threads; precisions {precisions}; "
        f"'auto' resolves to {auto}; best of {args.repeats} after a warm-up"
        + ("; QUICK: checks the script, decides nothing" if args.quick else "")
    )
    images = load_fashion_mnist(subset="test").images[:256]
    speed_ups = {}
    for setting in QUICK_SETTINGS if args.quick else SETTINGS:
        results = measure(setting, images, precisions, args)
        print_extraction(setting, results)
        rates = {r.precision: r.images_per_second for r in results}
        speed_ups[setting.label] = rates[reduced] / rates["float32"]
    print(f"load average after the timing {os.getloadavg()[0]:.2f}")
    if args.no_run:
        print(f"\nverdict: not decided (--no-run); {reduced} speed-ups {speed_ups}")
        return
    runs = compare_runs(reduced, args)
    print(f"load average after the runs {os.getloadavg()[0]:.2f}")
    print(f"\nverdict{' (QUICK, not a decision)' if args.quick else ''}: ", end="")
    print(verdict(reduced, auto, speed_ups, runs))


if __name__ == "__main__":
    main()
