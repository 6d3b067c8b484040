"""Progress bars and progress messages on stderr, silenced by ``--quiet``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from skh2t.progress import progress_bar


class Progress:
    """Progress output of one command.

    Parameters
    ----------
    enabled : bool
        Show bars and messages; ``False`` for ``--quiet``.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def message(self, text: str) -> None:
        """Print a progress message to stderr."""
        if self.enabled:
            tqdm.write(text, file=sys.stderr)

    def bar(self, total: int, desc: str, unit: str = "fit") -> tqdm:
        """A progress bar on stderr (disabled when quiet)."""
        return progress_bar(total=total, desc=desc, unit=unit, disable=not self.enabled, leave=True)

    @contextmanager
    def timed(self, text: str) -> Iterator[dict[str, float]]:
        """Time a block; report ``text ... done in Ns`` when it ends.

        Yields a dict whose ``"seconds"`` is set when the block ends.
        """
        timing = {"seconds": 0.0}
        start = time.perf_counter()
        yield timing
        timing["seconds"] = time.perf_counter() - start
        self.message(f"{text}: {timing['seconds']:.1f}s")
