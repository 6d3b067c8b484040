"""The smooth part of the objective: weighted mean softmax cross-entropy."""

from __future__ import annotations

import numpy as np


class MultinomialLogistic:
    """Mean (sample-weighted) softmax cross-entropy as a function of the logits.

    ``value(Z) = sum_i s_i * (logsumexp(Z_i) - Z_i[y_i])`` with ``s_i`` the sample
    weights divided by their sum, so that an integer weight is the same as
    repeating the row. Everything is computed in float64.

    Parameters
    ----------
    y_encoded : ndarray of shape (n_samples,)
        Class indices in ``[0, n_classes)``.
    n_classes : int
        Number of classes (columns of the logits).
    sample_weight : ndarray of shape (n_samples,)
        Non-negative weights with a positive sum.
    """

    def __init__(self, y_encoded: np.ndarray, n_classes: int, sample_weight: np.ndarray):
        self.y = np.asarray(y_encoded, dtype=np.intp)
        self.n_classes = int(n_classes)
        weight = np.asarray(sample_weight, dtype=np.float64)
        self.weight = weight / weight.sum()
        self.one_hot = np.zeros((self.y.shape[0], self.n_classes))
        self._rows = np.arange(self.y.shape[0])
        self.one_hot[self._rows, self.y] = 1.0

    def value(self, logits: np.ndarray) -> float:
        top = logits.max(axis=1)
        sums = np.exp(logits - top[:, None]).sum(axis=1)
        return self._value(logits, top, sums)

    def value_and_logit_gradient(self, logits: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss and its gradient with respect to the logits, shape (n_samples, n_classes)."""
        top = logits.max(axis=1)
        gradient = np.exp(logits - top[:, None])
        sums = gradient.sum(axis=1)
        value = self._value(logits, top, sums)
        gradient /= sums[:, None]
        gradient -= self.one_hot
        gradient *= self.weight[:, None]
        return value, gradient

    def _value(self, logits: np.ndarray, top: np.ndarray, sums: np.ndarray) -> float:
        # log-sum-exp shifted by the row maximum, minus the true class's logit; the solvers
        # evaluate it thousands of times on small arrays, where scipy's log_softmax costs
        # twice as much.
        return float(self.weight @ (np.log(sums) + top - logits[self._rows, self.y]))

    def optimal_intercept_at_zero(self) -> np.ndarray:
        """Intercept minimising the loss when all coefficients are zero: log class priors."""
        priors = self.weight @ self.one_hot
        with np.errstate(divide="ignore"):
            log_priors = np.log(priors)
        # A class with zero total weight has prior 0; keep it finite but very unlikely.
        return np.where(np.isfinite(log_priors), log_priors, np.log(np.finfo(float).tiny))

    def curvature_bound(self) -> float:
        """Upper bound of the Hessian of one example's loss w.r.t. its logits (spectral norm)."""
        return 0.5
