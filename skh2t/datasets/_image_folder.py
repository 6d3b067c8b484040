"""List the images of a folder with one sub-folder per class (ImageFolder layout)."""

import os
from collections.abc import Iterable

import numpy as np
from sklearn.utils import Bunch

from ._descr import IMAGE_FOLDER as _DESCR
from ._images import read_images

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    categories: Iterable[str] | None = None,
    extensions: Iterable[str] = IMG_EXTENSIONS,
    load_images: bool = False,
    size: int | tuple[int, int] | None = None,
    mode: str = "RGB",
    return_X_y: bool = False,
) -> Bunch | tuple[np.ndarray, np.ndarray]:
    """Load a folder of images with one sub-folder per class.

    The layout is the "ImageFolder" convention (as in torchvision)::

        path/
            cat/001.png
            cat/002.jpg
            dog/a/xyz.png      (nested folders are searched too)

    Class names are the sub-folder names sorted alphabetically and the
    label of a class is its position in that order. Images are the files
    whose extension (case-insensitive) is in ``extensions``, searched
    recursively; hidden files and folders (names starting with ".") are
    skipped. Samples are ordered by class, then by path.

    By default only the file names are listed (nothing is decoded): decode
    them later with :func:`read_images`, e.g. after
    :func:`stratified_subsample`, or pass ``load_images=True``.

    Parameters
    ----------
    path : str or path-like
        The root folder.
    categories : iterable of str, default=None
        Only load these classes (sub-folder names). By default all.
        Labels are still positions in the sorted list of loaded classes.
    extensions : iterable of str, default=IMG_EXTENSIONS
        File extensions to accept, e.g. ``(".png", ".jpg")``.
    load_images : bool, default=False
        Also decode every image into ``images`` (see :func:`read_images`).
    size : int or (height, width), default=None
        With ``load_images``, resize every image to this size. If None the
        images must all have the same size.
    mode : {"RGB", "L", "RGBA"}, default="RGB"
        With ``load_images``, the PIL mode images are converted to.
    return_X_y : bool, default=False
        If True, return ``(X, target)`` where ``X`` is ``images`` if
        ``load_images`` else ``filenames``.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, with the following attributes.

        filenames : ndarray of shape (n_samples,), dtype object
            Paths of the image files (str).
        target : ndarray of shape (n_samples,), dtype int64
            Class labels.
        target_names : ndarray of shape (n_classes,)
            Class names (sub-folder names), in label order.
        images : ndarray of dtype uint8
            Only with ``load_images``: shape (n_samples, height, width, 3)
            for RGB, (n_samples, height, width) for L.
        DESCR : str
            Description of the data set.

    (X, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a folder, has no class sub-folders, or a class
        sub-folder (or requested category) holds no image.
    ValueError
        If ``categories`` or ``extensions`` is empty; with ``load_images``,
        if an image cannot be decoded or sizes differ.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from skh2t.datasets import load_image_folder
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = pathlib.Path(tmp.name)
    >>> for name, color in [("red", (255, 0, 0)), ("blue", (0, 0, 255))]:
    ...     (root / name).mkdir()
    ...     for i in range(3):
    ...         Image.new("RGB", (8, 8), color).save(root / name / f"{i}.png")
    >>> bunch = load_image_folder(root)
    >>> bunch.target_names.tolist(), bunch.target.tolist()
    (['blue', 'red'], [0, 0, 0, 1, 1, 1])
    >>> X, y = load_image_folder(root, load_images=True, size=4, return_X_y=True)
    >>> X.shape, X.dtype
    ((6, 4, 4, 3), dtype('uint8'))
    >>> tmp.cleanup()
    """
    root = os.fspath(path)
    classes = _find_classes(root, categories)
    suffixes = _normalize_extensions(extensions)
    per_class = [_list_images(os.path.join(root, name), suffixes) for name in classes]
    _check_not_empty(root, classes, per_class, suffixes)
    filenames = np.array([f for files in per_class for f in files], dtype=object)
    target = np.repeat(np.arange(len(classes), dtype=np.int64), [len(f) for f in per_class])
    bunch = Bunch(
        filenames=filenames,
        target=target,
        target_names=np.array(classes),
        DESCR=_DESCR.format(root=root, n_samples=len(target), n_classes=len(classes)),
    )
    if load_images:
        bunch.images = read_images(filenames, size=size, mode=mode)
    if return_X_y:
        return (bunch.images if load_images else filenames), target
    return bunch


def _find_classes(root: str, categories: Iterable[str] | None) -> list[str]:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Image folder {root!r} does not exist or is not a folder.")
    with os.scandir(root) as entries:
        found = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not found:
        raise FileNotFoundError(
            f"No class sub-folders in {root!r}: expected one sub-folder of images per "
            "class, e.g. root/cat/001.png, root/dog/002.png."
        )
    if categories is None:
        return found
    wanted = sorted(set(categories))
    if not wanted:
        raise ValueError("categories must not be empty; pass None for all classes.")
    missing = [name for name in wanted if name not in found]
    if missing:
        raise FileNotFoundError(f"Categories {missing} not found in {root!r}; available: {found}.")
    return wanted


def _normalize_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = [extensions]
    suffixes = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if not suffixes:
        raise ValueError("extensions must not be empty.")
    return suffixes


def _list_images(folder: str, suffixes: tuple[str, ...]) -> list[str]:
    files, seen = [], set()
    for current, dirs, names in os.walk(folder, followlinks=True):
        seen.add(os.path.realpath(current))
        # Skip hidden folders, and folders already visited (symbolic link loops).
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".") and os.path.realpath(os.path.join(current, d)) not in seen
        ]
        files += [
            os.path.join(current, n)
            for n in names
            if not n.startswith(".") and n.lower().endswith(suffixes)
        ]
    return sorted(files)


def _check_not_empty(
    root: str, classes: list[str], per_class: list[list[str]], suffixes: tuple[str, ...]
) -> None:
    empty = [name for name, files in zip(classes, per_class, strict=True) if not files]
    if empty:
        raise FileNotFoundError(
            f"No image files (extensions {', '.join(suffixes)}) in the class "
            f"sub-folder(s) {empty} of {root!r}. Remove them, pass categories=..., "
            "or extensions=... ."
        )
