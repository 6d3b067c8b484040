"""BLAS threads: one for the solvers, none fighting another, few next to other programs.

NumPy and SciPy wheels each bundle their own OpenBLAS, each with its own pool
of (busy-waiting) threads. SciPy's L-BFGS-B, used by scikit-learn's
``LogisticRegression`` and by the refit of ``GroupLassoClassifier``, calls
SciPy's BLAS on small vectors thousands of times; with both pools spinning on
the same cores these fits run many times slower, and NumPy's products around
them slow down too (docs/benchmarks.rst, "Two BLAS pools on the same cores").

The group-lasso solvers' products are thin (as many columns as classes) and
memory-bound, and there are hundreds of them per fit: a second BLAS thread
makes them a little faster on an idle machine but several times slower as
soon as another process uses a core, because every product waits for its
descheduled half. Like skglm, celer or glmnet, the solvers therefore run
single-threaded (:func:`single_blas_thread`), and parallelism goes to
independent fits (e.g. folds with ``n_jobs``). The command line runs NumPy's
BLAS with ``--blas-threads`` threads, 1 by default, and every other BLAS
library with one (:func:`blas_threads`); the backbone (PyTorch) keeps its own
threads. The measurements are in docs/benchmarks.rst.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "blas_threads",
    "on_one_blas_thread",
    "single_blas_thread",
    "single_threaded_foreign_blas",
]


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


@functools.cache
def _controller() -> ThreadpoolController:
    # Inspecting the loaded libraries costs more than a solver's product (docs/benchmarks.rst):
    # once per process, not per fit.
    # NumPy's and SciPy's BLAS are both loaded by the time skh2t's solvers run.
    return ThreadpoolController()


def single_blas_thread():
    """Limit every BLAS library to one thread until the returned context manager exits.

    Use it as ``with single_blas_thread(): ...``: the limit applies when it is called.
    """
    return _controller().limit(limits=1, user_api="blas")


def on_one_blas_thread(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate ``func`` to run inside :func:`single_blas_thread` at every call.

    For work that may run in this process or in a joblib worker: on one
    thread, BLAS gives the same floats wherever it runs.
    """

    @functools.wraps(func)
    def on_one_thread(*args: P.args, **kwargs: P.kwargs) -> R:
        with single_blas_thread():
            return func(*args, **kwargs)

    return on_one_thread
