"""The energy sweep of Ren et al. (ICLR 2023): feature drift and accuracy against the head's energy.

The head's *energy* is its training loss and accuracy on the frozen features
when fine-tuning starts. The paper's finding: as the energy grows, the
Euclidean distance between the fine-tuned and the original features grows
and their cosine similarity falls, while their dot product and the features'
norm first grow and then fall; mild head probing beats both plain
fine-tuning (a random head) and LP-FT (a converged probe).

EfficientNet-Lite0 with its offline ImageNet weights fine-tuned on a
Fashion-MNIST subset (``--n-train`` training images drawn per seed, 10 % of
them held out for validation and the drift; ``--n-test`` fixed test images;
``--image-size`` px; ``--epochs`` fine-tuning epochs). The energy is set
three ways, each a :class:`skh2t.finetune.FineTuneClassifier` parameter:

- ``probe_epochs`` from 0 (plain fine-tuning) to 64 (LP-FT, a converged probe);
- ``label_smoothing`` 0.1 and 0.3 of the probing loss, after 64 epochs;
- ``temperature`` 0.5 and 2 of the probing loss, after 64 epochs;

for each optimiser (AdamW and SGD, each at ``lr="auto"``) and seed. Then the
probing rules, with their cost: ``probe_epochs="auto"`` (one fine-tuning per
candidate of the default grid) against stopping the probe at a target energy
(``probe_target_accuracy=0.9``; ``probe_target_loss=0.5``; both targets were
fixed before the first run).

Printed: per optimiser, a table of every setting (means over the seeds with
their standard errors), the verdict on each of the paper's trends, the paired
differences between mild probing and both ends, and the rules' accuracy and
seconds. Written to ``--output-dir``: ``energy.json`` (every run) and
``energy_sweep.png``; ``--replot energy.json`` redraws the figure and the
tables of a saved run.

``--calibrate`` instead fine-tunes at several learning rates per optimiser
(``probe_epochs`` 0, 4 and 64, one seed) and prints the one with the best mean
validation accuracy: how the defaults of ``lr="auto"`` were chosen.

Run: ``python benchmarks/bench_energy.py`` (34 minutes on 2 idle CPU
cores with 3 seeds; ``--seeds 0`` for one, ``--quick`` for a 4-point sweep
with one seed and no rules, about 5 minutes).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from skh2t.datasets import load_fashion_mnist, stratified_subsample
from skh2t.finetune import DRIFT_METRICS, FineTuneClassifier

BACKBONE = "tf_efficientnet_lite0"
OPTIMIZERS = ("adamw", "sgd")
CONVERGED = 64  # probe_epochs of LP-FT and of the label-smoothing and temperature settings
PROBE_EPOCHS = (0, 1, 2, 4, 8, 16, CONVERGED)
LABEL_SMOOTHING = (0.1, 0.3)
TEMPERATURE = (0.5, 2.0)
RULES = {
    "auto": {"probe_epochs": "auto"},
    "target acc 0.9": {"probe_epochs": CONVERGED, "probe_target_accuracy": 0.9},
    "target loss 0.5": {"probe_epochs": CONVERGED, "probe_target_loss": 0.5},
}
CALIBRATION_LRS = {"adamw": (3e-5, 1e-4, 3e-4), "sgd": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)}
CALIBRATION_PROBES = (0, 4, CONVERGED)
MEASURES = (*DRIFT_METRICS, "test_accuracy")
LABELS = {
    "feature_distance": "Euclidean distance",
    "feature_cosine": "cosine similarity",
    "feature_dot": "dot product",
    "feature_norm": "feature norm",
    "test_accuracy": "test accuracy",
}


@dataclass(frozen=True)
class Setting:
    """One way of preparing the head: a name, its kind and its estimator parameters."""

    name: str
    kind: str  # "probe_epochs", "label_smoothing", "temperature" or "rule"
    params: dict = field(default_factory=dict)


@dataclass
class Run:
    """One fine-tuning: its setting, seed, energy, final drift, accuracies and cost."""

    optimizer: str
    lr: float
    setting: str
    kind: str
    seed: int
    probe_epochs: int
    probe_steps: int
    energy_loss: float
    energy_accuracy: float
    feature_distance: float
    feature_cosine: float
    feature_dot: float
    feature_norm: float
    val_accuracy: float
    test_accuracy: float
    seconds: float


def probing(n: int) -> Setting:
    """The setting that probes the head for ``n`` epochs."""
    return Setting(f"probe {n}", "probe_epochs", {"probe_epochs": n})


def sweep_settings(quick: bool) -> list[Setting]:
    """The energy settings: probing lengths, then label smoothing and temperature at 64 epochs."""
    if quick:
        return [probing(n) for n in (0, 2, 8, 64)]
    settings = [probing(n) for n in PROBE_EPOCHS]
    settings += [
        Setting(
            f"smoothing {s}", "label_smoothing", {"probe_epochs": CONVERGED, "label_smoothing": s}
        )
        for s in LABEL_SMOOTHING
    ]
    settings += [
        Setting(f"temperature {t}", "temperature", {"probe_epochs": CONVERGED, "temperature": t})
        for t in TEMPERATURE
    ]
    return settings


def load_data(args: argparse.Namespace, seed: int):
    """A stratified training draw per seed; one fixed stratified test subset."""
    train = load_fashion_mnist(subset="train")
    test = load_fashion_mnist(subset="test")
    rows = stratified_subsample(train.target, n_samples=args.n_train, random_state=seed)
    test_rows = stratified_subsample(test.target, n_samples=args.n_test, random_state=0)
    return train.images[rows], train.target[rows], test.images[test_rows], test.target[test_rows]


def fine_tune(args, data, optimizer: str, setting: Setting, seed: int, lr="auto") -> Run:
    """Fit one FineTuneClassifier and record its energy, final drift, accuracies and seconds."""
    X, y, X_test, y_test = data
    model = FineTuneClassifier(
        backbone=BACKBONE,
        image_size=args.image_size,
        epochs=args.epochs,
        optimizer=optimizer,
        lr=lr,
        random_state=seed,
        **setting.params,
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y)
    seconds = time.perf_counter() - start
    for warning in caught:
        print(f"    warning: {warning.message}")
    history = model.history_
    return Run(
        optimizer=optimizer,
        lr=model.lr_,
        setting=setting.name,
        kind=setting.kind,
        seed=seed,
        probe_epochs=model.probe_epochs_,
        probe_steps=model.probe_steps_,
        energy_loss=model.energy_["loss"],
        energy_accuracy=model.energy_["accuracy"],
        val_accuracy=history["val_accuracy"][-1],
        test_accuracy=model.score(X_test, y_test),
        seconds=seconds,
        **{key: history[key][-1] for key in DRIFT_METRICS},
    )


def report(run: Run) -> None:
    print(
        f"  {run.optimizer:<5} seed {run.seed} {run.setting:<16} energy {run.energy_loss:.3f}"
        f"/{run.energy_accuracy:.3f} dist {run.feature_distance:6.2f} cos "
        f"{run.feature_cosine:.3f} dot {run.feature_dot:7.2f} norm {run.feature_norm:6.2f} "
        f"val {run.val_accuracy:.3f} test {run.test_accuracy:.4f} ({run.seconds:.0f} s)",
        flush=True,
    )


# ------------------------------------------------------------------ statistics


def mean_and_error(values) -> tuple[float, float]:
    """The mean and its standard error (NaN error for one value)."""
    values = np.asarray(values, dtype=float)
    error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(error)


def runs_of(runs: list[Run], optimizer: str, setting: str) -> list[Run]:
    return sorted(
        (r for r in runs if r.optimizer == optimizer and r.setting == setting),
        key=lambda r: r.seed,
    )


def setting_names(runs: list[Run], optimizer: str, kinds: tuple[str, ...]) -> list[str]:
    return list(
        dict.fromkeys(r.setting for r in runs if r.optimizer == optimizer and r.kind in kinds)
    )


def summary(runs: list[Run], optimizer: str, setting: str, key: str) -> tuple[float, float]:
    return mean_and_error([getattr(r, key) for r in runs_of(runs, optimizer, setting)])


def paired_difference(runs: list[Run], optimizer: str, a: str, b: str) -> tuple[float, float]:
    """Mean and standard error over seeds of test accuracy of ``a`` minus that of ``b``."""
    by_seed_b = {r.seed: r.test_accuracy for r in runs_of(runs, optimizer, b)}
    differences = [
        r.test_accuracy - by_seed_b[r.seed]
        for r in runs_of(runs, optimizer, a)
        if r.seed in by_seed_b
    ]
    return mean_and_error(differences)


def trend_verdicts(runs: list[Run], optimizer: str) -> list[str]:
    """The paper's trend for each drift measure, tested on the means of every energy setting.

    Distance must rise and cosine similarity fall with the energy (Spearman
    correlation over the settings, p < 0.05); dot product and norm must peak
    inside the energy range: their largest mean is at neither the lowest- nor
    the highest-energy setting, and exceeds both by more than two standard
    errors of the difference.
    """
    names = setting_names(runs, optimizer, ("probe_epochs", "label_smoothing", "temperature"))
    energy = np.array([summary(runs, optimizer, n, "energy_loss")[0] for n in names])
    order = np.argsort(energy)
    lines = []
    for key, expected in zip(DRIFT_METRICS, ("rises", "falls", "peaks", "peaks"), strict=True):
        means, errors = (
            np.array([summary(runs, optimizer, n, key)[part] for n in names])[order]
            for part in (0, 1)
        )
        check = peak_verdict if expected == "peaks" else monotone_verdict
        lines.append(f"{LABELS[key]} {check(energy[order], means, errors, expected)}")
    return lines


def monotone_verdict(energy: np.ndarray, means: np.ndarray, errors, expected: str) -> str:
    rho, p = stats.spearmanr(energy, means)
    holds = (rho > 0 if expected == "rises" else rho < 0) and p < 0.05
    return (
        f"{expected} with the energy: Spearman rho {rho:+.2f} (p = {p:.3f}) -> "
        f"{'holds' if holds else 'does not hold'}"
    )


def peak_verdict(energy: np.ndarray, means: np.ndarray, errors: np.ndarray, _expected) -> str:
    peak = int(np.argmax(means))
    inside = 0 < peak < len(means) - 1
    margin = (
        min(
            (means[peak] - means[end])
            / np.hypot(np.nan_to_num(errors[peak]), np.nan_to_num(errors[end]))
            for end in (0, len(means) - 1)
        )
        if inside
        else 0.0
    )
    rho, _ = stats.spearmanr(energy, means)
    return (
        f"first rises then falls: peak {means[peak]:.2f} at energy {energy[peak]:.3f} "
        f"({'inside' if inside else 'at an end of'} the range {energy[0]:.3f}..{energy[-1]:.3f}), "
        f"{margin:.1f} standard errors above the nearer end; Spearman rho {rho:+.2f} -> "
        f"{'holds' if inside and margin > 2 else 'does not hold'}"
    )


# ----------------------------------------------------------------------- tables


def format_sweep(runs: list[Run], optimizer: str) -> str:
    columns = ("energy_loss", "energy_accuracy", *MEASURES, "seconds")
    header = "| setting | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for name in setting_names(
        runs, optimizer, ("probe_epochs", "label_smoothing", "temperature", "rule")
    ):
        cells = []
        for key in columns:
            mean, error = summary(runs, optimizer, name, key)
            digits = (
                0
                if key == "seconds"
                else 2
                if key in ("feature_distance", "feature_dot", "feature_norm")
                else 3
            )
            spread = "" if np.isnan(error) else f" ± {error:.{digits}f}"
            cells.append(f"{mean:.{digits}f}{spread}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_comparisons(runs: list[Run], optimizer: str) -> str:
    """Every setting between the two ends against plain fine-tuning and LP-FT, paired by seed."""
    plain, lpft = "probe 0", f"probe {CONVERGED}"
    lines = [f"test accuracy minus that of plain fine-tuning ({plain}) and of LP-FT ({lpft}):"]
    for name in setting_names(
        runs, optimizer, ("probe_epochs", "label_smoothing", "temperature", "rule")
    ):
        if name in (plain, lpft):
            continue
        (d_ft, e_ft), (d_lp, e_lp) = (
            paired_difference(runs, optimizer, name, b) for b in (plain, lpft)
        )
        beats = (
            "beats both"
            if d_ft - 2 * e_ft > 0 and d_lp - 2 * e_lp > 0
            else ("above both on the mean" if d_ft > 0 and d_lp > 0 else "not above both")
        )
        lines.append(
            f"  {name:<16} vs FT {100 * d_ft:+5.1f} ± {100 * e_ft:.1f} pts, vs LP-FT "
            f"{100 * d_lp:+5.1f} ± {100 * e_lp:.1f} pts -> {beats}"
        )
    return "\n".join(lines)


def format_costs(runs: list[Run]) -> str:
    """Seconds per fit of each target rule against ``probe_epochs="auto"``, per optimiser."""
    lines = []
    for optimizer in dict.fromkeys(r.optimizer for r in runs):
        auto = summary(runs, optimizer, "auto", "seconds")[0]
        for name in RULES:
            if name != "auto":
                cost = summary(runs, optimizer, name, "seconds")[0]
                lines.append(f"{optimizer} {name}: {auto / cost:.1f}x cheaper than auto")
    return "\n".join(lines)


def print_report(runs: list[Run]) -> None:
    for optimizer in dict.fromkeys(r.optimizer for r in runs):
        lr = next(r.lr for r in runs if r.optimizer == optimizer)
        seeds = sorted({r.seed for r in runs if r.optimizer == optimizer})
        print(f"\n== {optimizer}, lr {lr:g}, seeds {seeds} (mean ± standard error over the seeds)")
        print(format_sweep(runs, optimizer))
        if len(seeds) > 1:
            print("\n".join(trend_verdicts(runs, optimizer)))
            print(format_comparisons(runs, optimizer))
    if any(r.kind == "rule" for r in runs):
        print(format_costs(runs))


# ------------------------------------------------------------------------ figure


def plot(runs: list[Run], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    optimizers = list(dict.fromkeys(r.optimizer for r in runs))
    figure, axes = plt.subplots(
        len(optimizers),
        len(MEASURES),
        figsize=(3.3 * len(MEASURES), 3.0 * len(optimizers)),
        squeeze=False,
        constrained_layout=True,
    )
    styles = {
        "probe_epochs": ("o", "C0", "probe epochs"),
        "label_smoothing": ("s", "C1", "label smoothing (64 ep.)"),
        "temperature": ("^", "C2", "temperature (64 ep.)"),
        "rule": ("*", "C3", "probing rules"),
    }
    for row, optimizer in zip(axes, optimizers, strict=True):
        lr = next(r.lr for r in runs if r.optimizer == optimizer)
        for ax, key in zip(row, MEASURES, strict=True):
            for kind, (marker, colour, label) in styles.items():
                names = setting_names(runs, optimizer, (kind,))
                if not names:
                    continue
                x = [summary(runs, optimizer, n, "energy_loss") for n in names]
                y = [summary(runs, optimizer, n, key) for n in names]
                ax.errorbar(
                    [m for m, _ in x],
                    [m for m, _ in y],
                    xerr=[np.nan_to_num(e) for _, e in x],
                    yerr=[np.nan_to_num(e) for _, e in y],
                    fmt=marker + ("-" if kind == "probe_epochs" else ""),
                    color=colour,
                    label=label,
                    capsize=2,
                    markersize=5,
                    linewidth=1,
                )
                if kind == "probe_epochs" and key == MEASURES[0]:
                    for name, (xm, _), (ym, _) in zip(names, x, y, strict=True):
                        ax.annotate(
                            name.split()[-1],
                            (xm, ym),
                            fontsize=7,
                            xytext=(3, 3),
                            textcoords="offset points",
                        )
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("energy (training loss of the head)")
            ax.set_title(f"{LABELS[key]} ({optimizer}, lr {lr:g})", fontsize=9)
    axes[0, -1].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"Figure: {path}")


def plot_title(args: dict, seeds: list[int]) -> str:
    return (
        f"Final feature drift and test accuracy vs energy: {BACKBONE} {args['image_size']} px, "
        f"Fashion-MNIST {args['n_train']} images, {args['epochs']} fine-tuning epochs, "
        f"{len(seeds)} seeds (error bars: standard errors)"
    )


# -------------------------------------------------------------------------- main


def calibrate(args: argparse.Namespace) -> None:
    data = load_data(args, args.seeds[0])
    for optimizer in OPTIMIZERS:
        scores = {}
        for lr in CALIBRATION_LRS[optimizer]:
            runs = []
            for n in CALIBRATION_PROBES:
                run = fine_tune(args, data, optimizer, probing(n), args.seeds[0], lr=lr)
                report(run)
                runs.append(run)
            scores[lr] = float(np.mean([r.val_accuracy for r in runs]))
            print(
                f"{optimizer} lr {lr:g}: mean validation accuracy {scores[lr]:.3f}, mean test "
                f"{np.mean([r.test_accuracy for r in runs]):.3f}, mean cosine "
                f"{np.mean([r.feature_cosine for r in runs]):.3f}",
                flush=True,
            )
        print(
            f"==> {optimizer}: best mean validation accuracy at lr {max(scores, key=scores.get):g}"
        )


def sweep(args: argparse.Namespace) -> list[Run]:
    settings = sweep_settings(args.quick)
    if not args.quick:
        settings += [Setting(name, "rule", params) for name, params in RULES.items()]
    runs = []
    for seed in args.seeds:
        data = load_data(args, seed)
        for optimizer in OPTIMIZERS:
            for setting in settings:
                run = fine_tune(args, data, optimizer, setting, seed)
                report(run)
                runs.append(run)
    return runs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n-train", type=int, default=600)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--quick", action="store_true", help="4 probing lengths, one seed, no rules"
    )
    parser.add_argument("--calibrate", action="store_true", help="choose each optimiser's lr")
    parser.add_argument("--output-dir", type=Path, default=Path("skh2t_results"))
    parser.add_argument("--replot", type=Path, help="redraw the figure and tables of energy.json")
    args = parser.parse_args()
    if args.quick:
        args.seeds = args.seeds[:1]
    return args


def main() -> None:
    args = parse_args()
    if args.replot:
        saved = json.loads(args.replot.read_text())
        runs = [Run(**r) for r in saved["runs"]]
        print_report(runs)
        plot(
            runs,
            args.replot.with_name("energy_sweep.png"),
            plot_title(saved["args"], sorted({r.seed for r in runs})),
        )
        return
    print(
        f"Fashion-MNIST: {args.n_train} training images per seed, {args.n_test} test images, "
        f"{BACKBONE} at {args.image_size} px, {args.epochs} fine-tuning epochs, "
        f"{torch.get_num_threads()} torch threads",
        flush=True,
    )
    start = time.perf_counter()
    if args.calibrate:
        calibrate(args)
        print(f"Total wall time: {time.perf_counter() - start:.0f} s")
        return
    runs = sweep(args)
    print_report(runs)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    saved_args = {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()}
    (args.output_dir / "energy.json").write_text(
        json.dumps({"args": saved_args, "runs": [asdict(r) for r in runs]}, indent=1)
    )
    plot(runs, args.output_dir / "energy_sweep.png", plot_title(saved_args, args.seeds))
    print(f"Total wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
