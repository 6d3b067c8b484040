"""The linear models of Head2Toe: the group-lasso classifiers, their path and their search.

- :class:`GroupLassoClassifier` and :class:`GroupLassoClassifierCV`: the estimators.
- :func:`group_lasso_path`: the penalised solves along a warm-started alpha
  path and the select-and-refit per keep fraction, as functions of arrays
  (the estimators, their cross-validation and :class:`~skh2t.Head2ToeClassifier`
  all call it).

The solver (``_solver``: datafit, penalty, FISTA in a working-set loop,
L-BFGS) is separate from the estimators, as in skglm.
"""

from skh2t.linear_model._group_lasso import GroupLassoClassifier
from skh2t.linear_model._group_lasso_cv import GroupLassoClassifierCV

__all__ = ["GroupLassoClassifier", "GroupLassoClassifierCV"]
