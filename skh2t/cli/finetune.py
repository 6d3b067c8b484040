"""``skh2t finetune``: fine-tune a whole backbone after preparing its head, on a data set."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from skh2t.cli import options
from skh2t.cli.data import (
    LabelledImages,
    add_train_test_options,
    check_readable,
    data_summary,
    load_train_test,
)
from skh2t.cli.errors import UsageError, usage_errors
from skh2t.cli.progress import Progress
from skh2t.cli.report import versions, write_json
from skh2t.cli.warned import hidden_warnings
from skh2t.finetune import (
    DEFAULT_LR,
    FineTuneClassifier,
    drift_energy_figure,
    kept_feature_drift,
)
from skh2t.output_files import written_whole

N_TRAIN = 1000
# The options named after FineTuneClassifier's parameters have its defaults.
LIBRARY_DEFAULTS = FineTuneClassifier().get_params(deep=False)
PROBE_EPOCHS_GRID = tuple(LIBRARY_DEFAULTS["probe_epochs_grid"])
RESULTS_JSON = "results.json"
PLOT_PNG = "feature_drift.png"
MODEL_FILE = "model.joblib"
TEST_CHUNK = 500  # test images per prediction call

DESCRIPTION = f"""\
Fine-tune a whole pretrained backbone on a data set after preparing its task
head (skh2t.finetune.FineTuneClassifier; Ren et al., ICLR 2023): draw
--n-train class-balanced training images; train a linear head on the frozen
backbone's penultimate features (head probing) for --probe-epochs epochs, or
until its training accuracy or loss reaches a target; then fine-tune backbone
and head together for --epochs epochs. Reports the test accuracy, the head's
energy when fine-tuning started (its training loss and accuracy) and how far
the features moved (feature drift).

Each fine-tuning option sets the FineTuneClassifier parameter of the same
name, with the same default (--probe-epochs sets probe_epochs, --lr sets lr,
...), --random-state its random_state; its other parameters keep their
defaults.

Writes {RESULTS_JSON} (settings, test accuracy, energy, drift per epoch,
timings, versions), {PLOT_PNG} (the drift per epoch, titled with
the energy) and {MODEL_FILE} (the fitted FineTuneClassifier, for
`skh2t predict`) to --output-dir."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``skh2t finetune``."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a backbone after preparing its head; test accuracy, energy, drift",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_test_options(
        parser,
        n_train=N_TRAIN,
        random_state_help="seed of the draws and of the fine-tuning: validation split, head "
        "initialisation, data order (default: 0)",
    )
    _add_backbone_options(parser)
    _add_fine_tuning_options(parser)
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output-dir",
        default="skh2t_finetune",
        metavar="DIR",
        help=f"where {RESULTS_JSON}, {PLOT_PNG} and {MODEL_FILE} go (default: %(default)s)",
    )
    options.add_quiet_option(parser)
    # NumPy's BLAS plays no part in fine-tuning (PyTorch keeps its own threads).
    parser.set_defaults(handler=run, blas_threads=1)


def _add_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone")
    options.add_network_options(group)
    group.add_argument(
        "--batch-size",
        type=options.positive_int,
        metavar="N",
        default=LIBRARY_DEFAULTS["batch_size"],
        help="images per step of head probing and of fine-tuning, and per forward pass "
        "(default: %(default)s)",
    )
    options.add_device_options(
        group,
        precision_help="dtype of the backbone's forward passes (fine-tuning, the frozen "
        "features of head probing, prediction): float32, bfloat16 (autocast, CPU and CUDA), "
        "float16 (autocast, CUDA only) or auto (the fastest the device runs well); the "
        "weights, the optimiser, the head and the loss stay float32 (default: %(default)s)",
    )


def _add_fine_tuning_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("head probing and fine-tuning")
    grid = ",".join(map(str, PROBE_EPOCHS_GRID))
    group.add_argument(
        "--probe-epochs",
        type=probe_epochs_value,
        default=LIBRARY_DEFAULTS["probe_epochs"],
        metavar="N|auto",
        help="epochs of head probing before fine-tuning: 0 fine-tunes from a random head; "
        "'auto' fine-tunes once per value of --probe-epochs-grid and keeps the best on "
        "validation accuracy; with a probing target, the most epochs probing may take "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--probe-epochs-grid",
        type=options.comma_list(options.non_negative_int),
        metavar="N[,N...]",
        help=f"the candidates of --probe-epochs auto (default: {grid})",
    )
    group.add_argument(
        "--probe-target-accuracy",
        type=options.fraction,
        metavar="A",
        help="stop head probing at the first step where the head's training accuracy "
        "reaches A, in (0, 1] (one probing and one fine-tuning; not with --probe-epochs auto)",
    )
    group.add_argument(
        "--probe-target-loss",
        type=options.positive_float,
        metavar="L",
        help="stop head probing at the first step where the head's training cross-entropy "
        "falls to L (with both targets, whichever comes first)",
    )
    group.add_argument(
        "--epochs",
        type=options.non_negative_int,
        default=LIBRARY_DEFAULTS["epochs"],
        metavar="N",
        help="fine-tuning epochs (0: the prepared head on the frozen backbone; "
        "default: %(default)s)",
    )
    group.add_argument(
        "--optimizer",
        choices=("adamw", "sgd"),
        default=LIBRARY_DEFAULTS["optimizer"],
        help="AdamW, or SGD with Nesterov momentum 0.9 (default: %(default)s)",
    )
    group.add_argument(
        "--lr",
        type=lr_value,
        default=LIBRARY_DEFAULTS["lr"],
        metavar="LR|auto",
        help="peak fine-tuning learning rate (1 epoch of linear warm-up, then cosine decay); "
        f"auto: {_short(DEFAULT_LR['adamw'])} for adamw, {_short(DEFAULT_LR['sgd'])} for sgd "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--validation-fraction",
        type=validation_fraction_value,
        default=LIBRARY_DEFAULTS["validation_fraction"],
        metavar="F",
        help="fraction of the training images held out (stratified) for the validation "
        "accuracy, --probe-epochs auto and the feature drift, in [0, 1); 0: none, the "
        "drift is measured on the training images (default: %(default)s)",
    )


def _short(value: float) -> str:
    """A learning rate as it is written: ``1e-4``, not ``0.0001`` (``2.5e-4`` kept whole)."""
    if value >= 0.01:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def auto_or(parse: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """An argparse type: ``"auto"`` (any case) or what ``parse`` accepts.

    Examples
    --------
    >>> probe_epochs_value("3"), probe_epochs_value("AUTO"), lr_value("1e-4")
    (3, 'auto', 0.0001)
    """

    def value(text: str) -> Any:
        if text.strip().lower() == "auto":
            return "auto"
        try:
            return parse(text)
        except argparse.ArgumentTypeError:
            message = f"expected 'auto' or {expected}, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None

    return value


probe_epochs_value = auto_or(options.non_negative_int, "a non-negative integer")  # --probe-epochs
lr_value = auto_or(options.positive_float, "a positive number")  # --lr


def validation_fraction_value(text: str) -> float:
    """``--validation-fraction``: a number in ``[0, 1)`` (argparse type).

    Examples
    --------
    >>> validation_fraction_value("0.2"), validation_fraction_value("0")
    (0.2, 0.0)
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Fine-tune; print the summary; write the JSON, the figure and the model."""
    started = time.perf_counter()
    progress = Progress(not args.quiet)
    _check_probing(args)
    options.check_backbone(args)
    paths = _output_paths(args.output_dir)
    train, test = load_train_test(args)
    _check_validation_split(args, len(train))
    check_readable(train.images)
    check_readable(test.images)
    clf = _classifier(args, verbose=progress.enabled)
    progress.message(_plan(args, train))
    start = time.perf_counter()
    with hidden_warnings(ConvergenceWarning):  # a probing target missed: in the summary
        clf.fit(train.images, train.labels)
    fit_seconds = time.perf_counter() - start
    clf.set_params(verbose=0)  # the saved model predicts quietly
    test_accuracy, test_seconds = _evaluate(clf, test, progress)
    payload = _payload(args, train, test, clf, test_accuracy)
    payload["timings"] = {
        "fit_seconds": fit_seconds,
        "test_seconds": test_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    _print_summary(args, payload)
    _write_outputs(args, paths, payload, clf)
    return 0


def _check_probing(args: argparse.Namespace) -> None:
    """How long to probe is given one way: --probe-epochs auto (with its grid) or a target."""
    targets = [
        option
        for option, value in (
            ("--probe-target-accuracy", args.probe_target_accuracy),
            ("--probe-target-loss", args.probe_target_loss),
        )
        if value is not None
    ]
    auto = args.probe_epochs == "auto"
    if auto and targets:
        raise UsageError(
            f"--probe-epochs auto and {targets[0]} are two ways to choose how long to probe; "
            f"give --probe-epochs a number (the most epochs probing may take) or drop {targets[0]}"
        )
    if args.probe_epochs_grid is not None and not auto:
        raise UsageError("--probe-epochs-grid lists the candidates of --probe-epochs auto only")
    if auto and not args.validation_fraction:
        raise UsageError(
            "--probe-epochs auto chooses on validation accuracy and needs --validation-fraction > 0"
        )


def _output_paths(output_dir: str) -> dict[str, str]:
    """The output files, checked writable before any work."""
    with usage_errors(OSError, context="--output-dir"):
        os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, name) for name in (RESULTS_JSON, PLOT_PNG, MODEL_FILE)}
    for path in paths.values():
        options.check_output_file(path, "--output-dir")
    return paths


def _check_validation_split(args: argparse.Namespace, n_train: int) -> None:
    """FineTuneClassifier holds out ceil(fraction x n) images and trains on at least 2."""
    n_held_out = math.ceil(args.validation_fraction * n_train)
    if n_train - n_held_out < 2:
        raise UsageError(
            f"--validation-fraction {args.validation_fraction:g} of --n-train {n_train} holds "
            f"out {n_held_out} images and leaves {n_train - n_held_out} to train on; lower it "
            "or raise --n-train"
        )


def _classifier(args: argparse.Namespace, *, verbose: bool) -> FineTuneClassifier:
    grid = PROBE_EPOCHS_GRID if args.probe_epochs_grid is None else tuple(args.probe_epochs_grid)
    return FineTuneClassifier(  # the parameters of the options of the same names
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        probe_epochs=args.probe_epochs,
        probe_epochs_grid=grid,
        probe_target_accuracy=args.probe_target_accuracy,
        probe_target_loss=args.probe_target_loss,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        batch_size=args.batch_size,
        validation_fraction=args.validation_fraction,
        device=args.device,
        precision=args.precision,
        random_state=args.random_state,
        verbose=int(verbose),
    )


def _plan(args: argparse.Namespace, train: LabelledImages) -> str:
    if args.probe_epochs == "auto":
        grid = args.probe_epochs_grid or PROBE_EPOCHS_GRID
        probing = f"one head probing and one fine-tuning per --probe-epochs in {_listed(grid)}"
    elif args.probe_target_accuracy is not None or args.probe_target_loss is not None:
        probing = (
            f"head probing to its target (at most {args.probe_epochs} epochs), then fine-tuning"
        )
    else:
        probing = f"head probing ({args.probe_epochs} epochs), then fine-tuning"
    return (
        f"Fine-tuning {args.backbone} at {args.image_size} px on {len(train)} images: "
        f"{probing} ({args.epochs} epochs)"
    )


def _evaluate(
    clf: FineTuneClassifier, test: LabelledImages, progress: Progress
) -> tuple[float, float]:
    """Test accuracy, predicted in chunks, and its time."""
    start = time.perf_counter()
    truth = test.labels
    correct = 0
    with progress.bar(total=len(test), desc="Test images", unit="img") as bar:
        for first in range(0, len(test), TEST_CHUNK):
            rows = np.arange(first, min(first + TEST_CHUNK, len(test)))
            chunk = test.take(rows)
            correct += int(np.sum(clf.predict(chunk.images) == truth[rows]))
            bar.update(len(rows))
    return correct / len(test), time.perf_counter() - start


def _payload(
    args: argparse.Namespace,
    train: LabelledImages,
    test: LabelledImages,
    clf: FineTuneClassifier,
    test_accuracy: float,
) -> dict[str, Any]:
    config = {key: value for key, value in vars(args).items() if key not in ("handler", "argv")}
    history = clf.history_
    kept = history["epoch"].index(clf.best_epoch_)
    payload = {
        "command": "skh2t finetune",
        "argv": args.argv,
        "config": config,
        "params": clf.get_params(deep=False),
        "data": data_summary(train, test),
        "test_accuracy": test_accuracy,
        "validation_accuracy": _number(history["val_accuracy"][kept]),
        "n_validation": clf.n_validation_,
        "energy": clf.energy_,
        "probing": {
            "probe_epochs": clf.probe_epochs_,
            "probe_steps": clf.probe_steps_,
            "target_reached": clf.probe_target_reached_,
        },
        "fine_tuning": {
            "lr": clf.lr_,
            "n_iter": clf.n_iter_,
            "kept_epoch": clf.best_epoch_,
            "n_features": clf.n_features_,
        },
        "drift": kept_feature_drift(clf),
        "history": {key: [_number(value) for value in values] for key, values in history.items()},
        "versions": versions(),
    }
    if args.probe_epochs == "auto":
        payload["probe_epochs_search"] = clf.cv_results_
    return payload


def _number(value: float) -> float | None:
    """A number for JSON: ``None`` for NaN (no validation split, no loss before epoch 1)."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _print_summary(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    rows = _summary_rows(args, payload)
    width = max(len(label) for label, _ in rows)
    for label, text in rows:
        print(f"{label.ljust(width)}  {text}")
    if payload["probing"]["target_reached"] is False:
        print(
            f"note: head probing stopped after --probe-epochs {args.probe_epochs} epochs, short "
            "of its target; raise --probe-epochs"
        )
    sys.stdout.flush()


def _summary_rows(args: argparse.Namespace, payload: dict[str, Any]) -> list[tuple[str, str]]:
    data, energy, tuning = payload["data"], payload["energy"], payload["fine_tuning"]
    seconds = {key: f"{value:.1f} s" for key, value in payload["timings"].items()}
    rows = [
        ("data", f"{data['n_train']} training images of {data['train_source']}, "
         f"{len(data['classes'])} classes"),
        ("backbone", f"{args.backbone} at {args.image_size} px ({tuning['n_features']} features)"),
        ("head probing", _probing_line(args, payload["probing"])),
        ("energy", f"loss {energy['loss']:.4f}, accuracy {energy['accuracy']:.4f} "
         "(when fine-tuning started)"),
        ("fine-tuning", f"{_epochs(tuning['n_iter'])}, {args.optimizer}, "
         f"lr {_short(tuning['lr'])}; kept epoch {tuning['kept_epoch']}"),
    ]  # fmt: skip
    if payload["validation_accuracy"] is not None:
        validation = f"{payload['n_validation']} held-out images"
        rows.append(("validation", f"accuracy {payload['validation_accuracy']:.4f} ({validation})"))
    test = f"{data['n_test']} images of {data['test_source']}"
    return [
        *rows,
        ("feature drift", _drift_line(payload["drift"], bool(args.validation_fraction))),
        ("test", f"accuracy {payload['test_accuracy']:.4f} on {test}"),
        ("time", f"fit {seconds['fit_seconds']}, test {seconds['test_seconds']}, "
         f"total {seconds['total_seconds']}"),
    ]  # fmt: skip


def _probing_line(args: argparse.Namespace, probing: dict[str, Any]) -> str:
    line = f"{_epochs(probing['probe_epochs'])} ({probing['probe_steps']} steps)"
    if args.probe_epochs == "auto":
        grid = args.probe_epochs_grid or PROBE_EPOCHS_GRID
        return f"{line}, chosen on validation accuracy among {_listed(grid)}"
    targets = [
        f"training {name} {value:g}"
        for name, value in (
            ("accuracy", args.probe_target_accuracy),
            ("loss", args.probe_target_loss),
        )
        if value is not None
    ]
    if targets:
        reached = "reached" if probing["target_reached"] else "not reached"
        return f"{line}, until {' or '.join(targets)} ({reached})"
    return line


def _drift_line(drift: dict[str, float], held_out: bool) -> str:
    images = "held-out" if held_out else "training"
    return (
        f"distance {drift['feature_distance']:.4g}, cosine {drift['feature_cosine']:.4f}, "
        f"dot {drift['feature_dot']:.4g}, norm {drift['feature_norm']:.4g} "
        f"({images} images vs pretrained)"
    )


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def _listed(values: Any) -> str:
    return ",".join(map(str, values))


def _write_outputs(
    args: argparse.Namespace,
    paths: dict[str, str],
    payload: dict[str, Any],
    clf: FineTuneClassifier,
) -> None:
    title = (
        f"{args.backbone} at {args.image_size} px fine-tuned on {args.dataset}: "
        f"test accuracy {payload['test_accuracy']:.4f}"
    )
    figure = drift_energy_figure(clf, title=title)
    with written_whole(paths[PLOT_PNG]) as part:  # savefig picks PNG from the (kept) suffix
        figure.savefig(part, dpi=120)
    with written_whole(paths[MODEL_FILE]) as part:
        joblib.dump(clf, part)
    payload["model_file"] = paths[MODEL_FILE]
    write_json(paths[RESULTS_JSON], payload)
    print("\nwrote " + ", ".join(paths[name] for name in (RESULTS_JSON, PLOT_PNG, MODEL_FILE)))
