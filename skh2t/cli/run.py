"""``skh2t run``: the Head2Toe protocol (VTAB-1k style) on a data set, against two baselines."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import joblib
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skh2t import Head2ToeClassifier
from skh2t.cli import options
from skh2t.cli.data import (
    LabelledImages,
    add_train_test_options,
    check_readable,
    data_summary,
    load_train_test,
)
from skh2t.cli.errors import UsageError, usage_errors
from skh2t.cli.extraction import tap_table
from skh2t.cli.many_images import (
    Selection,
    add_many_images_options,
    check_many_images,
    disk_space_errors,
    many_images_params,
)
from skh2t.cli.plot import plot_kept_per_tap
from skh2t.cli.progress import Progress
from skh2t.cli.report import cv_rows, format_params, versions, write_json
from skh2t.cli.warned import hidden_warnings
from skh2t.output_files import written_whole
from skh2t.protocol import HEAD2TOE, Comparison, MethodResult, compare_methods

DEFAULTS: dict[str, Any] = {
    "n_train": 1000,
    "folds": 5,
    "target_sizes": [1024, 2048],
    "alpha_fractions": [0.1, 0.03, 0.01],
    "keep_fractions": [0.02, 0.05, 0.1, 0.2],
    "Cs": [1.0, 10.0, 100.0],
    "n_jobs": -1,
}
RESULTS_JSON = "results.json"
PLOT_PNG = "kept_per_tap.png"
MODEL_FILE = "model.joblib"

DESCRIPTION = """\
The Head2Toe protocol on a data set and a backbone (VTAB-1k style): draw
--n-train class-balanced training images; extract their features for all
target sizes in one forward pass per image; choose the hyper-parameters of
three methods by stratified k-fold cross-validation on those images (the same
folds for all); refit each on all training images; report test accuracy.
Methods: an L2 linear probe on the last layer (the pre-logits tap), an L2
probe on all intermediate features, and Head2Toe (skh2t.Head2ToeClassifier:
group lasso, keep the top features, refit). In Python: skh2t.compare_methods.

Writes results.json (configuration, every cross-validation score, timings,
versions), kept_per_tap.png (which depths Head2Toe chose) and model.joblib (the
fitted Head2ToeClassifier, for `skh2t predict`) to --output-dir.

For many images (--n-train all): --selection-samples N runs the probes and
Head2Toe's selection on a stratified subsample of N of them and refits
Head2Toe's head on all; --feature-store DIR keeps the training features on
disk instead of in memory.

Without arguments: Fashion-MNIST, EfficientNet-Lite0 with its offline ImageNet
weights at 64 px, 1000 training images, the 10k test images (its wall time:
docs/benchmarks.rst, "skh2t run")."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``skh2t run``."""
    parser = subparsers.add_parser(
        "run",
        help="cross-validated Head2Toe vs linear probes on a data set; table, JSON and plot",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_test_options(
        parser,
        n_train=DEFAULTS["n_train"],
        random_state_help="seed of the draws and folds (default: 0)",
        n_train_all=True,
    )
    options.add_backbone_options(parser, target_size=False)
    _add_grid_options(parser)
    add_many_images_options(parser)
    _add_output_options(parser)
    parser.set_defaults(handler=run)


def _add_grid_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model selection (lists are comma-separated)")
    fractions = options.comma_list(options.fraction)
    group.add_argument(
        "--folds",
        type=options.positive_int,
        default=DEFAULTS["folds"],
        metavar="K",
        help="stratified cross-validation folds (default: %(default)s)",
    )
    group.add_argument(
        "--target-sizes",
        type=options.comma_list(options.positive_int),
        default=DEFAULTS["target_sizes"],
        metavar="T[,T...]",
        help="Head2Toe target sizes per tap (default: 1024,2048)",
    )
    group.add_argument(
        "--alpha-fractions",
        type=fractions,
        default=DEFAULTS["alpha_fractions"],
        metavar="A[,A...]",
        help="group-lasso strengths, as fractions of each fold's alpha_max "
        "(default: 0.1,0.03,0.01)",
    )
    group.add_argument(
        "--keep-fractions",
        type=fractions,
        default=DEFAULTS["keep_fractions"],
        metavar="F[,F...]",
        help="fractions of the features Head2Toe keeps (default: 0.02,0.05,0.1,0.2)",
    )
    group.add_argument(
        "--cs",
        type=options.comma_list(options.positive_float),
        default=DEFAULTS["Cs"],
        dest="Cs",
        metavar="C[,C...]",
        help="inverse L2 strengths C of the two L2 probes (default: 1,10,100)",
    )
    options.add_refit_option(group)
    group.add_argument(
        "--n-jobs",
        type=options.n_jobs_value,
        default=DEFAULTS["n_jobs"],
        metavar="N",
        help="processes for the cross-validations (one fold and target size per task; the "
        "scores do not depend on it); -1: all cores (default: %(default)s)",
    )
    group.add_argument(
        "--max-iter",
        type=options.positive_int,
        default=5000,
        metavar="N",
        help="group-lasso solver iterations (default: %(default)s)",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output-dir",
        default="skh2t_results",
        metavar="DIR",
        help="where results.json, kept_per_tap.png and model.joblib go (default: %(default)s)",
    )
    group.add_argument(
        "--save-model",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="save the fitted Head2ToeClassifier as model.joblib (default: yes)",
    )
    options.add_quiet_option(parser)


def run(args: argparse.Namespace) -> int:
    """Run the protocol; print the table; write the JSON, the plot and the model."""
    started = time.perf_counter()
    progress = Progress(not args.quiet)
    options.check_backbone(args)
    with usage_errors(OSError, context="--output-dir"):
        os.makedirs(args.output_dir, exist_ok=True)
    outputs = [RESULTS_JSON, PLOT_PNG, *([MODEL_FILE] if args.save_model else [])]
    for name in outputs:  # before the work, not after it
        options.check_output_file(os.path.join(args.output_dir, name), "--output-dir")
    train, test = load_train_test(args)
    _check_folds(train, args.folds)
    selection = check_many_images(args, train.target, args.folds)
    check_readable(train.images)
    check_readable(test.images)
    progress.message(_plan(args, train, selection))
    with hidden_warnings(ConvergenceWarning), disk_space_errors():  # warnings: counted below
        comparison = compare_methods(
            _head2toe(args),
            train.images,
            train.labels,
            X_test=test.images,
            y_test=test.labels,
            Cs=args.Cs,
            verbose=int(progress.enabled),
        )
    _print_summary(comparison)
    payload = _payload(args, train, test, comparison)
    payload["selection"] = selection.summary(args.selection_samples)
    payload["timings"] = {
        "head2toe_fit_seconds": comparison.times.head2toe_fit,
        "probes_seconds": comparison.times.probes,
        "test_seconds": comparison.times.test,
        "total_seconds": time.perf_counter() - started,
    }
    _write_outputs(args, payload, comparison)
    return 0


def _head2toe(args: argparse.Namespace) -> Head2ToeClassifier:
    """The Head2Toe estimator of the arguments (its folds: stratified, shuffled, seeded)."""
    return Head2ToeClassifier(
        **options.backbone_params(args),
        target_sizes=sorted(args.target_sizes),
        alpha_fractions=args.alpha_fractions,
        keep_fractions=args.keep_fractions,
        renormalize_kept=args.renormalize_kept,
        cv=args.folds,
        random_state=args.random_state,
        max_iter=args.max_iter,
        n_jobs=args.n_jobs,
        **many_images_params(args),
    )


def _plan(args: argparse.Namespace, train: LabelledImages, selection: Selection) -> str:
    sizes = ", ".join(map(str, sorted(args.target_sizes)))
    plan = (
        f"Head2Toe and two linear probes on the same {args.folds} folds: features of "
        f"{len(train)} training images for target sizes {sizes} (one pass)"
    )
    if selection.rows is None:
        return plan
    return (
        f"{plan}; the probes and Head2Toe's selection on {len(selection)} of them, "
        "Head2Toe's head refitted on all"
    )


def _check_folds(train: LabelledImages, n_folds: int) -> None:
    if n_folds < 2:
        raise UsageError("--folds must be at least 2")
    smallest = int(np.bincount(train.target).min())
    if smallest < n_folds:
        raise UsageError(
            f"--folds {n_folds} needs at least {n_folds} training images per class; "
            f"--n-train {len(train)} gives {smallest} for some class"
        )


def _print_summary(comparison: Comparison) -> None:
    print(comparison.table())
    print()
    for result in comparison.results:
        print(f"{result.method}: {format_params(result.params)}")
        if result.n_not_converged:
            print(f"  note: {result.n_not_converged} fit(s) stopped at their iteration limit")
    sys.stdout.flush()


def _payload(
    args: argparse.Namespace,
    train: LabelledImages,
    test: LabelledImages,
    comparison: Comparison,
) -> dict[str, Any]:
    config = {
        key: value
        for key, value in vars(args).items()
        if key not in ("handler", "argv") and not key.startswith("_")
    }
    return {
        "command": "skh2t run",
        "argv": args.argv,
        "config": config,
        "data": data_summary(train, test),
        "features": {
            str(T): {"n_features": t.taps_[-1].stop, "taps": tap_table(t)}
            for T, t in comparison.transformers.items()
        },
        "methods": {r.method: _method_summary(r) for r in comparison.results},
        "head2toe_kept_per_tap": comparison.kept_per_tap(),
        "versions": versions(),
    }


def _method_summary(result: MethodResult) -> dict[str, Any]:
    return {
        "params": result.params,
        "cv_accuracy": result.cv_accuracy,
        "test_accuracy": result.test_accuracy,
        "n_features": result.n_features,
        "fit_seconds": result.fit_seconds,
        "cv_seconds": result.cv_seconds,
        "n_not_converged": result.n_not_converged,
        "cv_results": cv_rows(result.cv_results),
    }


def _write_outputs(args: argparse.Namespace, payload: dict[str, Any], comparison: Comparison):
    json_path = os.path.join(args.output_dir, RESULTS_JSON)
    plot_path = os.path.join(args.output_dir, PLOT_PNG)
    rows = payload["head2toe_kept_per_tap"]
    plot_kept_per_tap(
        [row["tap"] for row in rows],
        np.array([row["kept"] for row in rows]),
        np.array([row["n_features"] for row in rows]),
        plot_path,
        tap_costs=np.array([row["cost"] for row in rows]),
        title=_plot_title(args, comparison[HEAD2TOE], sum(row["n_features"] for row in rows)),
    )
    written = [json_path, plot_path]
    if args.save_model:
        model_path = os.path.join(args.output_dir, MODEL_FILE)
        with written_whole(model_path) as part:
            joblib.dump(comparison.head2toe, part)
        written.append(model_path)
        payload["model_file"] = model_path
    write_json(json_path, payload)
    print("\nwrote " + ", ".join(written))


def _plot_title(args: argparse.Namespace, h2t: MethodResult, n_features: int) -> str:
    params = h2t.params
    budget = "" if args.compute_budget is None else f", compute budget {args.compute_budget:g}"
    return (
        f"Head2Toe on {args.dataset}, {args.backbone} at {args.image_size} px{budget}: kept "
        f"features per tap\n{h2t.n_features} of {n_features} kept (target size "
        f"{params['target_size']}, alpha {params['alpha_fraction']:g} x alpha_max, keep fraction "
        f"{params['keep_fraction']:g}); test accuracy {h2t.test_accuracy:.4f}"
    )
