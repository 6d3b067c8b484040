"""Expected command-line errors: reported in one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from skh2t.features import (
    CheckpointError,
    ComputeBudgetError,
    ImageReadError,
    WeightsChangedError,
    WeightsNotFoundError,
)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROG = "skh2t"

# Errors that mean "the inputs are wrong", wherever they are raised: a missing
# file or data set, backbone weights that cannot be found offline, a checkpoint
# that is not one or does not fit, a model's weights that changed since its fit, an
# image file that cannot be read, a compute budget that no tap fits in.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    WeightsNotFoundError,
    CheckpointError,
    WeightsChangedError,
    ImageReadError,
    ComputeBudgetError,
)


class UsageError(Exception):
    """A mistake in the command line or its inputs (unknown name, bad value, missing path)."""


def one_line(error: BaseException) -> str:
    """The message of ``error`` on a single line.

    Parameters
    ----------
    error : BaseException
        Any exception.

    Returns
    -------
    str
        Its lines joined by spaces, surrounding blanks removed.

    Examples
    --------
    >>> one_line(ValueError("first line\\n  second line"))
    'first line second line'
    """
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def report(error: BaseException) -> int:
    """Print ``skh2t: error: <message>`` to stderr and return the usage exit code.

    Parameters
    ----------
    error : BaseException
        The error to report.

    Returns
    -------
    int
        :data:`EXIT_USAGE` (2), as argparse uses for its own errors.
    """
    print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
    return EXIT_USAGE


@contextlib.contextmanager
def usage_errors(*types: type[Exception], context: str = "") -> Iterator[None]:
    """Turn the given exception types raised inside the block into :class:`UsageError`.

    Parameters
    ----------
    *types : exception classes
        The errors that mean a bad input here (e.g. the ``ValueError`` of an
        unknown backbone name).
    context : str, default=""
        A prefix for the message, e.g. ``"--backbone"``.

    Examples
    --------
    >>> with usage_errors(ValueError, context="--n-train"):
    ...     int("many")
    Traceback (most recent call last):
    ...
    skh2t.cli.errors.UsageError: --n-train: invalid literal for int() with base 10: 'many'
    """
    try:
        yield
    except types as error:
        message = one_line(error)
        raise UsageError(f"{context}: {message}" if context else message) from error
