"""Safe reader for the IDX file format (MNIST, Fashion-MNIST), optionally gzipped."""

import gzip
import os
import zlib
from typing import BinaryIO

import numpy as np

# Third byte of the magic number -> big-endian element type.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_NDIM = 16


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian array.

    The header is validated (magic number, element type, number of
    dimensions) and the payload must hold exactly the announced number of
    bytes. Any problem raises a ``ValueError`` that names the file.

    Parameters
    ----------
    path : str or path-like
        An ``*-idx?-ubyte`` file, compressed with gzip or not.

    Returns
    -------
    array : ndarray
        Writable array of the shape and type given by the header.
    """
    path = os.fspath(path)
    try:
        with _open(path) as handle:
            return _parse(handle)
    except (EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise ValueError(f"Cannot read IDX file {path!r}: corrupted or truncated ({exc}).") from exc
    except _IdxError as exc:
        raise ValueError(f"Invalid IDX file {path!r}: {exc}.") from None


class _IdxError(Exception):
    """Internal: a format problem, reported with the file name by ``read_idx``."""


def _open(path: str) -> BinaryIO:
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def _parse(handle: BinaryIO) -> np.ndarray:
    dtype, ndim = _read_magic(handle)
    shape = _read_exact(handle, 4 * ndim, "dimensions")
    shape = tuple(int(d) for d in np.frombuffer(shape, dtype=">u4"))
    try:
        array = np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError):
        raise _IdxError(f"header announces an implausible shape {shape}") from None
    _fill(handle, array)
    if handle.read(1):
        raise _IdxError(f"unexpected data after the {array.nbytes} bytes announced by the header")
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_magic(handle: BinaryIO) -> tuple[np.dtype, int]:
    magic = _read_exact(handle, 4, "magic number")
    if magic[:2] != b"\x00\x00" or magic[2] not in _IDX_DTYPES or not 1 <= magic[3] <= _MAX_NDIM:
        raise _IdxError(f"bad magic number 0x{magic.hex()} (not an IDX file)")
    return _IDX_DTYPES[magic[2]], magic[3]


def _read_exact(handle: BinaryIO, n_bytes: int, what: str) -> bytes:
    data = handle.read(n_bytes)
    if len(data) != n_bytes:
        raise _IdxError(f"truncated while reading the {what}")
    return data


def _fill(handle: BinaryIO, array: np.ndarray) -> None:
    view = memoryview(array.reshape(-1).view(np.uint8))
    filled = 0
    while filled < len(view):
        n_read = handle.readinto(view[filled:])
        if not n_read:
            raise _IdxError(
                f"truncated: header announces {len(view)} bytes of data, found {filled}"
            )
        filled += n_read
