"""Progress bars that read well in a terminal, a notebook and a log file.

Every progress bar of skh2t (``verbose`` of the estimators, the command
line) comes from :func:`progress_bar`: tqdm's, redrawn in place in a
terminal or a notebook; where stderr is neither (a log file, a pipe, CI), one
plain line per update, at most every ``LOG_INTERVAL`` seconds, instead of
carriage-return frames that pile up in the file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm

#: Seconds between two lines of a progress bar written to a log.
LOG_INTERVAL = 30.0


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A ``tqdm`` progress bar on stderr, as plain lines when stderr is not interactive.

    Parameters
    ----------
    iterable : iterable, default=None
        What to iterate over, as for ``tqdm``.
    **kwargs
        ``tqdm``'s options (``total``, ``desc``, ``unit``, ``disable``, ...).
        Passing ``file`` keeps tqdm's own behaviour.

    Returns
    -------
    tqdm.tqdm

    Examples
    --------
    >>> import contextlib, io
    >>> log = io.StringIO()  # not a terminal
    >>> with contextlib.redirect_stderr(log):
    ...     for _ in progress_bar(range(3), desc="work", mininterval=0):
    ...         pass
    >>> "\\r" in log.getvalue(), log.getvalue().splitlines()[-1].startswith("work: 100%")
    (False, True)
    """
    if "file" not in kwargs and not _interactive(sys.stderr):
        kwargs["file"] = _Lines(sys.stderr)
        kwargs.setdefault("mininterval", LOG_INTERVAL)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("ncols", 100)
    return tqdm(iterable, **kwargs)


def _interactive(stream: TextIO) -> bool:
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _Lines:
    """A stream that turns tqdm's carriage-return redraws into whole lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
