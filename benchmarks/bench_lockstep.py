"""Would solving the five folds in lock-step pay? A cost model of one FISTA iteration.

Issue 23 asked whether Head2Toe's folds should be solved together: one pass
over the features for every fold's residuals, and the folds' FISTA
iterations batched so that each numpy call serves all folds. This script
times the numpy work of one FISTA iteration (the gradient, the KKT test, the
proximal step, the new logits and loss, the momentum step: the operations of
``skh2t/linear_model/_solver/fista.py``) on arrays of the shapes of a
Head2Toe path (``skh2t run``'s setting: 800 training rows of 1000, 10
classes, working sets of 150 to 500 features), for one fold and for five
folds stacked (all 1000 rows with zero-weight validation rows, the union of
the working sets, taken as 1.3 times one fold's, and the coefficients side by
side); and the full-gradient product ``X.T @ R`` over 50,664 float32 columns
for one fold's 800 rows against one product for five folds' residuals over
the 1000 rows. Random data: the costs depend on the shapes, not the values.
BLAS on one thread, as in the solvers.

Run: ``python benchmarks/bench_lockstep.py`` (about 30 seconds).
"""

from __future__ import annotations

import time

import numpy as np
from threadpoolctl import threadpool_limits

N_ROWS, N_TRAIN, N_CLASSES, N_FOLDS = 1000, 800, 10, 5
UNION = 1.3  # the union of five folds' working sets, relative to one fold's


def _loss_and_gradient(logits, one_hot, weight):
    top = logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits - top)
    sums = exp.sum(axis=-1, keepdims=True)
    value = (weight * (np.log(sums[..., 0]) + top[..., 0] - (logits * one_hot).sum(-1))).sum(0)
    gradient = exp / sums
    gradient -= one_hot
    gradient *= weight[..., None]
    return value, gradient


def _fista_iteration(rows, columns, coef, one_hot, weight, alpha=0.01, step=0.1):
    logits = (coef.T @ columns).T
    _, gradient = _loss_and_gradient(
        logits.reshape(logits.shape[0], -1, N_CLASSES), one_hot, weight
    )
    grad_coef = (gradient.reshape(gradient.shape[0], -1).T @ rows).T
    norms = np.sqrt(np.einsum("ij,ij->i", grad_coef, grad_coef))
    bool(np.all(np.maximum(norms - alpha, 0.0) <= 1e-3))  # the KKT test
    moved = coef - step * grad_coef
    moved_norms = np.sqrt(np.einsum("ij,ij->i", moved, moved))
    shrink = np.where(moved_norms > alpha, 1.0 - alpha / np.maximum(moved_norms, 1e-300), 0.0)
    new = moved * shrink[:, None]
    new_logits = (new.T @ columns).T
    _loss_and_gradient(new_logits.reshape(new_logits.shape[0], -1, N_CLASSES), one_hot, weight)
    return new + 0.5 * (new - coef), new_logits + 0.5 * (new_logits - logits)


def _milliseconds(function, repeats):
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1e3


def _problem(rng, n_rows, n_features, n_folds):
    X = rng.standard_normal((n_rows, n_features))
    labels = np.eye(N_CLASSES)[rng.integers(0, N_CLASSES, n_rows)]
    weight = np.full((n_rows, n_folds), 1.0 / N_TRAIN)
    if n_folds > 1:
        for fold in range(n_folds):  # each fold's validation rows weigh nothing
            weight[fold * (n_rows // n_folds) : (fold + 1) * (n_rows // n_folds), fold] = 0.0
    coef = rng.standard_normal((n_features, n_folds * N_CLASSES)) * 0.01
    one_hot = np.repeat(labels[:, None, :], n_folds, axis=1)
    return X, np.ascontiguousarray(X.T), coef, one_hot, weight


def main() -> None:
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        for working_set in (150, 300, 500):
            one = _problem(rng, N_TRAIN, working_set, 1)
            five = _problem(rng, N_ROWS, int(UNION * working_set), N_FOLDS)
            single = _milliseconds(lambda one=one: _fista_iteration(*one), 300)
            stacked = _milliseconds(lambda five=five: _fista_iteration(*five), 300)
            print(
                f"FISTA iteration, working set {working_set}: one fold {single:.3f} ms; five "
                f"folds in lock-step {stacked:.3f} ms = {stacked / N_FOLDS:.3f} ms per fold "
                f"(lock-step / separate: {stacked / (N_FOLDS * single):.2f}x)"
            )
        X = rng.standard_normal((N_ROWS, 50_664), dtype=np.float32)
        train = np.ascontiguousarray(X[:N_TRAIN])
        residual = rng.standard_normal((N_TRAIN, N_CLASSES), dtype=np.float32).T.copy()
        residuals = rng.standard_normal((N_ROWS, N_FOLDS * N_CLASSES), dtype=np.float32).T.copy()
        single = _milliseconds(lambda: residual @ train, 10)
        stacked = _milliseconds(lambda: residuals @ X, 10)
        print(
            f"full gradient X.T @ R, 50,664 float32 columns: one fold {single:.1f} ms; five "
            f"folds in one product {stacked:.1f} ms (one / five separate: "
            f"{stacked / (N_FOLDS * single):.2f}x)"
        )


if __name__ == "__main__":
    main()
