"""BLAS threads of the linear-model work: no pool fights another, or other programs.

NumPy and SciPy wheels each bundle their own OpenBLAS, each with its own pool
of (busy-waiting) threads. SciPy's L-BFGS-B, used by scikit-learn's
``LogisticRegression`` and by the refit of ``GroupLassoClassifier``, calls
SciPy's BLAS on small vectors thousands of times; with both pools spinning on
the same cores (measured on 2 CPU cores) these fits ran 10-30 times slower, and
NumPy's products around them slowed down too. Every BLAS library other than
NumPy's is therefore limited to one thread.

The group-lasso solver alternates many medium-sized NumPy products with small
steps; when other programs also use the cores, a multi-threaded BLAS waits for
its slowest thread at every product. Measured on 2 cores, one Head2Toe
cross-validation fold took 6-18 s with 2 threads on an idle-to-busy machine and
40 s next to one busy process, against 8 s with 1 thread in all cases. So the
command line runs NumPy's BLAS with ``--blas-threads`` threads, 1 by default;
the backbone (PyTorch) keeps its own threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits


def _numpy_blas_paths(controller: ThreadpoolController) -> set[str]:
    """File paths of the BLAS libraries NumPy itself loaded (inside its package folder)."""
    numpy_dir = os.path.dirname(np.__file__)  # also the prefix of its ``numpy.libs`` folder
    return {
        lib.filepath
        for lib in controller.select(user_api="blas").lib_controllers
        if lib.filepath.startswith(numpy_dir)
    }


@contextlib.contextmanager
def single_threaded_foreign_blas() -> Iterator[list[str]]:
    """Limit every BLAS library but NumPy's own to one thread inside the block.

    When NumPy's BLAS cannot be told apart (e.g. NumPy and SciPy share the
    system BLAS), nothing is changed.

    Yields
    ------
    list of str
        The file paths of the libraries that were limited.
    """
    controller = ThreadpoolController()
    numpy_paths = _numpy_blas_paths(controller)
    others = [
        lib.filepath
        for lib in controller.select(user_api="blas").lib_controllers
        if lib.filepath not in numpy_paths
    ]
    if not numpy_paths or not others:
        yield []
        return
    with controller.select(filepath=others).limit(limits=1):
        yield others


@contextlib.contextmanager
def blas_threads(n_threads: int) -> Iterator[None]:
    """NumPy's BLAS with ``n_threads`` threads (``0``: unchanged), other BLAS libraries with one.

    Parameters
    ----------
    n_threads : int
        Threads of NumPy's BLAS inside the block; ``0`` leaves the library default.
    """
    with single_threaded_foreign_blas():
        if n_threads <= 0:
            yield
            return
        with threadpool_limits(limits=n_threads, user_api="blas"):
            yield
