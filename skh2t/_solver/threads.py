"""One BLAS thread for the solvers.

The solvers' products are thin (as many columns as classes) and memory-bound,
and there are hundreds of them per fit. A second BLAS thread makes them a
little faster on an idle machine but several times slower as soon as another
process uses a core, because every product waits for its descheduled half;
and SciPy's own OpenBLAS pool (L-BFGS-B) fights NumPy's (the figures are in
docs/benchmarks.rst).
Like skglm, celer or glmnet, the solvers therefore run single-threaded, and
parallelism goes to independent fits (e.g. folds with ``n_jobs``).
"""

from __future__ import annotations

import functools

from threadpoolctl import ThreadpoolController


@functools.cache
def _controller() -> ThreadpoolController:
    # Inspecting the loaded libraries costs about 1 ms: once per process, not per fit.
    # NumPy's and SciPy's BLAS are both loaded by the time skh2t's solvers run.
    return ThreadpoolController()


def single_blas_thread():
    """Limit every BLAS library to one thread until the returned context manager exits.

    Use it as ``with single_blas_thread(): ...``: the limit applies when it is called.
    """
    return _controller().limit(limits=1, user_api="blas")
