"""Output files: checked before any work, then written whole or not at all.

:func:`check_output_file` is the one check of an output path, for
:func:`skh2t.export.export_model` and the command line alike;
:func:`written_whole` writes a file through a temporary file next to it, so
that a failure leaves neither a partial file nor a clobbered old one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["check_output_file", "open_new_file", "written_whole"]


def check_output_file(path: str | os.PathLike) -> Path:
    """Raise ``ValueError`` unless a file can be written at ``path``.

    ``path`` must not be a directory, its folder must exist, an existing file
    must be writable, and a file must be creatable in the folder: that is
    tried (a temporary file is created there and removed), since
    ``os.access`` says yes to root even where nothing can be created (say,
    ``/proc``).

    Parameters
    ----------
    path : str or os.PathLike
        The file to write later.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        Naming the problem and the fix.

    Examples
    --------
    >>> import tempfile
    >>> check_output_file(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    ValueError: '...' is a directory; give a file name to write.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory; give a file name to write.")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"The folder {str(folder)!r} does not exist; create it first.")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"Cannot write {str(path)!r}: permission denied.")
    try:
        descriptor, probe = open_new_file(path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(descriptor)
    except OSError as error:
        raise ValueError(f"Cannot write {str(path)!r}: {error.strerror or error}.") from None
    probe.unlink()
    return path


@contextlib.contextmanager
def written_whole(path: str | os.PathLike) -> Iterator[Path]:
    """Write ``path`` through a temporary file next to it.

    Yields a path of the same name in a new temporary folder next to
    ``path`` (writers that pick the format from the suffix, or name things
    inside the file after it, see the real name). When the block ends without
    an error, the file written there replaces ``path``; when it raises,
    nothing is left and ``path`` is as it was.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.

    Yields
    ------
    pathlib.Path
        Where to write the file.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "notes.txt"
    >>> with written_whole(target) as part:
    ...     _ = part.write_text("all of it")
    >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
    ('all of it', ['notes.txt'])
    """
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        part = folder / path.name
        yield part
        os.replace(part, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def open_new_file(directory: str | os.PathLike, *, prefix: str, suffix: str) -> tuple[int, Path]:
    """Create a new, empty file with a fresh name in ``directory``, open for writing.

    Created as ``open()`` creates files (mode ``0o666`` less the umask), not
    private to its owner as :func:`tempfile.mkstemp` makes them, so that what
    is renamed into place from it (a shared cache's entries) stays readable by
    the users the umask lets read it.

    Parameters
    ----------
    directory : str or os.PathLike
        Where to create the file.
    prefix, suffix : str
        Around a random part of the name.

    Returns
    -------
    (int, pathlib.Path)
        The open file descriptor (the caller closes it) and the file's path.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = Path(directory) / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"No free file name in {os.fspath(directory)!r}.")
