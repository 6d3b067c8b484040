"""Features of many images on disk: one ``.npy`` file per pooling, written and read in row chunks.

Head2Toe's features are wide: all 60,000 Fashion-MNIST training images at
64 px under the two default target sizes are 60,000 x 129,984 values, 31 GB
in float32, more than the memory of most machines. :func:`write_features`
extracts them in chunks of images, from one forward pass per image for all
poolings, and appends every chunk to its pooling's file, so memory holds one
chunk at a time. A :class:`FeatureStore` then gives its rows and columns back
in float32, reading the files in row order (the layout of ``.npy``), or as
read-only memmaps for code that streams them.

The files are plain ``.npy`` (``numpy.load(path, mmap_mode="r")`` opens
them). Writing and reading go through the file (``write``, ``readinto``), not
through a memory map: the pages then never count as the process's resident
memory, and the kernel's page cache keeps what fits.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skh2t.progress import progress_bar

if TYPE_CHECKING:
    from skh2t.features.transformer import IntermediateFeatureTransformer

__all__ = ["FEATURE_DTYPES", "FeatureStore", "InsufficientDiskSpaceError", "write_features"]

#: Dtypes a store may hold. Features are L2-normalised per tap, so every value
#: lies in [-1, 1], where float16 keeps about three significant digits.
FEATURE_DTYPES = ("float32", "float16")

# Rows read at a time when a whole file is scanned (for its columns).
_SCAN_BYTES = 64 * 2**20


class InsufficientDiskSpaceError(OSError):
    """The store's directory has less free space than the features need."""


@dataclass(frozen=True)
class StoredMatrix:
    """One ``.npy`` file of the store: its path, shape, dtype and where its data starts."""

    path: Path
    shape: tuple[int, int]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        return self.shape[1] * self.dtype.itemsize


class FeatureStore:
    """Matrices of features on disk, one ``.npy`` file each, read back in float32.

    Made by :func:`write_features` (or :meth:`create` and :meth:`write`).

    Parameters
    ----------
    directory : path-like
        The folder holding the files (the store's own; :meth:`remove` deletes it).
    matrices : sequence of StoredMatrix
        The files, in order.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> store = FeatureStore.create(folder, n_rows=4, widths=[3], dtype="float16")
    >>> store.write(slice(0, 4), [np.arange(12, dtype=np.float32).reshape(4, 3) / 12])
    >>> store.read_rows(0, np.array([1, 3])).round(3)  # float16 on disk: about 3 digits
    array([[0.25 , 0.333, 0.417],
           [0.75 , 0.833, 0.917]], dtype=float32)
    >>> store.read_columns(0, np.array([0])).ravel()
    array([0.  , 0.25, 0.5 , 0.75], dtype=float32)
    >>> store.remove()
    """

    def __init__(self, directory: str | os.PathLike, matrices: Sequence[StoredMatrix]):
        self.directory = Path(directory)
        self.matrices = list(matrices)

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike,
        *,
        n_rows: int,
        widths: Sequence[int],
        dtype: str = "float32",
    ) -> FeatureStore:
        """Empty files for ``n_rows`` rows of each width in ``directory`` (created if needed).

        Raises
        ------
        InsufficientDiskSpaceError
            If the directory's file system has less free space than the
            files need, before anything is written.
        """
        if dtype not in FEATURE_DTYPES:
            raise ValueError(f"dtype must be one of {FEATURE_DTYPES}; got {dtype!r}.")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        check_disk_space(directory, n_rows * sum(widths) * np.dtype(dtype).itemsize)
        matrices = [
            _empty_npy(directory / f"features-{i}.npy", (n_rows, width), np.dtype(dtype))
            for i, width in enumerate(widths)
        ]
        return cls(directory, matrices)

    @property
    def n_rows(self) -> int:
        return self.matrices[0].shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of all the features (the files' headers not counted)."""
        return sum(m.shape[0] * m.row_bytes for m in self.matrices)

    def write(self, rows: slice, features: Sequence[np.ndarray]) -> None:
        """Write consecutive rows ``rows`` of every matrix (one array per matrix, in order)."""
        for matrix, values in zip(self.matrices, features, strict=True):
            data = np.ascontiguousarray(values, dtype=matrix.dtype)
            if data.shape != (rows.stop - rows.start, matrix.shape[1]):
                raise ValueError(f"rows {rows} of {matrix.path.name}: got shape {data.shape}")
            with open(matrix.path, "r+b") as file:
                file.seek(matrix.offset + rows.start * matrix.row_bytes)
                file.write(data.data)

    def read_rows(self, index: int, rows: np.ndarray | slice) -> np.ndarray:
        """Rows ``rows`` (indices or a slice) of matrix ``index``, in float32."""
        matrix = self.matrices[index]
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(matrix.shape[0])
            return _read_run(matrix, start, stop).astype(np.float32, copy=False)
        rows = np.asarray(rows, dtype=np.intp)
        out = np.empty((rows.shape[0], matrix.shape[1]), dtype=np.float32)
        buffer = np.empty(matrix.shape[1], dtype=matrix.dtype)
        with open(matrix.path, "rb") as file:
            for i, row in enumerate(rows):
                file.seek(matrix.offset + int(row) * matrix.row_bytes)
                _read_exactly(file, buffer)
                out[i] = buffer
        return out

    def read_columns(self, index: int, columns: np.ndarray, *, verbose: bool = False) -> np.ndarray:
        """Columns ``columns`` of every row of matrix ``index``, in float32: one pass over the
        file, a block of rows at a time (memory: the result and one block)."""
        matrix = self.matrices[index]
        columns = np.asarray(columns, dtype=np.intp)
        out = np.empty((matrix.shape[0], columns.shape[0]), dtype=np.float32)
        step = max(1, _SCAN_BYTES // matrix.row_bytes)
        with progress_bar(
            total=matrix.shape[0], desc="Reading kept features", unit="img", disable=not verbose
        ) as bar:
            for start in range(0, matrix.shape[0], step):
                stop = min(start + step, matrix.shape[0])
                out[start:stop] = _read_run(matrix, start, stop)[:, columns]
                bar.update(stop - start)
        return out

    def memmap(self, index: int) -> np.memmap:
        """Matrix ``index`` as a read-only numpy memmap."""
        return np.load(self.matrices[index].path, mmap_mode="r")

    def remove(self) -> None:
        """Delete the store's directory and its files."""
        shutil.rmtree(self.directory, ignore_errors=True)


def write_features(
    transformers: Sequence[IntermediateFeatureTransformer],
    X: Any,
    directory: str | os.PathLike,
    *,
    dtype: str = "float32",
    chunk_size: int = 512,
    verbose: bool = False,
) -> FeatureStore:
    """Extract the features of ``X`` for every transformer into a new store in ``directory``.

    One forward pass per image serves all the transformers
    (:func:`~skh2t.features.joint.iter_transform_jointly`), ``chunk_size``
    images at a time; each chunk is appended to its transformer's file in
    ``dtype``. The store lives in a new sub-folder ``skh2t-features-*`` of
    ``directory``; its free space is checked before any image is extracted.

    Parameters
    ----------
    transformers : sequence of IntermediateFeatureTransformer
        Fitted, as for :func:`~skh2t.features.joint.transform_jointly`.
    X : array-like of images or list of paths / PIL images
        As for :meth:`IntermediateFeatureTransformer.transform`.
    directory : path-like
        Where to make the store (created if needed).
    dtype : {"float32", "float16"}, default="float32"
        The dtype on disk; float16 halves the files and the reads.
    chunk_size : int, default=512
        Images extracted at a time (memory: one chunk's features).
    verbose : bool, default=False
        A progress bar, in images.

    Returns
    -------
    FeatureStore
        One matrix per transformer, in order; rows in the images' order.

    Raises
    ------
    InsufficientDiskSpaceError
        Before any extraction, when the files would not fit on the disk.
    """
    from skh2t.features.images import as_images
    from skh2t.features.joint import iter_transform_jointly

    images = as_images(X)
    widths = [t.extraction_.n_features for t in transformers]
    Path(directory).mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="skh2t-features-", dir=directory)
    try:
        store = FeatureStore.create(folder, n_rows=len(images), widths=widths, dtype=dtype)
        chunks = iter_transform_jointly(
            transformers, images, chunk_size=chunk_size, desc="Extracting", verbose=verbose
        )
        for rows, features in chunks:
            store.write(rows, features)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return store


def check_disk_space(directory: str | os.PathLike, n_bytes: int) -> None:
    """Raise :class:`InsufficientDiskSpaceError` if ``directory`` has less than ``n_bytes`` free."""
    free = shutil.disk_usage(directory).free
    if n_bytes > free:
        raise InsufficientDiskSpaceError(
            errno.ENOSPC,
            f"the features need {_gigabytes(n_bytes)} on disk but {directory} has "
            f"{_gigabytes(free)} free; choose a directory on a larger disk, store them in "
            "float16 (half the size), or extract fewer images",
        )


def _gigabytes(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GB"


def _empty_npy(path: Path, shape: tuple[int, int], dtype: np.dtype) -> StoredMatrix:
    """An ``.npy`` file of ``shape`` (its data not written yet: a sparse file)."""
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                   "shape": shape}
        )  # fmt: skip
        offset = file.tell()
        file.truncate(offset + shape[0] * shape[1] * dtype.itemsize)
    return StoredMatrix(path, shape, dtype, offset)


def _read_run(matrix: StoredMatrix, start: int, stop: int) -> np.ndarray:
    """Consecutive rows ``start:stop`` of a stored matrix, in its dtype."""
    out = np.empty((stop - start, matrix.shape[1]), dtype=matrix.dtype)
    with open(matrix.path, "rb") as file:
        file.seek(matrix.offset + start * matrix.row_bytes)
        _read_exactly(file, out)
    return out


def _read_exactly(file, out: np.ndarray) -> None:
    view = memoryview(out).cast("B")
    done = 0
    while done < view.nbytes:
        n = file.readinto(view[done:])
        if not n:
            raise OSError(f"{file.name} ended early: the store is incomplete or was changed")
        done += n
