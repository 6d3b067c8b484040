"""Data sets named on the command line: Fashion-MNIST or a folder of images, and their splits."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from skh2t.cli.errors import UsageError, usage_errors
from skh2t.cli.many_images import ALL, n_train_value
from skh2t.cli.options import FASHION_MNIST, positive_int, seed
from skh2t.datasets import IMG_EXTENSIONS, load_fashion_mnist, load_image_folder
from skh2t.datasets import stratified_subsample as _stratified_subsample
from skh2t.features import check_image_files

DATASET_HELP = (
    f"'{FASHION_MNIST}' (offline from Debian's dataset-fashion-mnist, or the skh2t data "
    "home), or the path of an image folder with one sub-folder per class"
)

N_TRAIN_ALL_HELP = (
    "class-balanced training images, or 'all': every training image (for a folder "
    "--dataset without --test-dataset, all but the --n-test held out) (default: %(default)s)"
)


@dataclass
class LabelledImages:
    """Images with integer labels and the class names.

    Attributes
    ----------
    images : ndarray or list of str
        A uint8 image array, or image file paths (read lazily by the transformer).
    target : ndarray of int
        Label of every image, an index into ``class_names``.
    class_names : list of str
        Names of the classes, in label order.
    source : str
        Where the images come from, for reports.
    """

    images: Any
    target: np.ndarray
    class_names: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.target)

    def take(self, indices: np.ndarray) -> LabelledImages:
        """The images at ``indices``, same classes."""
        if isinstance(self.images, np.ndarray):
            images = self.images[indices]
        else:
            images = [self.images[i] for i in indices]
        return LabelledImages(images, self.target[indices], self.class_names, self.source)

    @property
    def labels(self) -> np.ndarray:
        """The class name of every image."""
        return np.asarray(self.class_names, dtype=object)[self.target]


def check_readable(images: Any) -> None:
    """Fail before any extraction if an image file of ``images`` (when paths) is unreadable."""
    if isinstance(images, list):
        check_image_files(images)


def check_classes(data: LabelledImages, option: str) -> None:
    """Fail before any extraction unless ``data`` has images of at least two classes."""
    present = np.unique(data.target)
    if present.size < 2:
        names = ", ".join(repr(str(data.class_names[i])) for i in present) or "none"
        raise UsageError(
            f"{option}: {data.source} has images of {present.size} class ({names}); a "
            "classifier needs at least 2: put each class's images in its own sub-folder"
        )


def load_dataset(spec: str, split: str = "train") -> LabelledImages:
    """Load ``fashion-mnist`` (its ``split``: train or test) or an image folder.

    Parameters
    ----------
    spec : str
        ``"fashion-mnist"`` or the path of a folder with one sub-folder per class.
    split : {"train", "test"}, default="train"
        The Fashion-MNIST split; ignored for a folder.

    Returns
    -------
    LabelledImages

    Raises
    ------
    UsageError
        Unknown name, missing folder, folder without class sub-folders or
        images, Fashion-MNIST not installed.
    """
    if spec.lower() == FASHION_MNIST:
        with usage_errors(FileNotFoundError, ValueError, context=FASHION_MNIST):
            bunch = load_fashion_mnist(subset=split)
        source = f"{FASHION_MNIST} ({split})"
        return LabelledImages(bunch.images, bunch.target, list(bunch.target_names), source)
    if not os.path.exists(spec):
        raise UsageError(f"unknown dataset {spec!r}: use {DATASET_HELP}")
    with usage_errors(FileNotFoundError, ValueError, context=spec):
        bunch = load_image_folder(spec)
    return LabelledImages(list(bunch.filenames), bunch.target, list(bunch.target_names), spec)


def stratified_subsample(data: LabelledImages, n: int, random_state: int, what: str) -> np.ndarray:
    """Indices of a class-balanced random subset of ``n`` images of ``data``.

    Parameters
    ----------
    data : LabelledImages
        The pool.
    n : int
        Number of images.
    random_state : int
        Seed.
    what : str
        The option that asked for ``n``, for the error message.

    Returns
    -------
    ndarray of int
        Sorted indices.

    Raises
    ------
    UsageError
        If ``data`` has fewer than ``n`` images, or a class has too few.
    """
    if n > len(data):
        raise UsageError(
            f"{what} {n} is larger than the data: {data.source} has {len(data)} images"
        )
    with usage_errors(ValueError, context=what):
        return _stratified_subsample(data.target, n_samples=n, random_state=random_state)


def split_train_test(
    data: LabelledImages,
    test: LabelledImages | None,
    n_train: int | str,
    n_test: int | None,
    random_state: int,
) -> tuple[LabelledImages, LabelledImages]:
    """Draw the training images, and the test images (a separate set, or the rest of ``data``).

    Parameters
    ----------
    data : LabelledImages
        The pool the ``n_train`` training images are drawn from.
    test : LabelledImages or None
        The test set; ``None`` uses the images of ``data`` not drawn for training.
    n_train : int or "all"
        Number of training images (class-balanced); ``"all"``: every image of
        ``data`` (with ``test=None``: all but the ``n_test`` held out for testing).
    n_test : int or None
        Number of test images (class-balanced subsample); ``None`` for all.
    random_state : int
        Seed of both draws.

    Returns
    -------
    train, test : LabelledImages
    """
    if n_train == ALL:
        return _all_but_test(data, test, n_test, random_state)
    train_idx = stratified_subsample(data, n_train, random_state, "--n-train")
    if test is None:
        rest = np.setdiff1d(np.arange(len(data)), train_idx)
        if rest.size == 0:
            raise UsageError(
                f"--n-train {n_train} leaves no test images in {data.source}; "
                "lower it or pass --test-dataset"
            )
        test = data.take(rest)
    else:
        _check_test_classes(data, test)
    if n_test is not None:
        test = test.take(stratified_subsample(test, n_test, _test_seed(random_state), "--n-test"))
    return data.take(train_idx), test


def _all_but_test(
    data: LabelledImages, test: LabelledImages | None, n_test: int | None, random_state: int
) -> tuple[LabelledImages, LabelledImages]:
    """``--n-train all``: every image of ``data`` but those drawn for testing from it."""
    if test is not None:
        _check_test_classes(data, test)
        if n_test is not None:
            rows = stratified_subsample(test, n_test, _test_seed(random_state), "--n-test")
            test = test.take(rows)
        return data, test
    if n_test is None:
        raise UsageError(
            f"--n-train all leaves no test images in {data.source}: pass --n-test N (held "
            "out from it) or --test-dataset"
        )
    test_idx = stratified_subsample(data, n_test, _test_seed(random_state), "--n-test")
    rest = np.setdiff1d(np.arange(len(data)), test_idx)
    if rest.size == 0:
        raise UsageError(
            f"--n-train all with --n-test {n_test} leaves no training images in {data.source}; "
            "lower --n-test or pass --test-dataset"
        )
    return data.take(rest), data.take(test_idx)


def _test_seed(random_state: int) -> int:
    return (random_state + 1) % 2**32  # another draw than the training one's


def _check_test_classes(data: LabelledImages, test: LabelledImages) -> None:
    if test.class_names != data.class_names:
        raise UsageError(
            f"the test classes {_plain(test.class_names)} differ from the training classes "
            f"{_plain(data.class_names)}"
        )


def add_train_test_options(
    parser: argparse.ArgumentParser,
    *,
    n_train: int,
    random_state_help: str,
    n_train_all: bool = False,
) -> None:
    """Add the "data" group: --dataset, --test-dataset, --n-train, --n-test, --random-state.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    n_train : int
        Default of --n-train.
    random_state_help : str
        What --random-state seeds, for its help.
    n_train_all : bool, default=False
        Whether --n-train also takes ``all`` (every training image).
    """
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset",
        default=FASHION_MNIST,
        metavar="NAME|DIR",
        help=f"{DATASET_HELP} (default: %(default)s)",
    )
    group.add_argument(
        "--test-dataset",
        metavar="DIR",
        help="image folder of test images; default: Fashion-MNIST's test split, or for a "
        "folder --dataset the images not drawn for training",
    )
    group.add_argument(
        "--n-train",
        type=n_train_value if n_train_all else positive_int,
        default=n_train,
        metavar="N|all" if n_train_all else "N",
        help=N_TRAIN_ALL_HELP
        if n_train_all
        else "class-balanced training images (default: %(default)s)",
    )
    group.add_argument(
        "--n-test",
        type=positive_int,
        metavar="N",
        help="class-balanced subsample of the test images (default: all)",
    )
    group.add_argument(
        "--random-state", type=seed, default=0, metavar="SEED", help=random_state_help
    )


def load_train_test(args: argparse.Namespace) -> tuple[LabelledImages, LabelledImages]:
    """The training and test images the options of :func:`add_train_test_options` name.

    Fashion-MNIST is tested on its test split; a folder on --test-dataset, or
    on its images not drawn for training.

    Raises
    ------
    UsageError
        A data set that cannot be loaded or has fewer than two classes, draws
        larger than the data, test classes that differ from the training ones.
    """
    data = load_dataset(args.dataset, "train")
    check_classes(data, "--dataset")
    if args.test_dataset is not None:
        test = load_dataset(args.test_dataset, "test")
    elif args.dataset.lower() == FASHION_MNIST:
        test = load_dataset(args.dataset, "test")
    else:
        test = None
    return split_train_test(data, test, args.n_train, args.n_test, args.random_state)


def data_summary(train: LabelledImages, test: LabelledImages) -> dict[str, Any]:
    """Where the images come from and how many of each class, for a report."""
    return {
        "train_source": train.source,
        "test_source": test.source,
        "n_train": len(train),
        "n_test": len(test),
        "classes": train.class_names,
        "train_per_class": np.bincount(train.target, minlength=len(train.class_names)),
        "test_per_class": np.bincount(test.target, minlength=len(test.class_names)),
    }


def _plain(names: list[Any]) -> list[str]:
    """Class names as plain strings, so that a message shows ``'cat'``, not ``np.str_('cat')``."""
    return [str(name) for name in names]


def list_image_files(paths: list[str], folder: str | None) -> list[str]:
    """Image files named on the command line, plus those found (recursively) in ``folder``.

    Raises
    ------
    UsageError
        If a file or the folder does not exist, or no image is given.
    """
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing and os.path.isdir(missing[0]):
        raise UsageError(
            f"{missing[0]!r} is a directory, not an image file; for the images in it use "
            "--dataset DIR (extract) or --folder DIR (predict)"
        )
    if missing:
        raise UsageError(f"image file not found: {missing[0]!r}")
    files = list(paths)
    if folder is not None:
        if not os.path.isdir(folder):
            raise UsageError(f"--folder {folder!r} is not a folder")
        files += _images_under(folder)
    if not files:
        where = f" in {folder!r}" if folder is not None else ""
        raise UsageError(f"no image files{where} (extensions {', '.join(IMG_EXTENSIONS)})")
    return files


def _images_under(folder: str) -> list[str]:
    found = []
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(current, name)
            for name in sorted(names)
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)
        ]
    return found
