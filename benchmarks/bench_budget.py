"""Head2Toe under an inference budget: accuracy against the share of the backbone computed.

For every task of ``bench_tasks.py`` (the same data, draws, folds and grid),
Head2Toe is fitted with ``compute_budget`` in ``--budgets`` (0.1, 0.25, 0.5
and 1.0 of the backbone's forward FLOPs: only the taps computed within that
share are read, :class:`skh2t.Head2ToeClassifier`'s ``compute_budget``), and
at 1.0 against the last-layer linear probe on the same folds
(:func:`skh2t.compare_methods`). Each fitted model is exported to ONNX
(:func:`skh2t.export.export_model`) and its cost measured:
:func:`skh2t.export.inference_cost` (FLOPs of the exported module over those
of the whole backbone: the prefix up to the deepest kept tap, plus the head)
and :func:`skh2t.export.measure_latency` (one image, onnxruntime on one CPU
thread, median of 50 calls). The linear probe needs the backbone up to its
pre-logits tap; its latency is not measured (no exported file).

Printed: per task and budget, the test accuracy with its binomial standard
error (over the test images; one seed draws the data and the folds), the
FLOPs share, the latency, the features kept and Head2Toe's fit time
(extraction and cross-validation included); the linear
probe's accuracy. Written to ``--output-dir``: ``budget.json`` and
``budget_frontier.png`` (accuracy against FLOPs share, one panel per task).

Run: ``python benchmarks/bench_budget.py --quick`` (4 tasks, bench_tasks'
quick settings), or without ``--quick`` for the full settings (1000 training
images, 5 folds, the default grid).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from bench_tasks import QUICK, QUICK_TASKS, TASKS, Settings, Task, head2toe_estimator
from sklearn.exceptions import ConvergenceWarning

from skh2t import Head2ToeClassifier, compare_methods
from skh2t.export import compact_module, export_model, inference_cost, measure_latency
from skh2t.protocol import HEAD2TOE, LAST_LAYER
from skh2t.threads import blas_threads

BUDGETS = (0.1, 0.25, 0.5, 1.0)


@dataclass
class Point:
    """Head2Toe at one compute budget on one task."""

    budget: float
    flops_share: float
    latency_ms: float
    accuracy: float
    standard_error: float
    n_features: int
    n_taps: int
    fit_seconds: float
    params: dict


@dataclass
class TaskFrontier:
    task: str
    kind: str
    n_test: int
    linear_probe: float
    linear_probe_standard_error: float
    linear_probe_flops_share: float
    points: list[Point]


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    correct = predicted == truth
    return float(correct.mean()), float(correct.std() / np.sqrt(len(correct)))


def point(model: Head2ToeClassifier, budget: float, task: Task, seconds: float) -> Point:
    acc, se = accuracy(model.predict(task.X_test), task.y_test)
    cost = inference_cost(model)
    with tempfile.TemporaryDirectory() as directory:
        path = export_model(compact_module(model), os.path.join(directory, "model.onnx"))
        latency = measure_latency(path, (model.transformer_.image_size,) * 2, repeats=50)
    return Point(
        budget=budget,
        flops_share=cost.share,
        latency_ms=latency * 1e3,
        accuracy=acc,
        standard_error=se,
        n_features=int(model.get_support().sum()),
        n_taps=len(model.kept_taps_),
        fit_seconds=seconds,
        params=dict(model.best_params_),
    )


def frontier(task: Task, settings: Settings, budgets: tuple[float, ...]) -> TaskFrontier:
    points = []
    for budget in sorted(budgets):
        start = time.perf_counter()
        if budget < 1.0:
            model = head2toe_estimator(settings, compute_budget=budget)
            model.fit(task.X_train, task.y_train)
            seconds = time.perf_counter() - start
        else:
            comparison = compare_methods(
                head2toe_estimator(settings),
                task.X_train,
                task.y_train,
                X_test=task.X_test,
                y_test=task.y_test,
                Cs=settings.Cs,
            )
            model = comparison.head2toe
            probe = comparison[LAST_LAYER]
            assert comparison[HEAD2TOE].model is model.classifier_
            seconds = comparison.times.head2toe_fit
        points.append(point(model, budget, task, seconds))
        print(f"  {task.name} budget {budget:g}: {points[-1]}", flush=True)
    transformer = model.transformer_
    tap = [t.name for t in transformer.taps_].index(probe.params["tap"])
    probe_acc, probe_se = accuracy(probe.test_predictions, task.y_test)
    return TaskFrontier(
        task.name,
        task.kind,
        len(task.y_test),
        probe_acc,
        probe_se,
        float(transformer.tap_costs_[tap]),
        points,
    )


def format_table(frontiers: list[TaskFrontier]) -> str:
    header = (
        f"{'task':<20} {'budget':>6} {'FLOPs':>6} {'latency ms':>10} {'accuracy (s.e.)':>16} "
        f"{'features':>8} {'taps':>4} {'fit s':>6}"
    )
    lines = [header, "-" * len(header)]
    for f in frontiers:
        for p in f.points:
            lines.append(
                f"{f.task:<20} {p.budget:>6g} {p.flops_share:>6.1%} {p.latency_ms:>10.2f} "
                f"{p.accuracy:>8.3f} ({p.standard_error:.3f}) {p.n_features:>8} {p.n_taps:>4} "
                f"{p.fit_seconds:>6.0f}"
            )
        lines.append(
            f"{f.task:<20} {'probe':>6} {f.linear_probe_flops_share:>6.1%} {'':>10} "
            f"{f.linear_probe:>8.3f} ({f.linear_probe_standard_error:.3f})"
        )
    return "\n".join(lines)


def plot(frontiers: list[TaskFrontier], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.2 * len(frontiers), 3.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(frontiers), squeeze=False)[0]
    for ax, f in zip(axes, frontiers, strict=True):
        share = [p.flops_share for p in f.points]
        acc = [p.accuracy for p in f.points]
        se = [p.standard_error for p in f.points]
        ax.errorbar(share, acc, yerr=se, marker="o", capsize=3, label="Head2Toe")
        for p in f.points:
            ax.annotate(f"{p.latency_ms:.1f} ms", (p.flops_share, p.accuracy), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))  # fmt: skip
        ax.errorbar(
            [f.linear_probe_flops_share],
            [f.linear_probe],
            yerr=[f.linear_probe_standard_error],
            marker="s",
            color="grey",
            capsize=3,
            label="linear probe",
        )
        ax.set_title(f.task, fontsize=9)
        ax.set_xlabel("share of the backbone's FLOPs")
        ax.set_xlim(0, 1.05)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7, loc="lower right")
    figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=110)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="bench_tasks' quick settings")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="only these tasks")
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    parser.add_argument("--seed", type=int, help="the data draws and the folds")
    parser.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    parser.add_argument("--output-dir", type=Path, default=Path("skh2t_results/budget"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = QUICK if args.quick else Settings()
    if args.seed is not None:
        settings = replace(settings, seed=args.seed)
    if 1.0 not in args.budgets:
        raise SystemExit("--budgets must include 1 (the comparison with the linear probe)")
    names = args.tasks or (QUICK_TASKS if args.quick else list(TASKS))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {settings}", flush=True)
    started = time.perf_counter()
    frontiers = []
    with blas_threads(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name in names:
            frontiers.append(frontier(TASKS[name](settings), settings, tuple(args.budgets)))
    print()
    print(format_table(frontiers))
    print(f"total {time.perf_counter() - started:.0f} s")
    payload = {"settings": asdict(settings), "tasks": [asdict(f) for f in frontiers]}
    (args.output_dir / "budget.json").write_text(json.dumps(payload, indent=2) + "\n")
    title = (
        f"Head2Toe under a compute budget: Lite0 at {settings.image_size} px, "
        f"{settings.n_train} training images, seed {settings.seed}"
    )
    plot(frontiers, args.output_dir / "budget_frontier.png", title)
    print(f"wrote {args.output_dir / 'budget.json'} and {args.output_dir / 'budget_frontier.png'}")


if __name__ == "__main__":
    main()
