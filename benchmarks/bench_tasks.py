"""When does Head2Toe help? A VTAB-1k style task suite and the domain-affinity figure.

Every task gets the VTAB-1k protocol: ``--n-train`` training images (1000),
hyper-parameters chosen on the **same** stratified folds of them for every
method, a refit on all of them, and the accuracy on ``--n-test`` other images.
EfficientNet-Lite0 with its offline ImageNet weights, images resized to
``--image-size`` (64 px). Methods:

- ``linear probe``: L2 logistic regression on the pre-logits tap
  (:func:`skh2t.probes.l2_probe_cv`, ``C`` by cross-validation);
- ``all taps + L2``: the same on every intermediate feature, ``(target size,
  C)`` by cross-validation;
- ``Head2Toe``: :class:`skh2t.Head2ToeClassifier`, ``(target size, alpha
  fraction, keep fraction)`` by cross-validation (``skh2t run``'s grid);
- ``from scratch``: the same architecture, randomly initialised, trained on
  the training images alone (:class:`skh2t.finetune.FineTuneClassifier` with
  ``weights=None``, ``probe_epochs=0``; AdamW, the settings printed; no
  hyper-parameter search), to measure each task's **domain affinity** (the
  Head2Toe paper's Eq. 1): linear-probe accuracy minus from-scratch accuracy;
- ``fine-tune``: prepared-head fine-tuning of the pretrained network
  (:class:`~skh2t.finetune.FineTuneClassifier`: 5 probing epochs, then
  ``finetune_epochs`` epochs of AdamW at 1e-4), for reference.

Tasks: Fashion-MNIST (Debian's ``dataset-fashion-mnist``), scikit-learn's 8x8
digits (upscaled by the backbone's resize; the 797 images not drawn for
training are the test set), the generated structured tasks of
:mod:`skh2t.datasets` (dSprites-style location and orientation, CLEVR-style
count and closest-object distance), and any ``--folder DIR`` of your own
images (one sub-folder per class; the test images are drawn from the rest).

Printed: one row per task (test accuracy of every method, features used,
seconds), the mean row, and the Pearson correlation between domain affinity
and the gain of Head2Toe over the linear probe (the paper: -0.75 on VTAB-1k).
Standard errors are over the test images (binomial; the gain's is paired):
one seed (``--seed``) draws the data, the folds and the initialisations.
Written to ``--output-dir``: ``tasks.json`` and ``affinity.png`` (gain
against affinity, one point per task).

Run: ``python benchmarks/bench_tasks.py`` (52 minutes on 2 idle CPU cores)
or ``--quick`` (4 smaller tasks and a smaller grid: 6 minutes);
``--replot tasks.json`` redraws the figure of a saved run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from skh2t import Head2ToeClassifier, MethodResult, compare_methods
from skh2t.datasets import (
    load_fashion_mnist,
    load_image_folder,
    make_scenes,
    make_sprites,
    read_images,
    stratified_subsample,
)
from skh2t.finetune import FineTuneClassifier
from skh2t.protocol import ALL_TAPS as PROTOCOL_ALL_TAPS
from skh2t.protocol import HEAD2TOE as PROTOCOL_HEAD2TOE
from skh2t.protocol import LAST_LAYER
from skh2t.threads import blas_threads

BACKBONE = "tf_efficientnet_lite0"
LINEAR = "linear probe"
ALL_TAPS = "all taps + L2"
HEAD2TOE = "Head2Toe"
SCRATCH = "from scratch"
FINE_TUNE = "fine-tune"
METHODS = (LINEAR, ALL_TAPS, HEAD2TOE, SCRATCH, FINE_TUNE)
N_JOBS = -1  # cross-validation paths in 2 processes on 2 cores; the scores do not depend on it


@dataclass(frozen=True)
class Settings:
    """Everything that decides the numbers; printed and written with them."""

    n_train: int = 1000
    n_test: int = 2000
    image_size: int = 64
    folds: int = 5
    target_sizes: tuple[int, ...] = (1024, 2048)
    alpha_fractions: tuple[float, ...] = (0.1, 0.03, 0.01)
    keep_fractions: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    Cs: tuple[float, ...] = (1.0, 10.0, 100.0)
    scratch_epochs: int = 30
    scratch_lr: float = 3e-3
    scratch_weight_decay: float = 0.05
    scratch_batch_size: int = 32
    finetune_probe_epochs: int = 5
    finetune_epochs: int = 10
    seed: int = 0


QUICK = Settings(
    n_train=500,
    n_test=1000,
    folds=3,
    target_sizes=(1024,),
    alpha_fractions=(0.1, 0.01),
    keep_fractions=(0.05, 0.2),
    scratch_epochs=10,
    finetune_epochs=3,
)


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "natural", "structured" or "folder"
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


@dataclass
class Score:
    correct: np.ndarray  # per test image: was it classified right?
    n_features: int
    seconds: float
    params: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    @property
    def standard_error(self) -> float:
        """Binomial standard error of the test accuracy."""
        return float(np.std(self.correct) / np.sqrt(len(self.correct)))

    def summary(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "standard_error": self.standard_error,
            "n_features": self.n_features,
            "seconds": self.seconds,
            "params": self.params,
        }


@dataclass
class TaskResult:
    task: str
    kind: str
    n_classes: int
    n_train: int
    n_test: int
    scores: dict[str, Score]
    test_features_seconds: float

    @property
    def affinity(self) -> float:
        """Domain affinity (Head2Toe, Eq. 1): linear probe minus from scratch."""
        return self.scores[LINEAR].accuracy - self.scores[SCRATCH].accuracy

    @property
    def gain(self) -> float:
        """Head2Toe minus the linear probe."""
        return self.scores[HEAD2TOE].accuracy - self.scores[LINEAR].accuracy

    @property
    def gain_standard_error(self) -> float:
        """Standard error of the gain, paired over the test images."""
        difference = self.scores[HEAD2TOE].correct.astype(float) - self.scores[LINEAR].correct
        return float(np.std(difference, ddof=1) / np.sqrt(len(difference)))

    def summary(self) -> dict:
        return {
            "task": self.task,
            "kind": self.kind,
            "n_classes": self.n_classes,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "test_features_seconds": self.test_features_seconds,
            "affinity": self.affinity,
            "gain": self.gain,
            "gain_standard_error": self.gain_standard_error,
            "scores": {method: score.summary() for method, score in self.scores.items()},
        }


# ---------------------------------------------------------------- tasks


def split_generated(images: np.ndarray, target: np.ndarray, n_train: int) -> tuple:
    return images[:n_train], target[:n_train], images[n_train:], target[n_train:]


def generated_task(make: Callable, task: str) -> Callable[[Settings], Task]:
    def load(settings: Settings) -> Task:
        images, target = make(
            settings.n_train + settings.n_test,
            task=task,
            random_state=settings.seed,
            return_X_y=True,
        )
        name = f"{make.__name__.removeprefix('make_')}_{task}"
        return Task(name, "structured", *split_generated(images, target, settings.n_train))

    return load


def fashion_mnist(settings: Settings) -> Task:
    train = load_fashion_mnist(subset="train")
    test = load_fashion_mnist(subset="test")
    seed = settings.seed
    rows = stratified_subsample(train.target, n_samples=settings.n_train, random_state=seed)
    test_rows = stratified_subsample(test.target, n_samples=settings.n_test, random_state=seed)
    return Task(
        "fashion_mnist",
        "natural",
        train.images[rows],
        train.target[rows],
        test.images[test_rows],
        test.target[test_rows],
    )


def digits(settings: Settings) -> Task:
    data = load_digits()
    images = np.rint(data.images * (255 / 16)).astype(np.uint8)
    return held_out_task("digits", "natural", images, data.target, settings)


def held_out_task(
    name: str, kind: str, images: np.ndarray, target: np.ndarray, settings: Settings
) -> Task:
    train, test = held_out_rows(target, settings)
    return Task(name, kind, images[train], target[train], images[test], target[test])


def held_out_rows(target: np.ndarray, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """A training draw (class-balanced) and up to ``n_test`` test rows from the rest."""
    train = stratified_subsample(target, n_samples=settings.n_train, random_state=settings.seed)
    rest = np.setdiff1d(np.arange(len(target)), train)
    rng = np.random.default_rng(settings.seed)
    return train, np.sort(rng.permutation(rest)[: settings.n_test])


def folder_task(root: str) -> Callable[[Settings], Task]:
    def load(settings: Settings) -> Task:
        data = load_image_folder(root)
        target = np.asarray(data.target)
        train, test = held_out_rows(target, settings)

        def read(rows: np.ndarray) -> np.ndarray:  # only the drawn files are decoded
            return read_images(np.asarray(data.filenames)[rows], size=settings.image_size)

        name = os.path.basename(os.path.normpath(root))
        return Task(name, "folder", read(train), target[train], read(test), target[test])

    return load


TASKS: dict[str, Callable[[Settings], Task]] = {
    "fashion_mnist": fashion_mnist,
    "digits": digits,
    "sprites_location": generated_task(make_sprites, "location"),
    "sprites_orientation": generated_task(make_sprites, "orientation"),
    "scenes_count": generated_task(make_scenes, "count"),
    "scenes_distance": generated_task(make_scenes, "distance"),
}
QUICK_TASKS = ("fashion_mnist", "digits", "sprites_location", "scenes_count")


# ---------------------------------------------------------------- methods


def head2toe_estimator(settings: Settings, **params) -> Head2ToeClassifier:
    """Head2Toe with the settings' backbone, image size, grid and folds (and ``params``)."""
    return Head2ToeClassifier(
        backbone=BACKBONE,
        image_size=settings.image_size,
        target_sizes=settings.target_sizes,
        alpha_fractions=settings.alpha_fractions,
        keep_fractions=settings.keep_fractions,
        cv=settings.folds,
        n_jobs=N_JOBS,
        random_state=settings.seed,
        **params,
    )


def probes_and_head2toe(task: Task, settings: Settings) -> tuple[dict[str, Score], float]:
    """The three probes on the same folds (:func:`skh2t.compare_methods`); returns their
    scores and the seconds of the test features."""
    head2toe = head2toe_estimator(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # counted: n_not_converged
        comparison = compare_methods(
            head2toe,
            task.X_train,
            task.y_train,
            X_test=task.X_test,
            y_test=task.y_test,
            Cs=settings.Cs,
        )
    h2t_seconds = comparison.times.head2toe_fit
    scores = {
        LINEAR: probe_score(comparison[LAST_LAYER], task),
        ALL_TAPS: probe_score(comparison[PROTOCOL_ALL_TAPS], task),
    }
    result = comparison[PROTOCOL_HEAD2TOE]
    scores[HEAD2TOE] = Score(
        correct=result.test_predictions == task.y_test,
        n_features=result.n_features,
        seconds=h2t_seconds,
        params={
            **comparison.head2toe.best_params_,
            "n_available": result.n_available,
            "n_not_converged": result.n_not_converged,
        },
    )
    return scores, comparison.times.test


def probe_score(result: MethodResult, task: Task) -> Score:
    return Score(
        correct=result.test_predictions == task.y_test,
        n_features=result.n_features,
        seconds=result.cv_seconds + result.fit_seconds,
        params={"target_size": result.pooling, "C": result.params["C"]},
    )


def from_scratch(task: Task, settings: Settings) -> Score:
    model = FineTuneClassifier(
        backbone=BACKBONE,
        weights=None,
        image_size=settings.image_size,
        probe_epochs=0,
        epochs=settings.scratch_epochs,
        lr=settings.scratch_lr,
        weight_decay=settings.scratch_weight_decay,
        batch_size=settings.scratch_batch_size,
        freeze_batch_norm=False,  # random statistics are no prior to keep
        validation_fraction=None,
        random_state=settings.seed,
    )
    return network_score(model, task)


def fine_tuned(task: Task, settings: Settings) -> Score:
    """Prepared-head fine-tuning of the pretrained network (FineTuneClassifier's defaults)."""
    model = FineTuneClassifier(
        backbone=BACKBONE,
        image_size=settings.image_size,
        probe_epochs=settings.finetune_probe_epochs,
        epochs=settings.finetune_epochs,
        validation_fraction=None,
        random_state=settings.seed,
    )
    return network_score(model, task)


def network_score(model: FineTuneClassifier, task: Task) -> Score:
    start = time.perf_counter()
    model.fit(task.X_train, task.y_train)
    seconds = time.perf_counter() - start
    return Score(
        correct=model.predict(task.X_test) == task.y_test,
        n_features=model.n_features_,
        seconds=seconds,
        params={"final_train_accuracy": float(model.history_["train_accuracy"][-1])},
    )


def run_task(load: Callable[[Settings], Task], settings: Settings) -> TaskResult:
    task = load(settings)
    scores, test_features_seconds = probes_and_head2toe(task, settings)
    scores[SCRATCH] = from_scratch(task, settings)
    scores[FINE_TUNE] = fine_tuned(task, settings)
    return TaskResult(
        task=task.name,
        kind=task.kind,
        n_classes=len(np.unique(task.y_train)),
        n_train=len(task.y_train),
        n_test=len(task.y_test),
        scores=scores,
        test_features_seconds=test_features_seconds,
    )


# ---------------------------------------------------------------- report


def feature_share(result: TaskResult) -> float:
    """Head2Toe's features as a fraction of those of the all-taps probe."""
    return result.scores[HEAD2TOE].n_features / result.scores[ALL_TAPS].n_features


def format_table(results: list[TaskResult]) -> str:
    header = f"{'task':<20} {'classes':>7} {'n test':>6}"
    header += "".join(f" {method:>14}" for method in METHODS)
    header += f" {'H2T features':>16} {'affinity':>8} {'gain (s.e.)':>15} {'seconds':>7}"
    lines = [header, "-" * len(header)]
    for result in results:
        row = f"{result.task:<20} {result.n_classes:>7} {result.n_test:>6}"
        row += "".join(f" {result.scores[m].accuracy:>14.3f}" for m in METHODS)
        h2t = result.scores[HEAD2TOE]
        row += f" {h2t.n_features:>8} ({feature_share(result):>4.1%})"
        seconds = sum(score.seconds for score in result.scores.values())
        gain = f"{result.gain:+.3f} ({result.gain_standard_error:.3f})"
        row += f" {result.affinity:>8.3f} {gain:>15} {seconds:>7.0f}"
        lines.append(row)
    lines.append("-" * len(header))
    mean = {m: np.mean([r.scores[m].accuracy for r in results]) for m in METHODS}
    row = f"{'mean':<20} {'':>7} {'':>6}" + "".join(f" {mean[m]:>14.3f}" for m in METHODS)
    row += f" {'':>8} ({np.mean([feature_share(r) for r in results]):>4.1%})"
    row += f" {np.mean([r.affinity for r in results]):>8.3f}"
    row += f" {np.mean([r.gain for r in results]):>+15.3f}"
    lines.append(row)
    return "\n".join(lines)


@dataclass(frozen=True)
class AffinityPoint:
    """One task of the figure (from a run, or from its ``tasks.json``)."""

    task: str
    kind: str
    affinity: float
    gain: float
    gain_standard_error: float

    @classmethod
    def of(cls, record: dict) -> AffinityPoint:
        return cls(*(record[name] for name in cls.__dataclass_fields__))


def correlation(points: list[AffinityPoint]) -> tuple[float, float]:
    """Pearson r between domain affinity and Head2Toe's gain, and its two-sided p-value."""
    if len(points) < 3:
        return float("nan"), float("nan")
    test = stats.pearsonr([p.affinity for p in points], [p.gain for p in points])
    return float(test.statistic), float(test.pvalue)


def plot_affinity(points: list[AffinityPoint], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    affinity = np.array([p.affinity for p in points])
    gain = np.array([p.gain for p in points])
    figure, axes = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    colours = {"natural": "tab:blue", "structured": "tab:red", "folder": "tab:green"}
    middle = (affinity.min() + affinity.max()) / 2
    for point in points:
        axes.errorbar(
            point.affinity,
            point.gain,
            yerr=point.gain_standard_error,
            fmt="o",
            color=colours[point.kind],
            capsize=3,
        )
        right = point.affinity > middle  # labels of the right half go left of their point
        axes.annotate(
            point.task,
            (point.affinity, point.gain),
            textcoords="offset points",
            xytext=(-5 if right else 5, 5),
            ha="right" if right else "left",
            fontsize=8,
        )
    if len(points) >= 2:
        slope, intercept = np.polyfit(affinity, gain, 1)
        xs = np.linspace(affinity.min(), affinity.max(), 2)
        axes.plot(xs, slope * xs + intercept, "--", color="grey", linewidth=1)
    axes.axhline(0, color="black", linewidth=0.5)
    axes.set_xlabel("domain affinity: linear probe - from scratch (test accuracy)")
    axes.set_ylabel("gain: Head2Toe - linear probe (± s.e.)")
    r, p = correlation(points)
    axes.set_title(f"{title}\nPearson r = {r:.2f} (p = {p:.2g}, {len(points)} tasks)", fontsize=9)
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=c, label=k)
        for k, c in colours.items()
        if any(p.kind == k for p in points)
    ]
    axes.legend(handles=handles, fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_title(settings: Settings) -> str:
    return f"{BACKBONE}, {settings.image_size} px, {settings.n_train} training images"


def replot(path: Path) -> None:
    """Redraw ``affinity.png`` next to a saved ``tasks.json``, without running anything."""
    payload = json.loads(path.read_text())
    points = [AffinityPoint.of(record) for record in payload["tasks"]]
    settings = Settings(**payload["settings"])
    plot_affinity(points, path.with_name("affinity.png"), plot_title(settings))
    print(f"wrote {path.with_name('affinity.png')}")


def write_json(results: list[TaskResult], settings: Settings, path: Path) -> None:
    r, p = correlation([AffinityPoint.of(result.summary()) for result in results])
    payload = {
        "settings": asdict(settings),
        "pearson_r": r,
        "pearson_p": p,
        "tasks": [result.summary() for result in results],
    }
    path.write_text(json.dumps(payload, indent=2))


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 smaller tasks, a smaller grid")
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="only these tasks")
    parser.add_argument("--folder", nargs="+", default=[], help="image folders to add as tasks")
    parser.add_argument("--seed", type=int, help="the data draws, folds and initialisations")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--output-dir", type=Path, default=Path("skh2t_results/tasks"))
    parser.add_argument("--replot", type=Path, metavar="TASKS_JSON", help="only redraw the figure")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.replot:
        replot(args.replot)
        return
    settings = QUICK if args.quick else Settings()
    if args.seed is not None:
        settings = replace(settings, seed=args.seed)
    names = args.tasks or (QUICK_TASKS if args.quick else list(TASKS))
    loaders = [TASKS[name] for name in names] + [folder_task(root) for root in args.folder]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {settings}", flush=True)
    results = []
    started = time.perf_counter()
    with blas_threads(args.threads):
        for load in loaders:
            results.append(run_task(load, settings))
            last = results[-1]
            print(
                f"{last.task}: "
                + ", ".join(
                    f"{m} {last.scores[m].accuracy:.3f} ({last.scores[m].seconds:.0f} s)"
                    for m in METHODS
                )
                + f" ({time.perf_counter() - started:.0f} s so far)",
                flush=True,
            )
    print()
    print(format_table(results))
    points = [AffinityPoint.of(result.summary()) for result in results]
    r, p = correlation(points)
    print(f"\nPearson r(affinity, gain) = {r:.3f} (p = {p:.3g}, {len(results)} tasks)")
    print(f"total {time.perf_counter() - started:.0f} s")
    write_json(results, settings, args.output_dir / "tasks.json")
    plot_affinity(points, args.output_dir / "affinity.png", plot_title(settings))
    print(f"wrote {args.output_dir / 'tasks.json'} and {args.output_dir / 'affinity.png'}")


if __name__ == "__main__":
    main()
