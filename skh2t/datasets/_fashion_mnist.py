"""Fashion-MNIST: find it (data home, Debian package), download it, load it."""

import os
from typing import Literal

import numpy as np
from sklearn.utils import Bunch

from ._descr import FASHION_MNIST as _DESCR
from ._download import download_file
from ._home import DATA_HOME_ENV, get_data_home
from ._idx import read_idx

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
SUBDIR = "fashion-mnist"
TARGET_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_IMAGE_SHAPE = (28, 28)
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Official MD5 checksums of the .gz files (zalandoresearch/fashion-mnist README).
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    # The S3 website endpoint serves plain HTTP only; the MD5 check guards it.
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)


def load_fashion_mnist(
    *,
    subset: Literal["train", "test", "all"] = "train",
    data_home: str | os.PathLike[str] | None = None,
    download: bool = False,
    return_X_y: bool = False,
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Load the Fashion-MNIST data set (classification, 10 classes).

    =================   ==============================
    Classes                                         10
    Samples per class   6,000 train + 1,000 test
    Samples total       60,000 train + 10,000 test
    Images              28 x 28 grayscale, uint8
    =================   ==============================

    The four official IDX files (``*.gz`` or uncompressed) are looked for,
    in this order, in:

    1. ``data_home`` (its ``fashion-mnist/`` sub-folder, then itself),
    2. the folder named by the ``SKH2T_DATA`` environment variable (same),
    3. ``~/skh2t_data`` (same),
    4. ``/usr/share/datasets/fashion-mnist``, where Debian's package
       ``dataset-fashion-mnist`` installs them.

    The first folder holding all files of ``subset`` is used. Every file is
    checked (IDX magic number, sizes, labels in 0..9); a truncated or
    corrupted file raises a ``ValueError`` naming it.

    Parameters
    ----------
    subset : {"train", "test", "all"}, default="train"
        The official split to load; "all" is the training set followed by
        the test set.
    data_home : str or path-like, default=None
        A folder to look in first, and to download into. By default
        :func:`get_data_home` (``$SKH2T_DATA`` or ``~/skh2t_data``).
    download : bool, default=False
        If the data is found nowhere, download the missing official files
        into ``<data home>/fashion-mnist/`` (checked against the official
        MD5 checksums, written atomically).
    return_X_y : bool, default=False
        If True, return ``(images, target)`` instead of a Bunch. Unlike
        ``sklearn.datasets.load_digits``, ``X`` is the image array: skh2t's
        feature extractors take images. Use ``X.reshape(len(X), -1)`` for
        pixel vectors.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        images : ndarray of shape (n_samples, 28, 28), dtype uint8
            The images.
        data : ndarray of shape (n_samples, 784), dtype uint8
            The same pixels, flattened (a view of ``images``).
        target : ndarray of shape (n_samples,), dtype int64
            Class labels, 0 to 9.
        target_names : ndarray of shape (10,)
            Class names: T-shirt/top, Trouser, Pullover, Dress, Coat,
            Sandal, Shirt, Sneaker, Bag, Ankle boot.
        filenames : list of str
            The files the data was read from.
        DESCR : str
            Description of the data set.

    (images, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        If the data is nowhere and ``download`` is False. The message lists
        the folders searched and how to install the data.
    OSError
        If ``download`` is True and the files cannot be downloaded.
    ValueError
        If a file is truncated or not a valid Fashion-MNIST file.

    See Also
    --------
    stratified_subsample : Draw a class-balanced VTAB-1k style subset.

    Examples
    --------
    >>> from skh2t.datasets import load_fashion_mnist
    >>> fmnist = load_fashion_mnist(subset="test")  # doctest: +SKIP
    >>> fmnist.images.shape, fmnist.images.dtype  # doctest: +SKIP
    ((10000, 28, 28), dtype('uint8'))
    >>> fmnist.target_names[fmnist.target[0]]  # doctest: +SKIP
    'Ankle boot'
    """
    splits = _splits(subset)
    folder = _locate(splits, data_home)
    if folder is None:
        if not download:
            raise FileNotFoundError(_not_found_message(splits, data_home))
        folder = _download(splits, data_home)
    images, target, filenames = _read_splits(folder, splits)
    if return_X_y:
        return images, target
    return Bunch(
        images=images,
        data=images.reshape(len(images), -1),
        target=target,
        target_names=np.array(TARGET_NAMES),
        filenames=filenames,
        DESCR=_DESCR,
    )


def _splits(subset: str) -> list[str]:
    if subset == "all":
        return ["train", "test"]
    if subset in _SPLIT_FILES:
        return [subset]
    raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}.")


def _stems(splits: list[str]) -> list[str]:
    return [stem for split in splits for stem in _SPLIT_FILES[split]]


def _search_dirs(data_home: str | os.PathLike[str] | None) -> list[str]:
    roots = [get_data_home(data_home)] if data_home is not None else []
    if os.environ.get(DATA_HOME_ENV):
        roots.append(get_data_home(os.environ[DATA_HOME_ENV]))
    roots.append(get_data_home(os.path.join("~", "skh2t_data")))
    dirs = [d for root in roots for d in (os.path.join(root, SUBDIR), root)]
    dirs.append(DEBIAN_DIR)
    return list(dict.fromkeys(os.path.abspath(d) for d in dirs))


def _find_file(folder: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _locate(splits: list[str], data_home: str | os.PathLike[str] | None) -> str | None:
    for folder in _search_dirs(data_home):
        if all(_find_file(folder, stem) for stem in _stems(splits)):
            return folder
    return None


def _not_found_message(splits: list[str], data_home: str | os.PathLike[str] | None) -> str:
    files = ", ".join(stem + ".gz" for stem in _stems(splits))
    searched = "\n".join(f"  - {folder}" for folder in _search_dirs(data_home))
    target = os.path.join(get_data_home(data_home), SUBDIR)
    return (
        f"Fashion-MNIST not found: no folder holds all of {files} (or their "
        f"uncompressed versions). Searched:\n{searched}\n"
        "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
        f"pass download=True to fetch the official files into {target}, or pass "
        f"data_home=... (or set ${DATA_HOME_ENV}) to a folder that holds them."
    )


def _download(splits: list[str], data_home: str | os.PathLike[str] | None) -> str:
    folder = os.path.join(get_data_home(data_home), SUBDIR)
    for stem in _stems(splits):
        if _find_file(folder, stem) is None:
            name = stem + ".gz"
            urls = [mirror + name for mirror in MIRRORS]
            download_file(urls, os.path.join(folder, name), MD5[name])
    return folder


def _read_splits(folder: str, splits: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, target, filenames = [], [], []
    for split in splits:
        image_path, label_path = (_find_file(folder, stem) for stem in _SPLIT_FILES[split])
        images.append(_read_images(image_path))
        target.append(_read_labels(label_path, n_images=len(images[-1])))
        filenames += [image_path, label_path]
    if len(splits) == 1:
        return images[0], target[0], filenames
    return np.concatenate(images), np.concatenate(target), filenames


def _read_images(path: str) -> np.ndarray:
    images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        raise ValueError(
            f"{path!r} is not a Fashion-MNIST image file: expected uint8 images of shape "
            f"(n, 28, 28), got {images.dtype} of shape {images.shape}."
        )
    return images


def _read_labels(path: str, n_images: int) -> np.ndarray:
    labels = read_idx(path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{path!r} is not a Fashion-MNIST label file: expected a 1-d uint8 array, "
            f"got {labels.dtype} of shape {labels.shape}."
        )
    if len(labels) != n_images:
        raise ValueError(f"{path!r} holds {len(labels)} labels for {n_images} images.")
    if labels.size and labels.max() >= len(TARGET_NAMES):
        raise ValueError(f"{path!r} holds label {labels.max()}; labels must be 0 to 9.")
    return labels.astype(np.int64)
