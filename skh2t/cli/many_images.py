"""Options for Head2Toe on many images: ``--n-train all``, ``--selection-samples``,
``--feature-store`` and ``--feature-store-dtype`` (the Head2ToeClassifier parameters of the
same names), and their checks before any extraction."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from skh2t.cli.errors import UsageError, usage_errors
from skh2t.cli.options import int_type, positive_int
from skh2t.features import InsufficientDiskSpaceError
from skh2t.head2toe import selection_rows

ALL = "all"
FEATURE_STORE_DTYPES = ("float32", "float16")


def n_train_value(text: str) -> int | str:
    """``--n-train``: a positive integer, or ``"all"`` (any case) for every image.

    Examples
    --------
    >>> n_train_value("500"), n_train_value("ALL")
    (500, 'all')
    """
    if text.strip().lower() == ALL:
        return ALL
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'all', got {text!r}"
        ) from None


selection_samples_value = int_type(
    "an integer of at least 2", lambda value: value >= 2, "selection_samples_value"
)


def add_many_images_options(parser: argparse.ArgumentParser) -> None:
    """Add the "many images" group: --selection-samples, --feature-store, --feature-store-dtype."""
    group = parser.add_argument_group(
        "many images (the Head2ToeClassifier parameters of the same names)"
    )
    group.add_argument(
        "--selection-samples",
        type=selection_samples_value,
        metavar="N",
        help="select the features (skh2t run: and fit the probes) on a stratified subsample "
        "of N training images, drawn with --random-state, then refit the plain head on the "
        "kept features of every training image (default: all of them)",
    )
    group.add_argument(
        "--feature-store",
        metavar="DIR",
        help="extract the training features into .npy files in a temporary sub-folder of "
        "DIR (created if needed; its free space is checked first; deleted at the end of "
        "the fit) instead of memory (default: in memory)",
    )
    group.add_argument(
        "--feature-store-dtype",
        choices=FEATURE_STORE_DTYPES,
        default="float32",
        metavar="DTYPE",
        help="dtype of the features in --feature-store: float32 or float16 (half the disk "
        "space; needs --selection-samples) (default: %(default)s)",
    )


def many_images_params(args: argparse.Namespace) -> dict[str, Any]:
    """The Head2ToeClassifier parameters of the options of :func:`add_many_images_options`."""
    return {
        "selection_samples": args.selection_samples,
        "feature_store": args.feature_store,
        "feature_store_dtype": args.feature_store_dtype,
    }


@dataclass(frozen=True)
class Selection:
    """The training images the selection runs on.

    Attributes
    ----------
    rows : ndarray of int or None
        Their indices (increasing), or ``None`` for all training images.
    n_train : int
        The training images.
    """

    rows: np.ndarray | None
    n_train: int

    def __len__(self) -> int:
        return self.n_train if self.rows is None else len(self.rows)

    def summary(self, selection_samples: int | None) -> dict[str, Any]:
        """What a report records of the selection."""
        return {
            "selection_samples": selection_samples,
            "n_selection": len(self),
            "n_train": self.n_train,
            "subsample": self.rows is not None,
        }


def check_many_images(args: argparse.Namespace, target: np.ndarray, n_folds: int) -> Selection:
    """Fail in one line, before any extraction, on a subsample that cannot be drawn or
    split into ``n_folds`` folds, float16 features without a subsample or a store, or a
    --feature-store that cannot be written; return the subsample (drawn as the estimator
    will draw it)."""
    with usage_errors(ValueError, context="--selection-samples"):
        rows = selection_rows(target, args.selection_samples, args.random_state)
    selection = Selection(rows, len(target))
    if rows is not None:
        _check_subsample_folds(args.selection_samples, target[rows], n_folds)
    if args.feature_store_dtype != "float32":
        _check_float16(args, selection)
    if args.feature_store is not None:
        _check_store_directory(args.feature_store)
    return selection


def _check_subsample_folds(n: int, target: np.ndarray, n_folds: int) -> None:
    smallest = int(np.bincount(target)[np.unique(target)].min())
    if smallest < n_folds:
        raise UsageError(
            f"--selection-samples {n} gives {smallest} image(s) of some class, too few for "
            f"{n_folds} cross-validation folds; use a larger --selection-samples"
        )


def _check_float16(args: argparse.Namespace, selection: Selection) -> None:
    if args.feature_store is None:
        raise UsageError(
            f"--feature-store-dtype {args.feature_store_dtype} is the dtype of the features "
            "on disk: it needs --feature-store DIR"
        )
    if selection.rows is None:
        raise UsageError(
            f"--feature-store-dtype {args.feature_store_dtype} needs --selection-samples "
            f"smaller than the {selection.n_train} training images (the cross-validation "
            "streams the stored features, which must then be float32)"
        )


def _check_store_directory(directory: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"--feature-store: {directory!r} is not a directory")
    with usage_errors(OSError, context="--feature-store"):
        os.makedirs(directory, exist_ok=True)
        tempfile.TemporaryDirectory(prefix="skh2t-check-", dir=directory).cleanup()


@contextlib.contextmanager
def disk_space_errors() -> Iterator[None]:
    """Turn the store's :class:`~skh2t.features.InsufficientDiskSpaceError` (raised before
    any image is extracted) into a one-line :class:`UsageError`."""
    try:
        yield
    except InsufficientDiskSpaceError as error:
        raise UsageError(f"--feature-store: {error.strerror}") from error
