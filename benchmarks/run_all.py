"""Run every benchmark, one after the other; each prints ratios against its own baseline.

- bench_solver.py: GroupLassoClassifier vs group-lasso's LogisticGroupLasso, and
  scikit-learn's LogisticRegression as a cost baseline.
- bench_cv.py: GroupLassoClassifierCV vs GridSearchCV over the same grid, on synthetic
  data and on Lite0 features of Fashion-MNIST.
- bench_extraction.py: extracting all default taps vs the bare forward pass.
- bench_precision.py: extraction in bfloat16 (float16 on CUDA) vs float32: images/s of
  Lite0 at 64 and 224 px and ResNet-50 at 224 px, the features' error, and Head2Toe's
  accuracy of ``skh2t run --precision`` (--quick: Lite0 at 64 px, a tiny run).
- bench_cache.py: a Head2Toe grid search with the feature cache (cold, warm) vs without.
- bench_head2toe.py: Head2ToeClassifier vs GridSearchCV over a Pipeline (forward passes,
  time), and its prediction's peak memory vs the Pipeline's at 224 px / target size 8192.
- bench_refit.py (not with --quick): the official re-normalised refit vs the plain one.
- bench_export.py: serving a 224 px / target size 8192 model: its predict vs the compact
  module, TorchScript and onnxruntime (needs the export extra); file sizes.
- bench_finetune.py (with --finetune, ~5-10 minutes): probes vs fine-tuning.
- bench_tasks.py (with --tasks; --quick: its quick variant): the task suite, domain
  affinity against Head2Toe's gain.
- bench_budget.py (with --tasks; --quick: its quick variant): Head2Toe's accuracy and
  exported latency against a compute budget, per task.
- bench_out_of_core.py: group-lasso fits on a memmap and a dask array: peak memory,
  time and support against the in-memory fit.
- bench_many_images.py (with --many-images, ~20 minutes; --quick: 1000 and 3000 images):
  Head2Toe's learning curve up to all 60,000 Fashion-MNIST training images.
- bench_energy.py (with --energy, ~40 minutes; --quick: its quick variant): the energy
  sweep of prepared-head fine-tuning, and the probing rules' accuracy and cost.

``bench_run.py`` (the wall time of ``skh2t run`` against an earlier commit) runs
on its own: ``python benchmarks/bench_run.py --baseline REF``.

Run: ``python benchmarks/run_all.py [--quick] [--finetune] [--tasks] [--many-images]
[--energy]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(script: str, *arguments: str) -> None:
    print(f"\n=== {script} {' '.join(arguments)}", flush=True)
    subprocess.run([sys.executable, os.path.join(HERE, script), *arguments], check=True)


def machine_description() -> str:
    """The machine and library versions the figures come from, for the docs."""
    import numpy
    import sklearn
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{platform.platform()}; {cpu}, {os.cpu_count()} cores{load}; Python "
        f"{platform.python_version()}, numpy {numpy.__version__}, scikit-learn "
        f"{sklearn.__version__}, torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller solver benchmark, CV on synthetic data only"
    )
    parser.add_argument("--finetune", action="store_true", help="also the fine-tuning benchmark")
    parser.add_argument(
        "--tasks", action="store_true", help="also the task suite and its compute budgets"
    )
    parser.add_argument("--energy", action="store_true", help="also the energy sweep")
    parser.add_argument(
        "--many-images", action="store_true", help="also the learning curve up to 60,000 images"
    )
    args = parser.parse_args()
    print(machine_description())
    run("bench_solver.py", *(["--quick"] if args.quick else []))
    run("bench_cv.py", *(["--no-real"] if args.quick else []))
    run("bench_extraction.py")
    run("bench_precision.py", *(["--quick"] if args.quick else []))
    run("bench_cache.py")
    run("bench_head2toe.py", *(["--quick"] if args.quick else []))
    if not args.quick:
        run("bench_refit.py")
    run("bench_export.py", *(["--quick"] if args.quick else []))
    run("bench_out_of_core.py")
    if args.finetune:
        run("bench_finetune.py")
    if args.tasks:
        run("bench_tasks.py", *(["--quick"] if args.quick else []))
        run("bench_budget.py", *(["--quick"] if args.quick else []))
    if args.many_images:
        quick = ["--sizes", "1000", "3000", "--selection-samples", "1000", "--full-up-to", "0"]
        run("bench_many_images.py", *(quick if args.quick else []))
    if args.energy:
        run("bench_energy.py", *(["--quick"] if args.quick else []))


if __name__ == "__main__":
    main()
